#!/usr/bin/env bash
# Install or upgrade cctv-gender as a system service. From the repository, as root:
#
#     sudo systemd/install.sh            # install, or upgrade in place (migrations applied)
#     sudo systemctl enable --now cctv-gender
#
# Options:
#   --data DIR --inbox DIR --processed DIR --failed DIR
#                     the folders (absolute paths) of a fresh install's config, and the only ones
#                     the unit may write (a drop-in, /etc/systemd/system/cctv-gender.service.d/
#                     paths.conf); default /var/lib/cctv-gender and /srv/cctv-gender/{inbox,...}
#   --python PATH     the interpreter of the virtual environment (3.11 or newer; default
#                     /usr/bin/python3, or $PYTHON)
#   --print-config    print the drop-in and the config a fresh install writes; install nothing
#
# Re-running upgrades the application and never overwrites an edited config; the drop-in is
# written again from the folders that config names.
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/cctv-gender
CONFIG_DIR=/etc/cctv-gender
STATE_DIR=/var/lib/cctv-gender
SERVICE_USER=cctv-gender
SERVICE_GROUP=cctv-gender
UNIT=cctv-gender.service
DROPIN=/etc/systemd/system/$UNIT.d/paths.conf
# The system interpreter: the service user must be able to run it (a pyenv or conda Python under
# someone's home directory usually is not readable to it).
PYTHON=${PYTHON:-/usr/bin/python3}
DATA=$STATE_DIR
INBOX=/srv/cctv-gender/inbox
PROCESSED=/srv/cctv-gender/processed
FAILED=/srv/cctv-gender/failed
# Other folders the config has the daemon write, outside those four (see configured_folders).
OTHERS=""
PATHS_GIVEN=no
PRINT=no

usage_error() {
    echo "install.sh: $1" >&2
    echo "usage: install.sh [--data DIR] [--inbox DIR] [--processed DIR] [--failed DIR] [--python PATH] [--print-config]" >&2
    exit 2
}

fail() {
    echo "install.sh: $1" >&2
    exit 1
}

# An absolute path that systemd (a space separates paths, % is a specifier) and sed take as is.
UNIT_PATH='^/[A-Za-z0-9._/@+,:=~-]*$'

folder_option() {
    [[ "$2" == /* ]] || usage_error "$1 needs an absolute path, not '$2'"
    [[ "$2" =~ $UNIT_PATH ]] \
        || usage_error "$1 '$2': use a path of letters, digits and ._/@+,:=~- (no spaces)"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --data | --inbox | --processed | --failed)
            [ $# -ge 2 ] || usage_error "$1 needs a folder"
            folder_option "$1" "$2"
            value=$(realpath -m "$2")
            case "$1" in
                --data) DATA=$value ;;
                --inbox) INBOX=$value ;;
                --processed) PROCESSED=$value ;;
                --failed) FAILED=$value ;;
            esac
            PATHS_GIVEN=yes
            shift 2
            ;;
        --python)
            [ $# -ge 2 ] || usage_error "--python needs an interpreter"
            PYTHON=$2
            shift 2
            ;;
        --print-config) PRINT=yes; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown option '$1'" ;;
    esac
done

check_folders() {
    # The daemon refuses these at start: refuse them here, before anything is installed.
    local name value other other_name
    for name in DATA INBOX PROCESSED FAILED; do
        value=${!name}
        case "$value" in
            / | /root | /root/* | /home | /home/*)
                usage_error "--${name,,} $value: the service may not write there (ProtectHome, or the whole disk)" ;;
        esac
        for other_name in DATA INBOX PROCESSED FAILED; do
            other=${!other_name}
            [ "$name" != "$other_name" ] || continue
            if [ "$value" = "$other" ] || [[ "$value" == "$other"/* ]]; then
                usage_error "--${name,,} $value and --${other_name,,} $other: each folder must be its own, none inside another"
            fi
        done
    done
}

check_python() {
    # First, before anything is created: the virtual environment is made with this interpreter.
    local version
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
        || fail "cannot run '$PYTHON': cctv-gender needs Python 3.11 or newer; name one with --python PATH"
    [[ "$version" =~ ^([0-9]+)\.([0-9]+)$ ]] || fail "'$PYTHON' is not a Python interpreter (it said '$version')"
    if [ "${BASH_REMATCH[1]}" -lt 3 ] || { [ "${BASH_REMATCH[1]}" -eq 3 ] && [ "${BASH_REMATCH[2]}" -lt 11 ]; }; then
        fail "cctv-gender needs Python 3.11 or newer; $PYTHON is $version. Install one (Debian 12 and Ubuntu 24.04 ship it; elsewhere e.g. apt-get install python3.11 python3.11-venv) and run again with --python /usr/bin/python3.11"
    fi
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || fail "$PYTHON ($version) cannot make a virtual environment: apt-get install python3-venv (or python$version-venv)"
}

service_config() {
    # The repository's documented config.toml, with the service's folders.
    sed -e "s|^inbox = \"inbox\"|inbox = \"$INBOX\"|" \
        -e "s|^processed = \"processed\"|processed = \"$PROCESSED\"|" \
        -e "s|^failed = \"failed\"|failed = \"$FAILED\"|" \
        -e "s|^data = \"data\"|data = \"$DATA\"|" \
        "$REPO/config.toml"
}

frames_root() {
    # The folder holding the inbox, processed/ and failed/ side by side, when the drop-in may name
    # it instead of the three: systemd binds each ReadWritePaths= folder onto itself in the
    # service, and the kernel links and renames within one mount only (EXDEV), so three folders
    # named apart make every frame's move a copy (flushed: ~1 ms a frame against ~30 us for a
    # link). Only their own parent, never a wider one (a share's root with other data in it, /srv/a
    # above /srv/a/b and /srv/a/c), and not /, a top-level folder (/srv, /mnt), one right under
    # /var (/var/lib, /var/www), a system folder or the application's.
    local parent=${INBOX%/}
    parent=${parent%/*}
    [ "$parent" = "$(dirname "${PROCESSED%/}")" ] && [ "$parent" = "$(dirname "${FAILED%/}")" ] || return 0
    case "$parent" in
        /etc/* | /usr/* | /boot/* | /proc/* | /sys/* | /dev/* | /run/* | "$PREFIX" | "$PREFIX"/*) return 0 ;;
    esac
    [[ "$parent" == /var/* && "${parent#/var/}" != */* ]] && return 0
    [[ "$parent" == /?*/?* ]] && echo "$parent"
    return 0
}

paths_dropin() {
    # The empty ReadWritePaths= drops the unit's default (/srv/cctv-gender): only these stay writable.
    local frames note=""
    frames=$(frames_root)
    if [ -z "$frames" ]; then
        frames="$INBOX $PROCESSED $FAILED"
        note="# The inbox, processed/ and failed/ share no folder this file may name: in the service each
# is a mount of its own, and each frame is copied into processed/ or failed/ instead of linked.
# Put them in one folder of their own (e.g. /srv/cctv-gender) to keep moves links."
    fi
    cat <<EOF
# Written by systemd/install.sh: the folders $CONFIG_DIR/config.toml names, the only ones the
# service may write (the inbox, processed/ and failed/ by the folder that holds them where it
# may: one mount in the service, so a frame's move is a link). After moving a folder in the config, run
# install.sh again (or edit this file), then: systemctl daemon-reload && systemctl restart cctv-gender
${note:+$note
}[Unit]
RequiresMountsFor=$DATA $INBOX $PROCESSED $FAILED${OTHERS:+ $OTHERS}

[Service]
ReadWritePaths=
ReadWritePaths=$DATA $frames${OTHERS:+ $OTHERS}
EOF
}

configured_folders() {
    # data, inbox, processed, failed of an existing config, resolved as the daemon resolves them
    # (a byte-order mark is allowed, as the daemon allows it), then on a fifth line the other
    # folders the daemon writes that are outside them: model.registry's (its engine cache), a
    # SQLite database.url's. One line and exit 1 for a file the daemon refuses too: a path that
    # starts with ~ among them (root's home here, the service user's in the daemon).
    "$PYTHON" - "$1" <<'EOF'
import re, sys, tomllib
from pathlib import Path

config = Path(sys.argv[1])

def resolved(key, value):
    if str(Path(value)).startswith("~"):  # ./~/x too: Path, as the daemon reads it, drops the ./
        sys.exit(f"install.sh: {config}: {key} '{value}': starts with ~, a different home folder for root here and for the service's user; cctv-gender refuses it too: write the path out, then run again")
    return (config.parent / value).resolve()

try:
    document = tomllib.loads(config.read_text(encoding="utf-8-sig"))
    paths = document.get("paths", {})
    folders = [resolved(f"paths.{key}", paths.get(key) or key) for key in ("data", "inbox", "processed", "failed")]
    registry = document.get("model", {}).get("registry")
    others = [resolved("model.registry", registry)] if registry else []
    sqlite = re.fullmatch(r"sqlite(\+\w+)?:///([^?]+)(\?.*)?", document.get("database", {}).get("url") or "")
    if sqlite and sqlite[2] != ":memory:" and not sqlite[2].startswith("file:"):
        others.append(resolved("database.url", sqlite[2]).parent)
except Exception as error:
    problem = " ".join(str(error).split()) or type(error).__name__
    sys.exit(f"install.sh: {config}: cannot read its [paths] ({problem}); cctv-gender refuses it too: fix it, then run again")
outside = [str(other) for other in dict.fromkeys(others) if not any(other.is_relative_to(f) for f in folders)]
print("\n".join([*map(str, folders), " ".join(outside)]))
EOF
}

check_configured_folders() {
    # The drop-in names the config's folders as they are: refuse what it cannot name, as the flags do.
    local key name value
    for key in data inbox processed failed; do
        name=${key^^}
        value=${!name}
        [[ "$value" =~ $UNIT_PATH ]] \
            || fail "$CONFIG_DIR/config.toml: paths.$key '$value': the unit's drop-in can only name a path of letters, digits and ._/@+,:=~- (no spaces); move the folder, edit [paths], then run again"
    done
    for value in $OTHERS; do
        [[ "$value" =~ $UNIT_PATH ]] \
            || fail "$CONFIG_DIR/config.toml: model.registry or database.url names '$value': the unit's drop-in can only name a path of letters, digits and ._/@+,:=~- (no spaces); move it, edit the config, then run again"
    done
}

check_folders
check_python
if [ "$PRINT" = yes ]; then
    echo "==> $DROPIN <=="
    paths_dropin
    echo
    echo "==> $CONFIG_DIR/config.toml <=="
    service_config
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    fail "run as root (sudo systemd/install.sh)"
fi
if [ -e "$CONFIG_DIR/config.toml" ]; then
    # The config in use is never overwritten: the drop-in follows its folders.
    folders=$(configured_folders "$CONFIG_DIR/config.toml") || exit 1
    mapfile -t configured <<< "$folders"
    if [ "$PATHS_GIVEN" = yes ] && [ "${configured[*]:0:4}" != "$DATA $INBOX $PROCESSED $FAILED" ]; then
        fail "$CONFIG_DIR/config.toml names other folders (data, inbox, processed, failed: ${configured[*]:0:4}); edit its [paths] to match, or run without --data/--inbox/--processed/--failed"
    fi
    DATA=${configured[0]} INBOX=${configured[1]} PROCESSED=${configured[2]} FAILED=${configured[3]}
    OTHERS=${configured[4]:-}
    check_configured_folders
fi

echo "== user $SERVICE_USER, group $SERVICE_GROUP"
getent group "$SERVICE_GROUP" >/dev/null || groupadd --system "$SERVICE_GROUP"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --gid "$SERVICE_GROUP" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin "$SERVICE_USER"
fi
# GPU device nodes are usually group video or render.
for group in video render; do
    if getent group "$group" >/dev/null; then usermod -a -G "$group" "$SERVICE_USER"; fi
done

echo "== application in $PREFIX (torch and CUDA are several GB: this takes minutes)"
install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/.venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/python" -m pip install --disable-pip-version-check --upgrade "$REPO"
install -m 0644 "$REPO/README.md" "$PREFIX/README.md"

echo "== config in $CONFIG_DIR"
install -d -m 0750 -o root -g "$SERVICE_GROUP" "$CONFIG_DIR"
if [ -e "$CONFIG_DIR/config.toml" ]; then
    # Never overwrite an edited config; leave the new defaults beside it for comparison.
    service_config > "$CONFIG_DIR/config.toml.dist"
    echo "kept $CONFIG_DIR/config.toml; the new defaults are in config.toml.dist"
else
    service_config > "$CONFIG_DIR/config.toml"
fi
chown root:"$SERVICE_GROUP" "$CONFIG_DIR"/config.toml*
chmod 0640 "$CONFIG_DIR"/config.toml*

echo "== folders"
# State (database, registry): group cctv-gender may read (the unit's UMask=0027 keeps files
# group-readable; setgid keeps new files in the group), never write.
install -d -m 2750 -o "$SERVICE_USER" -g "$SERVICE_GROUP" "$STATE_DIR" "$DATA"
# Operators in group cctv-gender may drop frames into the inbox and read the results. A folder
# that already exists (a share) keeps its owner and mode.
for folder in "$INBOX" "$PROCESSED" "$FAILED"; do
    mode=2750
    [ "$folder" = "$INBOX" ] && mode=2775
    [ -d "$folder" ] || install -d -m "$mode" -o "$SERVICE_USER" -g "$SERVICE_GROUP" "$folder"
    runuser -u "$SERVICE_USER" -- test -w "$folder" \
        || echo "warning: $SERVICE_USER cannot write $folder (on a share: the same uid on every node)" >&2
done
# model.registry's or a SQLite database's folder outside them: made like the data folder when
# missing (the unit cannot make it: only the folders it names are writable), else kept as it is.
for folder in $OTHERS; do
    [ -d "$folder" ] || install -d -m 2750 -o "$SERVICE_USER" -g "$SERVICE_GROUP" "$folder"
    runuser -u "$SERVICE_USER" -- test -w "$folder" \
        || echo "warning: $SERVICE_USER cannot write $folder (named by model.registry or database.url)" >&2
done

echo "== database"
runuser -u "$SERVICE_USER" -- "$PREFIX/.venv/bin/cctv-gender" db upgrade --config "$CONFIG_DIR/config.toml"

echo "== unit, and the folders it may write in $DROPIN"
install -m 0644 "$REPO/systemd/$UNIT" "/etc/systemd/system/$UNIT"
install -d -m 0755 "$(dirname "$DROPIN")"
paths_dropin > "$DROPIN"
chmod 0644 "$DROPIN"
[ -n "$(frames_root)" ] \
    || echo "warning: $INBOX, $PROCESSED and $FAILED share no folder the service may be given: each frame will be copied, not linked, into processed/ or failed/ (see $DROPIN)" >&2
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl try-restart "$UNIT" || true
fi
echo "installed. Start it with: systemctl enable --now cctv-gender"
echo "Operators: usermod -a -G $SERVICE_GROUP NAME (inbox writes, config and results reads)"
