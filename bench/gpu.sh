#!/usr/bin/env bash
# The issue's GPU targets in one run, for a lent GPU machine where minutes are scarce; with
# --diagnostics, the checks that say why a target is missed, after them.
#
#   bench/gpu.sh OUT_DIR [--device cuda|cpu] [--model vit-b32|tiny] [--frames N] [--seconds S]
#                        [--python PATH] [--diagnostics] [--limit STEP=SECONDS]... [--tar PATH]
#
# The targets (what issue 14's "under 8 minutes" times), most important first: `watch --once` at
# batch 128 and, on the same frames, at batch 256 (watch-once.json, "variants"), the live daemon
# working through a mass drop renamed into the inbox once it runs (backlog), the GPU tests, and
# single-frame latency. --diagnostics adds, in the same watch_once run, batch 256 with 6 lanes,
# batch 128 at a 0.5 ms switch interval and batch 128 once more sampled by py-spy
# (profile-watch-once-b128.txt), then after the targets: CLIP's load alone (load_rss: host memory),
# the same daemon feeding a stand-in for the GPU (what this machine's CPU can feed one:
# pipeline-stand-in.json), the tower and the model stage beside a busy Python thread (op by op,
# traced, and traced at a shorter switch interval: bench/gil_convoy.py) and the inbox events' CPU
# through a mass drop (bench/inbox_events.py). Each figure is written as JSON under OUT_DIR, with GPU
# utilisation sampled by nvidia-smi when there is one, and summary.json: the machine, each step's
# seconds and exit code, and the whole run's seconds; then targets.json and a table (targets.txt):
# each target met, missed or not measured (bench/gpu_targets.py). A step that fails is recorded
# and the rest still run: a GPU minute is not spent twice. summary.json and targets.json are
# rewritten after every step, and a run stopped by SIGTERM or SIGINT (a `timeout`, a loan's end)
# writes both and prints the table before it exits (143, 130): the steps before the stop keep
# their figures and their verdict, the step in flight is recorded as stopped. Each step runs under
# a wall-clock limit of its own (`limits` below; --limit STEP=SECONDS changes one), in a process
# group of its own: at its limit it is ended with all it started (the daemon, its file workers),
# recorded as timed out, and the next step runs. Before the first step, bench/gpu_preflight.py
# checks what the steps import (and the CUDA device, with --device cuda) and records what is
# already on the GPU. --tar PATH writes the whole of OUT_DIR as one .tar.gz after every step and
# at a stop (a lent machine's tool returns only a few files).
#
# Timings: on an H200 (16 cores) on 2026-11-27 everything took about 9 min 40 s, 5 min of it the
# first step (a 7.5 GB copy of the frames before each `watch --once`, since hard links). On a lent
# H100 (16 cores) on 2026-11-28, at 8db99cb, with what are now the diagnostics in it, the steps
# took watch-once 212 s (batch 128, 256 and 256 with 6 lanes; its frames written in ~40 s, now
# ~15), gpu-tests 29, pipeline-stand-in 39, gil-convoy 32, live-mass-drop 57, latency 53, load-rss
# 39, and the run's own 470 s limit stopped inbox-events 9 s in. By those times the targets alone
# take about 5 to 6 minutes; not yet timed on a GPU. `--device cpu --model tiny` runs the same
# steps on any machine in a minute or two (tests/test_bench_gpu_script.py does, with and without
# --diagnostics, so it can't rot).
set -uo pipefail
cd "$(dirname "$0")/.."

usage="usage: bench/gpu.sh OUT_DIR [--device cuda|cpu] [--model vit-b32|tiny] [--frames N] [--seconds S] [--python PATH] [--diagnostics] [--limit STEP=SECONDS]... [--tar PATH]"
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    echo "$usage" >&2
    exit 2
fi
out=$1; shift
device=cuda; model=vit-b32; frames=8192; seconds=60; python=.venv/bin/python; diagnostics=false; tar=""
asked_limits=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --model) model=$2; shift 2 ;;
        --frames) frames=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --diagnostics) diagnostics=true; shift ;;
        --limit) asked_limits+=("$2"); shift 2 ;;
        --tar) tar=$2; shift 2 ;;
        *) echo "bench/gpu.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
# Each step's wall-clock limit, in seconds: about twice what it took on the lent H100 of
# 2026-11-28 (watch-once with the diagnostics' variants 212 s, the others 30 to 60), so that a hung
# step costs its limit and not the rest of the loan.
declare -A limits=([watch-once]=360 [live-mass-drop]=180 [gpu-tests]=120 [latency]=150
                   [load-rss]=120 [pipeline-stand-in]=120 [gil-convoy]=120 [inbox-events]=120)
if [ "$diagnostics" = true ]; then limits[watch-once]=480; fi
for asked in "${asked_limits[@]}"; do
    name=${asked%%=*}; limit=${asked#*=}
    if [ -z "${limits[$name]+set}" ] || ! [[ "$limit" =~ ^[1-9][0-9]*$ ]]; then
        echo "bench/gpu.sh: --limit wants STEP=SECONDS (whole seconds), STEP one of: ${!limits[*]}; got $asked" >&2
        exit 2
    fi
    limits[$name]=$limit
done
if [ "$device" = cpu ]; then precision=fp32; else precision=fp16; fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -n "$tar" ]; then
    # An absolute path, outside OUT_DIR (an archive inside the folder it archives would hold itself).
    tar_folder=$(cd "$(dirname "$tar")" 2> /dev/null && pwd) || {
        echo "bench/gpu.sh: --tar $tar: no folder $(dirname "$tar")" >&2; exit 2; }
    tar=$tar_folder/$(basename "$tar")
    if [[ "$tar/" == "$out/"* ]]; then echo "bench/gpu.sh: --tar $tar is inside $out" >&2; exit 2; fi
fi
if ! command -v "$python" > /dev/null; then
    echo "bench/gpu.sh: no Python at $python (--python PATH)" >&2
    exit 2
fi
# Before any step: what every step imports and, with --device cuda, a CUDA device (one line and
# exit 2 when not, rather than every step failing at its first import in turn); the machine's
# name, asked now so that a run stopped part-way still names it; and what is already on the GPU
# (a warning, not a refusal: it makes every figure low).
preflight=$("$python" bench/gpu_preflight.py --device "$device") || exit 2
{ read -r machine; read -r gpu_processes; } <<< "$preflight"
steps=()
# Figures of an earlier run into the same folder are not this run's (each step removes its own).
rm -f "$out/targets.json" "$out/targets.txt" "$out/summary.json" "$out/gpu-utilisation.csv" \
    "$out/profile-watch-once-b128.txt"
# One random-weight checkpoint of each model for every step (bench/harness.py build_model), not
# one a step: a ViT-B/32 takes ~8 s to build and save, and three steps use one (five with
# --diagnostics).
CCTV_BENCH_CHECKPOINTS=$(mktemp -d)
export CCTV_BENCH_CHECKPOINTS
sampler=""
trap 'rm -rf "$CCTV_BENCH_CHECKPOINTS"; if [ -n "$sampler" ]; then kill "$sampler" 2> /dev/null; fi' EXIT
targets_seconds=null; finished=false; in_flight=""; in_flight_started=0; step_group=""

if [ "$device" != cpu ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 \
        > "$out/gpu-utilisation.csv" 2> /dev/null &
    sampler=$!
fi

write_summary() {  # summary.json and the verdict (targets.json, targets.txt) from the steps so far
    {
        printf '{"device": "%s", "model": "%s", "frames": %s, "machine": %s, "cpus": %s, ' \
            "$device" "$model" "$frames" "$machine" "$(nproc)"
        # What nvidia-smi saw on the GPU before the first step (null without nvidia-smi).
        printf '"gpu_processes_at_start": %s, ' "$gpu_processes"
        # The targets' seconds (the steps before the diagnostics, the set-up before them included;
        # with --diagnostics its variants ride in the first step, so that time is not the targets')
        # and the whole run's; `finished` false while it runs, or when it was stopped part-way.
        printf '"diagnostics": %s, "targets_seconds": %s, "seconds": %s, "finished": %s, "steps": [' \
            "$diagnostics" "$targets_seconds" "$SECONDS" "$finished"
        (IFS=,; printf '%s' "${steps[*]}")
        printf ']}\n'
    } > "$out/summary.json.part" && mv "$out/summary.json.part" "$out/summary.json"
    "$python" bench/gpu_targets.py "$out" > "$out/targets.txt" 2>&1
    local judged=$?
    archive
    return "$judged"
}

archive() {  # --tar: the whole folder as one .tar.gz (a lent machine's tool returns a few files)
    if [ -z "$tar" ]; then return 0; fi
    # Exit 1 is a file that changed while read (nvidia-smi's samples): the archive is still whole.
    tar -czf "$tar.part" --warning=no-file-changed -C "$(dirname "$out")" "$(basename "$out")"
    if [ $? -le 1 ]; then mv -f "$tar.part" "$tar"; else echo "bench/gpu.sh: could not write $tar" >&2; fi
}

alive_in_group() {  # alive_in_group PGID: whether a process of that group still runs (zombies aside)
    local stat line fields
    for stat in /proc/[0-9]*/stat; do
        read -r line < "$stat" 2> /dev/null || continue
        read -r -a fields <<< "${line##*) }"  # state, ppid, pgrp, ...: after the name, which may hold spaces
        if [ "${fields[2]}" = "$1" ] && [ "${fields[0]}" != Z ]; then return 0; fi
    done
    return 1
}

end_group() {  # end_group PGID: what a step left running (a daemon, its file workers: they would
    # hold the GPU through the next steps) gets SIGTERM, then SIGKILL 5 s on; true if any was left
    alive_in_group "$1" || return 1
    kill -TERM -- "-$1" 2> /dev/null
    local _
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        sleep 0.5
        alive_in_group "$1" || return 0
    done
    kill -KILL -- "-$1" 2> /dev/null
    return 0
}

stopped() {  # stopped EXIT_CODE: on SIGTERM or SIGINT (a `timeout`, a loan's end, ^C), what ran is
    local code=$?  # kept, with the verdict; the step in flight is recorded as stopped
    trap '' TERM INT  # a second signal must not cut the summary short
    if [ -n "$step_group" ]; then
        # The step runs in a group of its own (see step): the stop is passed on to it, and the
        # summary waits for it to end (timeout's --kill-after bounds that).
        kill -TERM "$step_group" 2> /dev/null
        wait "$step_group"; code=$?
        end_group "$step_group"
    fi
    if [ -n "$in_flight" ]; then
        steps+=("{\"step\": \"$in_flight\", \"seconds\": $((SECONDS - in_flight_started)), \"exit_code\": $code, \"stopped\": true}")
    fi
    echo "bench/gpu.sh: stopped${in_flight:+ during $in_flight}; the steps before it are kept" >&2
    write_summary
    cat "$out/targets.txt"
    exit "$1"
}
trap 'stopped 143' TERM
trap 'stopped 130' INT

step() {  # step NAME COMMAND...: run it within its limit, keep its output and how it ended
    local name=$1; shift
    local limit=${limits[$name]}
    in_flight=$name; in_flight_started=$SECONDS
    echo "== $name (limit $limit s): $*"
    rm -f "$out/$name.json"  # an OUT_DIR used before: a step that fails must leave no figures
    # timeout puts the step in a process group of its own, led by itself: at the limit SIGTERM goes
    # to the whole group (the daemon and its file workers too), SIGKILL 15 s later. In the
    # background, waited for: a stop's trap then runs at once, not when the step ends.
    timeout --kill-after=15 "$limit" "$@" > "$out/$name.log" 2>&1 &
    step_group=$!
    wait "$step_group"
    local code=$? took=$((SECONDS - in_flight_started)) left=false timed_out=false
    if end_group "$step_group"; then left=true; fi
    step_group=""
    # 124: timeout's own; 137: its SIGKILL, which it sends its group, itself included.
    if [ "$code" -eq 124 ] || { [ "$code" -eq 137 ] && [ "$took" -ge "$limit" ]; }; then
        timed_out=true
        echo "bench/gpu.sh: $name timed out after $limit s; on to the next step" >&2
    fi
    tail -n 3 "$out/$name.log"
    steps+=("{\"step\": \"$name\", \"seconds\": $took, \"exit_code\": $code, \"limit_seconds\": $limit, \"timed_out\": $timed_out, \"left_running\": $left}")
    in_flight=""
    # After every step, not only at the end: a run killed outright (SIGKILL) keeps the steps before.
    write_summary
}

# The targets, most important first: a GPU lease can end before the last step. One run of
# watch_once for every batch size and number of lanes: it writes the frames, builds the model and
# exports it once. The diagnostics' variants ride in the same run: batch 256 with 6 lanes, batch
# 128 at a 0.5 ms switch interval (batch.gil_switch_interval_ms: with the reads' and the commit's
# waits for the GIL gone, whether the model stage's launches are what is left, a few seconds), and
# batch 128 sampled by py-spy (without py-spy, or where it cannot attach, recorded as skipped).
once_extras=(--variants 256x3)
if [ "$diagnostics" = true ]; then
    once_extras=(--variants 256x3 256x6 --compare-switch-interval 0.5
                 --profile "$out/profile-watch-once-b128.txt")
fi
step watch-once "$python" bench/watch_once.py --device "$device" --precision "$precision" \
    --model "$model" --frames "$frames" --batch-size 128 --repeats 1 \
    --baseline-frames $((frames / 16)) "${once_extras[@]}" --json "$out/watch-once.json"
# The live daemon through a mass drop next, a target; then the GPU tests (about 25 s on an H200),
# before the last target: a run cut short by its lease still says whether the GPU paths are right
# (on 2026-11-27 they came seventh, and the run's time ran out during them).
step live-mass-drop "$python" bench/backlog.py --device "$device" --model "$model" --frames "$frames" \
    --seconds "$seconds" --batch-size 128 --drop-after-start --json "$out/live-mass-drop.json"
step gpu-tests "$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_accelerator_paths.py
step latency "$python" bench/latency.py --device "$device" --precision "$precision" --model "$model" \
    --drops 10 --json "$out/latency.json"
targets_seconds=$SECONDS

if [ "$diagnostics" = true ]; then
    # Host memory of loading CLIP for the GPU, apart from the rest of watch --once's peak: first
    # of the diagnostics, since it says why the memory target is missed.
    step load-rss "$python" bench/load_rss.py --model "$model" --repeats 1 --json "$out/load-rss.json"
    # What this machine's CPU can feed a GPU: the same daemon with a stand-in for the device (the
    # copy 5 ms and the model 6.4 ms per 128 frames, about the H200's bare forward at batch 128,
    # without the GIL), so that the pipeline's own ceiling here is told apart from the real model
    # stage's (bench/daemon_cpu.py --stand-in-gpu; about 40 s).
    stand_in_frames=$(( (frames / 2 + 127) / 128 * 128 ))
    step pipeline-stand-in "$python" bench/daemon_cpu.py --stand-in-gpu 6.4 5 --width 640 --height 480 \
        --frames "$stand_in_frames" --file-processes auto --repeats 1 --json "$out/pipeline-stand-in.json"
    # What the GIL costs the model stage's launches beside Python: op by op, traced, and traced at
    # a 0.5 ms switch interval (about 30 s).
    step gil-convoy "$python" bench/gil_convoy.py --device "$device" --model "$model" --batch 128 \
        --repeats 2 --calls 1 --json "$out/gil-convoy.json"
    # What hearing about a mass drop live costs a frame, on the daemon's GIL (about 10 s). The file
    # handling's CPU and the daemon's own (bench/file_cpu.py, bench/daemon_cpu.py) need no GPU:
    # they are measured on the 2-core machine (README: Benchmark), not with a lent GPU's minutes.
    step inbox-events "$python" bench/inbox_events.py --frames "$frames" --repeats 3 --json "$out/inbox-events.json"
fi

if [ -n "$sampler" ]; then kill "$sampler" 2> /dev/null; wait "$sampler" 2> /dev/null; sampler=""; fi
finished=true
# The verdict last: each target met, missed or not measured (targets.json), read from the above.
write_summary || echo "bench/gpu_targets.py failed; the figures are still there" >&2
cat "$out/targets.txt"
echo "figures in $out${tar:+, and all of them in $tar}"
