"""File work on processes (`batch.file_processes`): frames read by worker processes straight into a
shared arena, their BMP rows copied to the model as stored, moves shared out between the workers.

The real daemon (`watch --once`, in process, and in a subprocess for the signals) with the tiny
CLIP loaded from disk; only the pretrained weights are faked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path, PurePosixPath
from random import Random

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from model.images import PixelBlock, decode_pixels, plain_bmp_block
from model.packed import GATHER_GAP, SPAN_SLACK, PackedBmp, gathered_on, packed_rows, upright
from model.synthetic import bmp_bytes, write_bmp
from tests.helpers import files_under, query, wait_for
from watcher.commands.main import main
from watcher.store.embeddings import unpack_embeddings

REPO = Path(__file__).resolve().parent.parent

FRAMES = {
    # relative path: (width, height, mode); RGB is a plain 24-bit BMP (read into the arena), the
    # others are decoded by Pillow in the worker and travel through its pipe.
    "cam-01/a.bmp": (640, 480, "RGB"),
    "cam-01/b.bmp": (321, 239, "RGB"),  # rows padded to 4 bytes
    "cam-02/c.bmp": (64, 48, "P"),
    "cam-02/d.bmp": (33, 17, "L"),
    "e.bmp": (224, 224, "RGB"),
    **{f"cam-03/many-{index:02d}.bmp": (96, 72, "RGB") for index in range(20)},
}

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _top_down(data: bytes) -> bytes:
    """The same picture as a top-down BMP (negative height, rows stored first to last)."""
    block = plain_bmp_block(data, max_pixels=10**8)
    assert block is not None and block.bottom_up
    rows = np.frombuffer(data, np.uint8, block.nbytes, block.offset).reshape(block.rows, block.row_bytes)
    header = bytearray(data[: block.offset])
    header[22:26] = (-block.rows).to_bytes(4, "little", signed=True)
    return bytes(header) + rows[::-1].tobytes() + data[block.offset + block.nbytes :]


def _drop(inbox: Path) -> None:
    for index, (relative, (width, height, mode)) in enumerate(FRAMES.items()):
        write_bmp(inbox / relative, width=width, height=height, mode=mode, seed=index)
    (inbox / "top-down.bmp").write_bytes(_top_down(bmp_bytes(width=50, height=30, seed=99)))


def _rows(root: Path) -> dict[str, tuple]:
    rows = query(
        root / "data" / "results.sqlite3",
        "SELECT source_path, status, label, probability, sha256, width, height, embedding FROM results",
    )
    return {row[0]: row[1:] for row in rows}


def _rows_of_watch_once(
    make_config: Callable[..., Path], root: Path, *, processes: int, model: dict[str, object] | None = None
) -> dict[str, tuple]:
    root.mkdir()
    config = make_config(
        paths={name: str(root / name) for name in ("inbox", "processed", "failed", "data")},
        batch={"size": 8, "file_processes": processes},
        database={"store_embeddings": True},
        model=model or {},
    )
    _drop(root / "inbox")
    assert main(["watch", "--once", "--config", str(config)]) == 0
    assert files_under(root / "inbox") == []
    return _rows(root)


def _assert_same_rows(processes: dict[str, tuple], threads: dict[str, tuple]) -> None:
    assert sorted(threads) == sorted(processes) == sorted([*FRAMES, "top-down.bmp"])
    for source, (status, label, probability, sha256, width, height, embedding) in processes.items():
        expected = threads[source]
        assert (status, label, sha256, width, height) == (expected[0], expected[1], *expected[3:6]), source
        assert status == "ok"
        assert probability == pytest.approx(expected[2], abs=1e-6), source
        assert np.allclose(unpack_embeddings([embedding]), unpack_embeddings([expected[6]]), atol=1e-6), (
            source
        )


def test_processes_give_the_rows_threads_give(make_config: Callable[..., Path], tmp_path: Path) -> None:
    threads = _rows_of_watch_once(make_config, tmp_path / "p0", processes=0)
    _assert_same_rows(_rows_of_watch_once(make_config, tmp_path / "p2", processes=2), threads)


@pytest.mark.parametrize("copy", ["taken", "device-full", "copy-fails"])
def test_on_a_gpu_a_batch_gives_its_arena_back_before_the_model_runs(
    make_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    copy: str,
) -> None:
    """With the model on a GPU a batch's frames are copied off its arena onto the device, and the
    arena goes back for the next batch's reading before the model runs: fewer arenas than lanes.
    The device here is the CPU (the copy is a real one); what is checked is the order, and that
    the rows are the thread path's. When the device has no room (`device-full`), the frames stay
    in the arena until the model has them, as on a CPU, with one warning; so they do when the copy
    fails otherwise (`copy-fails`), the model's pass then failing only the frames it cannot take."""
    import torch

    from model.clip_features import ClipFeatureExtractor
    from watcher.pipeline.arenas import Arena, ArenaPool
    from watcher.pipeline.processing import BatchProcessor

    threads = _rows_of_watch_once(make_config, tmp_path / "p0", processes=0)
    arenas: list[Arena] = []
    made = Arena.__init__

    def recorded(self: Arena, *args: object, **kwargs: object) -> None:
        made(self, *args, **kwargs)  # type: ignore[arg-type]
        arenas.append(self)

    steps: list[tuple[int, str]] = []  # (thread, "leased" | "returned" | "model"), in order
    lease = ArenaPool.lease

    @contextmanager
    def logged_lease(self: ArenaPool) -> Iterator[Arena]:
        with lease(self) as arena:
            steps.append((threading.get_ident(), "leased"))
            try:
                yield arena
            finally:
                steps.append((threading.get_ident(), "returned"))

    in_an_arena: list[bool] = []  # for each frame the model was given: did it lie in an arena?
    features = ClipFeatureExtractor.image_features

    def watched(self: ClipFeatureExtractor, images: list) -> np.ndarray:
        steps.append((threading.get_ident(), "model"))
        spans = [(arena.tensor.data_ptr(), arena.tensor.data_ptr() + arena.size) for arena in arenas]
        for image in images:
            if isinstance(image, PackedBmp):
                in_an_arena.append(any(start <= image.buffer.data_ptr() < end for start, end in spans))
        return features(self, images)

    def no_room(self: ClipFeatureExtractor, pictures: list) -> list:
        if copy == "copy-fails":
            raise ValueError("no usable stretch of frames (simulated)\nmore lines")
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)\nmore lines")

    device_full = copy != "taken"

    monkeypatch.setattr(Arena, "__init__", recorded)
    monkeypatch.setattr(ArenaPool, "lease", logged_lease)
    monkeypatch.setattr(ClipFeatureExtractor, "image_features", watched)
    monkeypatch.setattr(BatchProcessor, "model_on_accelerator", property(lambda self: True))
    if device_full:
        monkeypatch.setattr(ClipFeatureExtractor, "taken_in", no_room)

    # Two CPU threads, two lanes on any machine: one arena for them, as two serve three on a GPU.
    two_lanes = {"cpu_threads": 2}
    _assert_same_rows(
        _rows_of_watch_once(make_config, tmp_path / "p2", processes=2, model=two_lanes), threads
    )
    assert len(arenas) == 1
    assert len(in_an_arena) == sum(mode == "RGB" for *_, mode in FRAMES.values()) + 1  # + top-down
    assert not any(in_an_arena) if not device_full else all(in_an_arena)
    before_the_model = {  # each batch's last step with its arena before its model pass
        _last_arena_step(steps[:at], thread) for at, (thread, step) in enumerate(steps) if step == "model"
    }
    assert before_the_model == ({"leased"} if device_full else {"returned"})
    full = "frames stay in their arena until the model has them: CUDA out of memory (simulated)\n"
    failed = "copying frames to the device failed (no usable stretch of frames (simulated)): "
    err = capfd.readouterr().err
    # Full: said once, not every batch; failed: every batch (26 frames, batches of 8).
    assert (err.count(full), err.count(failed)) == {
        "taken": (0, 0),
        "device-full": (1, 0),
        "copy-fails": (0, 4),
    }[copy]


def test_the_claims_are_on_disk_before_their_rows_with_file_processes(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers read; the daemon flushes the batch's claims (the area and the camera folders
    the frames left) once, beside the model, and always before the batch's rows are written."""
    from watcher.pipeline import file_work
    from watcher.pipeline.recording import Recorder

    synced: set[Path] = set()
    unsynced_at_rows: list[set[Path]] = []  # for each batch: its claims' folders not flushed yet
    fsync_dirs, record = file_work.fsync_dirs, Recorder.record

    def flushing(paths: Iterable[Path], **options: bool) -> None:
        paths = list(paths)
        fsync_dirs(paths, **options)
        synced.update(paths)

    def recording(self: Recorder, classified: list) -> list:
        unsynced_at_rows.append({folder for item in classified for folder in item.frame.claim_dirs} - synced)
        return record(self, classified)

    monkeypatch.setattr(file_work, "fsync_dirs", flushing)
    monkeypatch.setattr(Recorder, "record", recording)
    _rows_of_watch_once(make_config, tmp_path / "p2", processes=2)
    assert len(unsynced_at_rows) == 4 and unsynced_at_rows == [set()] * 4  # 26 frames, batches of 8
    assert tmp_path / "p2" / "inbox" / "cam-01" in synced  # a folder a frame left


def _last_arena_step(steps: list[tuple[int, str]], thread: int) -> str:
    return [step for by, step in steps if by == thread and step != "model"][-1]


def test_broken_frames_fail_alone_through_the_workers(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config(
        batch={"size": 8, "file_processes": 2}, inbox={"settle_ms": 0, "readiness_timeout_s": 1}
    )
    inbox = tmp_path / "inbox"
    write_bmp(inbox / "good.bmp", width=64, height=48)
    (inbox / "not-a-bmp.bmp").write_bytes(b"GIF89a, or anything else at all")
    (inbox / "empty.bmp").write_bytes(b"")
    os.mkfifo(inbox / "pipe.bmp")
    past = 1_000_000_000
    os.utime(inbox / "empty.bmp", (past, past))

    assert main(["watch", "--once", "--config", str(config)]) == 0

    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, status, error FROM results")
    outcome = {source: (status, error or "") for source, status, error in rows}
    assert outcome["good.bmp"][0] == "ok"
    assert "not a recognised image format" in outcome["not-a-bmp.bmp"][1]
    assert outcome["empty.bmp"][1].startswith("truncated: empty file")
    assert "not a regular file" in outcome["pipe.bmp"][1]
    assert sorted(files_under(tmp_path / "failed")) == ["empty.bmp", "not-a-bmp.bmp", "pipe.bmp"]


def test_a_worker_that_dies_stops_the_daemon_and_its_frames_are_recovered(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config(batch={"size": 4, "file_processes": 2})
    for index in range(12):
        write_bmp(tmp_path / "inbox" / f"f{index:02d}.bmp", width=32, height=24, seed=index)
    env = {**os.environ, "CCTV_GENDER_KILL_WORKER_ON_FRAME": "f05.bmp"}
    crashed = subprocess.run(
        [sys.executable, "-m", "watcher", "watch", "--once", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == 1, crashed.stderr
    assert "a file worker process died" in crashed.stderr
    assert "Traceback" not in crashed.stderr

    assert main(["watch", "--once", "--config", str(config)]) == 0
    sources = [
        row[0] for row in query(tmp_path / "data" / "results.sqlite3", "SELECT source_path FROM results")
    ]
    assert sorted(sources) == [f"f{index:02d}.bmp" for index in range(12)]
    assert files_under(tmp_path / "inbox") == []


def test_workers_die_with_a_killed_daemon(make_config: Callable[..., Path], tmp_path: Path) -> None:
    config = make_config(batch={"size": 4, "file_processes": 2})
    daemon = subprocess.Popen(
        [sys.executable, "-m", "watcher", "watch", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        workers = _wait_for_children(daemon.pid, count=2)
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    for pid in workers:
        _wait_until_gone(pid)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 70),
    height=st.integers(1, 50),
    top_down=st.booleans(),
    seed=st.integers(0, 2**16),
    offset=st.integers(0, 300),
)
def test_packed_rows_on_the_device_are_the_decoded_pixels(
    width: int, height: int, top_down: bool, seed: int, offset: int
) -> None:
    """Any plain BMP's rows, put upright by the device from where they lie in a buffer, are the
    pixels the decoder gives (channels still B, G, R: swapped after resizing)."""
    import torch

    if max(width, height) > 20 * min(width, height):
        return  # refused by the aspect-ratio cap before decoding
    data = bmp_bytes(width=width, height=height, seed=seed)
    data = _top_down(data) if top_down else data
    buffer = torch.zeros(offset + len(data) + 8, dtype=torch.uint8)
    buffer[offset : offset + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    block = plain_bmp_block(data, max_pixels=10**8)
    assert block is not None and block.bottom_up == (not top_down)

    on_device = upright(packed_rows([PackedBmp(buffer, block.moved(offset))], torch.device("cpu")), block)

    expected = decode_pixels(data, max_pixels=10**8)  # (height, width, 3) RGB
    assert on_device.shape == (1, 3, height, width)
    assert np.array_equal(on_device[0].permute(1, 2, 0).numpy()[..., ::-1], expected)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _wait_for_children(pid: int, *, count: int) -> list[int]:
    from tests.helpers import wait_for

    found: list[int] = []

    def enough() -> bool:
        found[:] = [child for child in _children(pid) if _is_file_worker(child)]
        return len(found) >= count

    wait_for(enough, timeout=60)
    return found


def _is_file_worker(pid: int) -> bool:
    try:
        return b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _wait_until_gone(pid: int) -> None:
    from tests.helpers import wait_for

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return True
        return state == "Z"  # a zombie waits for its (dead) parent's reaper: it runs nothing

    wait_for(gone, timeout=30)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(1, 5),
    gaps=st.lists(st.integers(0, 3000), min_size=5, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_frames_copied_as_one_span_or_one_by_one_are_the_same_pixels(
    count: int, gaps: list[int], seed: int
) -> None:
    """Frames close together in a buffer go to the device as one span, others one by one: either
    way each comes out as its decoded pixels."""
    import torch

    files = [bmp_bytes(width=30, height=20, seed=seed + number) for number in range(count)]
    buffer = torch.zeros(
        sum(len(data) + gap for data, gap in zip(files, gaps[:count], strict=True)) + 8, dtype=torch.uint8
    )
    packed, cursor = [], 0
    for data, gap in zip(files, gaps[:count], strict=True):
        cursor += gap
        buffer[cursor : cursor + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        block = plain_bmp_block(data, max_pixels=10**8)
        assert block is not None
        packed.append(PackedBmp(buffer, block.moved(cursor)))
        cursor += len(data)

    on_device = upright(packed_rows(packed, torch.device("cpu")), packed[0].block)

    for frame, data in zip(on_device, files, strict=True):
        assert np.array_equal(
            frame.permute(1, 2, 0).numpy()[..., ::-1], decode_pixels(data, max_pixels=10**8)
        )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(gaps=[0, 0, 0, 0], in_second_buffer=[False] * 6, order=Random(1), seed=3)  # one span
@example(gaps=[0, 500, 0, 9], in_second_buffer=[False] * 6, order=Random(2), seed=4)  # uneven
@given(
    gaps=st.lists(st.integers(0, 2 * GATHER_GAP), min_size=1, max_size=6),
    in_second_buffer=st.lists(st.booleans(), min_size=6, max_size=6),
    order=st.randoms(use_true_random=False),
    seed=st.integers(0, 2**16),
)
def test_frames_gathered_off_their_buffers_are_their_pixels_in_memory_of_their_own(
    gaps: list[int], in_second_buffer: list[bool], order: Random, seed: int
) -> None:
    """Frames anywhere in one or two buffers, in any order, gathered into memory of their own
    (what a batch does before giving its arena back): each is still its decoded pixels once the
    old buffers are overwritten, and what lay far apart was not copied. Frames close together in
    one buffer (a full arena) are cut out evenly spaced, which packed_rows takes as a view."""
    import torch

    files = [bmp_bytes(width=30, height=20, seed=seed + number) for number in range(len(gaps))]
    buffers = [
        torch.zeros(sum(len(data) for data in files) + sum(gaps) + 8, dtype=torch.uint8) for _ in range(2)
    ]
    cursors = [0, 0]
    packed = []
    for number, (data, gap) in enumerate(zip(files, gaps, strict=False)):
        which = int(in_second_buffer[number])
        start = cursors[which] + gap
        buffers[which][start : start + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        block = plain_bmp_block(data, max_pixels=10**8)
        assert block is not None
        packed.append((PackedBmp(buffers[which], block.moved(start)), data))
        cursors[which] = start + len(data)
    order.shuffle(packed)

    between = 0  # bytes between neighbours in a buffer close enough to be copied with them
    for buffer in buffers:
        blocks = sorted(
            (frame.block for frame, _ in packed if frame.buffer is buffer), key=lambda b: b.offset
        )
        gaps_here = [after.offset - (before.offset + before.nbytes) for before, after in pairwise(blocks)]
        between += sum(gap for gap in gaps_here if gap <= GATHER_GAP)

    frames = [frame for frame, _ in packed]
    start = min(frame.block.offset for frame in frames)
    end = max(frame.block.offset + frame.block.nbytes for frame in frames)
    one_span = len({id(frame.buffer) for frame in frames}) == 1 and end - start <= SPAN_SLACK * sum(
        frame.block.nbytes for frame in frames
    )
    gathered = gathered_on(frames, torch.device("cpu"))
    for buffer in buffers:
        buffer.fill_(0)

    assert len({id(frame.buffer) for frame in gathered}) == 1
    if one_span:  # cut out, nothing between them, in order
        assert gathered[0].buffer.numel() == sum(frame.block.nbytes for frame in gathered)
        rows = packed_rows(gathered, torch.device("cpu"))
        assert rows.data_ptr() == gathered[0].buffer.data_ptr()  # a view: nothing copied again
    else:
        assert gathered[0].buffer.numel() == sum(frame.block.nbytes for frame in gathered) + between
    for frame, (_, data) in zip(gathered, packed, strict=True):
        on_device = upright(packed_rows([frame], torch.device("cpu")), frame.block)[0]
        assert np.array_equal(
            on_device.permute(1, 2, 0).numpy()[..., ::-1], decode_pixels(data, max_pixels=10**8)
        )


def test_batches_in_flight_never_reserve_one_destination_twice(tmp_path: Path) -> None:
    """Two batches recorded side by side (three are in flight on a GPU), each with a frame of the
    same name (a camera that uploads `snapshot.bmp` again): two names, until the first is moved."""
    from datetime import UTC, datetime

    from watcher.intake.claimed import ClaimedFrame
    from watcher.pipeline.recording import Recorder
    from watcher.pipeline.stages import Classified, FileFacts, OutputFolders
    from watcher.store.engine import make_engine
    from watcher.store.file_guard import DatabaseFileGuard
    from watcher.store.migrate import upgrade_to_head

    engine = make_engine(f"sqlite:///{tmp_path / 'results.sqlite3'}", busy_timeout_ms=5000)
    upgrade_to_head(engine)
    folders = OutputFolders(processed=tmp_path / "processed", failed=tmp_path / "failed")
    for folder in (folders.processed, folders.failed):
        folder.mkdir()
    recorder = Recorder(engine, folders, DatabaseFileGuard(engine))

    def batch(key: str) -> list[Classified]:
        frame = ClaimedFrame(
            key=key,
            relative=PurePosixPath("cam-01/snapshot.bmp"),
            work_path_text=str(tmp_path / "area" / key / "cam-01" / "snapshot.bmp"),
            received_at=datetime.now(UTC),
        )
        return [Classified(frame, FileFacts(), None, "cannot decode: test")]

    first = recorder.record(batch("a" * 32))
    second = recorder.record(batch("b" * 32))
    assert first[0].record.stored_path != second[0].record.stored_path

    recorder.moved(first)
    third = recorder.record(batch("c" * 32))
    assert third[0].record.stored_path == first[0].record.stored_path  # free again (not on disk)


def test_frames_in_a_buffer_that_is_not_contiguous_are_still_their_bytes() -> None:
    """The view packed_rows takes of evenly spaced frames assumes a plain buffer: any other (a
    strided one) is cut out as the span path does, never read at the wrong bytes."""
    import torch

    backing = torch.arange(64, dtype=torch.uint8)
    buffer = backing[::2]  # a stride of 2
    block = PixelBlock(offset=0, rows=1, width=1, row_bytes=4, bottom_up=False)
    frames = [PackedBmp(buffer, block.moved(offset)) for offset in (0, 4)]

    rows = packed_rows(frames, torch.device("cpu"))

    assert rows.tolist() == [[buffer[0:4].tolist()], [buffer[4:8].tolist()]]


def test_frames_larger_than_an_arenas_room_make_it_grow(
    make_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Frames of 800x600 (1.4 MB, more than the 1 MiB a frame the arenas start with): a full
    batch that did not fit makes the arenas grow, so later batches are read into them, not sent
    through the workers' pipes (a few hundred KB a system call, each waiting for the GIL); the
    rows are the thread path's, and no shared memory is left behind."""
    from model.clip_features import ClipFeatureExtractor

    frames = {f"cam-hd/{index:02d}.bmp": index for index in range(24)}

    def rows(root: Path, processes: int) -> dict[str, tuple]:
        config = make_config(
            paths={name: str(root / name) for name in ("inbox", "processed", "failed", "data")},
            batch={"size": 4, "file_processes": processes},
            database={"store_embeddings": True},
        )
        for relative, seed in frames.items():
            write_bmp(root / "inbox" / relative, width=800, height=600, seed=seed)
        assert main(["watch", "--once", "--config", str(config)]) == 0
        assert files_under(root / "inbox") == []
        return _rows(root)

    threads = rows(tmp_path / "p0", 0)
    in_an_arena: list[list[bool]] = []  # for each model pass, each frame's
    features = ClipFeatureExtractor.image_features

    def watched(self: ClipFeatureExtractor, images: list) -> np.ndarray:
        in_an_arena.append([isinstance(image, PackedBmp) for image in images])
        return features(self, images)

    monkeypatch.setattr(ClipFeatureExtractor, "image_features", watched)
    shared_before = set(os.listdir("/dev/shm"))
    processes = rows(tmp_path / "p2", 2)

    assert sorted(processes) == sorted(threads) == sorted(frames)
    for source, (status, label, probability, sha256, width, height, embedding) in processes.items():
        expected = threads[source]
        assert (status, label, sha256, width, height) == ("ok", expected[1], *expected[3:6]), source
        assert probability == pytest.approx(expected[2], abs=1e-6), source
        assert np.allclose(unpack_embeddings([embedding]), unpack_embeddings([expected[6]]), atol=1e-6)
    assert not all(in_an_arena[0]), "the first batch found too little room (else this tests nothing)"
    assert all(in_an_arena[-1]), in_an_arena
    assert capfd.readouterr().err.count("frame buffers grow to 1.4 MiB a frame (was 1.0)") == 1
    # /dev/shm is the machine's: another xdist worker's daemon may hold arenas made meanwhile
    # until its test ends (CI saw two); ours, leaked, would stay past the timeout.
    wait_for(lambda: not set(os.listdir("/dev/shm")) - shared_before, timeout=60)
    assert set(os.listdir("/dev/shm")) - shared_before == set()


@pytest.mark.parametrize("frames", [9, 13])  # shares of 5 + 4 and of 7 + 6 frames
def test_every_frame_of_a_part_filled_arena_starts_on_its_boundary(tmp_path: Path, frames: int) -> None:
    """A batch smaller than its arena splits the arena in proportion to its shares: each share,
    and so each frame, still starts on ALIGNMENT (a share at 29 bytes past it once put one frame
    in 64 where AMD Zen 3 copies a file into memory several times slower: bench/read_offsets.py)."""
    import torch

    from watcher.intake.claimed import ClaimedFrame
    from watcher.pipeline.arenas import ARENA_BYTES_PER_FRAME, Arena
    from watcher.pipeline.file_work import ALIGNMENT
    from watcher.pipeline.file_workers import FileWorkers
    from watcher.pipeline.stages import FrameBounds

    header = plain_bmp_block(bmp_bytes(width=160, height=120), max_pixels=10**6)
    assert header is not None
    claimed = []
    for index in range(frames):
        path = write_bmp(tmp_path / f"{index:02d}.bmp", width=160, height=120, seed=index)
        claimed.append(ClaimedFrame(f"k{index}", PurePosixPath(path.name), str(path), NOW))
    workers = FileWorkers(2, FrameBounds(max_pixels=10**6, max_file_bytes=10**7))
    arena = Arena(16 * ARENA_BYTES_PER_FRAME, torch.device("cpu"))
    try:
        decoded = workers.read(claimed, refused={}, arena=arena)
        starts = [
            item.pixels.block.offset - header.offset for item in decoded if isinstance(item.pixels, PackedBmp)
        ]
        assert len(starts) == frames, "every frame read into the arena"
        assert [start % ALIGNMENT for start in starts] == [0] * frames, starts
    finally:
        workers.close()
        arena.close()


def test_arenas_grown_to_their_limit_are_whole_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arenas grown as far as MAX_ARENAS_BYTES lets them (4 GiB over 2 arenas of 100 frames is
    21474836 bytes a frame) are still whole pages: the file workers' shares, each starting on
    ALIGNMENT, then end at the arena's end (FileWorkers.read)."""
    import torch

    from watcher.pipeline import arenas

    monkeypatch.setattr(arenas, "MAX_ARENAS_BYTES", 6 * 1536 * 1024 + 600)  # 1.5 MiB and 100 bytes a frame
    pool = arenas.ArenaPool(count=2, frames=3, device=torch.device("cpu"))
    try:
        pool.fit([2 * 2**20] * 3)
        with pool.lease() as arena:
            assert arena.size == 3 * 1536 * 1024, arena.size
    finally:
        pool.close()


def test_a_worker_lets_go_of_the_buffers_the_daemon_removed(tmp_path: Path) -> None:
    """A grown arena's old buffer is unlinked by the daemon; the workers that mapped it unmap it
    at their next read, so its memory goes (a mapping keeps a removed shared memory's pages)."""
    from multiprocessing.shared_memory import SharedMemory

    from watcher.pipeline import file_work
    from watcher.pipeline.stages import FrameBounds

    old, new = SharedMemory(create=True, size=2**20), SharedMemory(create=True, size=2**20)
    bounds = FrameBounds(max_pixels=10**7, max_file_bytes=2**24)
    try:
        assert file_work.read_share([], bounds, old.name, 0, old.size) == []
        assert old.name in file_work._attached
        old.unlink()
        assert file_work.read_share([], bounds, new.name, 0, new.size) == []
        assert old.name not in file_work._attached
        assert new.name in file_work._attached
    finally:
        for memory in (old, new):
            memory.close()
        file_work._attached.pop(new.name).close()
        new.unlink()


_TWO_LANES_GROW = """
import logging, os, sys, torch
from watcher.pipeline.arenas import ArenaPool
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
pool = ArenaPool(count=2, frames=4, device=torch.device("cpu"))
pool.fit([1920 * 1080 * 3 + 54] * 4)  # a full batch of 1920x1080 frames: room for 23.7 MiB an arena
with pool.lease() as first, pool.lease() as second:  # two lanes, both leased before either is read into
    for arena in (first, second):
        arena.tensor.fill_(1)  # every byte written, as the workers' reads of a full batch would
    print("sizes", first.size // 2**20, second.size // 2**20)
pool.close()
print("left", os.listdir("/dev/shm"))
"""

_TAKEN_MEANWHILE = """
import os, torch
from watcher.pipeline import arenas
arenas._shared_memory_free = lambda: 2**40  # the check passed, then another process took the room
try:
    arenas.ArenaPool(count=2, frames=8, device=torch.device("cpu"))  # 8 MiB each
except arenas.ArenasUnavailable as error:
    print("refused:", error)
print("left", os.listdir("/dev/shm"))
"""


def _can_mount_shared_memory() -> bool:
    probe = ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", "/dev/shm"]
    return os.geteuid() == 0 and subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _with_shared_memory_of(size: str, script: str) -> subprocess.CompletedProcess[str]:
    """`script` run by Python where /dev/shm is a tmpfs of `size` of its own (a mount namespace)."""
    small_shm = f'mount -t tmpfs -o size={size} tmpfs /dev/shm && exec "$0" -c "$1"'
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", small_shm, sys.executable, script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


needs_a_small_shared_memory = pytest.mark.skipif(
    not _can_mount_shared_memory(), reason="needs root and mount namespaces"
)


@needs_a_small_shared_memory
def test_arenas_that_shared_memory_cannot_hold_together_are_not_grown() -> None:
    """A /dev/shm of 40 MiB holds one grown arena (23.7 MiB) beside the other's 4 MiB, not two:
    the second is refused with one warning and keeps its size, rather than made and its pages
    found missing when frames are read into it (the reads came back short: good frames failed
    as truncated; here, writing them all, SIGBUS)."""
    grown = _with_shared_memory_of("40m", _TWO_LANES_GROW)
    assert grown.returncode == 0, grown.stderr
    assert "sizes 23 4\n" in grown.stdout
    assert "left []\n" in grown.stdout
    assert grown.stderr.count("WARNING frame buffers stay as they are (larger frames go through pipes)") == 1


@needs_a_small_shared_memory
def test_arenas_refused_at_start_leave_nothing_in_shared_memory() -> None:
    """The second of two arenas finds no room (12 MiB for 16): the first is removed, not left in
    /dev/shm for the daemon's life while its file work stays on threads."""
    refused = _with_shared_memory_of("12m", _TAKEN_MEANWHILE)
    assert refused.returncode == 0, refused.stderr
    assert (
        "refused: a frame buffer of 8 MiB: /dev/shm cannot hold it (No space left on device)\n"
        in refused.stdout
    )
    assert "left []\n" in refused.stdout


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(150, 420),
    height=st.integers(140, 300),
    mode=st.sampled_from(["RGB", "RGBA", "P", "L"]),
)
def test_by_its_size_a_frame_is_told_as_one_an_arena_serves(width: int, height: int, mode: str) -> None:
    """Only a plain 24-bit BMP's rows stay in an arena: 32-bit and palette BMPs are decoded by
    Pillow whatever the room, so a site of them must not make the arenas grow (page-locked on a
    GPU) for nothing. Told apart by size alone, for frames large enough to matter."""
    from watcher.pipeline.arenas import served_in_place

    data = bmp_bytes(width=width, height=height, mode=mode)
    plain = plain_bmp_block(data, max_pixels=10**8) is not None
    assert served_in_place(len(data), width, height) == plain == (mode == "RGB")


def test_frames_an_arena_cannot_serve_never_make_it_grow(
    make_config: Callable[..., Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Full batches of 32-bit frames of 800x600 (1.9 MB, more than an arena's 1 MiB a frame) come
    back through the pipes whatever the room: the arenas stay as they are, every frame has its row."""
    config = make_config(
        paths={name: str(tmp_path / name) for name in ("inbox", "processed", "failed", "data")},
        batch={"size": 4, "file_processes": 2},
    )
    for index in range(8):
        write_bmp(
            tmp_path / "inbox" / "cam-32" / f"{index}.bmp", width=800, height=600, mode="RGBA", seed=index
        )

    assert main(["watch", "--once", "--config", str(config)]) == 0

    assert [row[0] for row in _rows(tmp_path).values()] == ["ok"] * 8
    assert "frame buffers grow" not in capfd.readouterr().err
