#!/usr/bin/env bash
# Install or upgrade cctv-gender as a system service. From the repository, as root:
#
#     sudo systemd/install.sh            # install, or upgrade in place (migrations applied)
#     sudo systemctl enable --now cctv-gender
#
# Re-running upgrades the application and never overwrites an edited config.
# `systemd/install.sh --print-config` only prints the config a fresh install writes.
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/cctv-gender
CONFIG_DIR=/etc/cctv-gender
STATE_DIR=/var/lib/cctv-gender
FRAMES_DIR=/srv/cctv-gender
SERVICE_USER=cctv-gender
UNIT=cctv-gender.service
# The system interpreter: the service user must be able to run it (a pyenv or conda Python under
# someone's home directory usually is not readable to it).
PYTHON=${PYTHON:-/usr/bin/python3}

service_config() {
    # The repository's documented config.toml, with the service's folders.
    sed -e "s|^inbox = \"inbox\"|inbox = \"$FRAMES_DIR/inbox\"|" \
        -e "s|^processed = \"processed\"|processed = \"$FRAMES_DIR/processed\"|" \
        -e "s|^failed = \"failed\"|failed = \"$FRAMES_DIR/failed\"|" \
        -e "s|^data = \"data\"|data = \"$STATE_DIR\"|" \
        "$REPO/config.toml"
}

if [ "${1:-}" = "--print-config" ]; then
    service_config
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo systemd/install.sh)" >&2
    exit 1
fi

echo "== user $SERVICE_USER"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi
# GPU device nodes are usually group video or render.
for group in video render; do
    if getent group "$group" >/dev/null; then usermod -a -G "$group" "$SERVICE_USER"; fi
done

echo "== application in $PREFIX"
install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/.venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$REPO"
install -m 0644 "$REPO/README.md" "$PREFIX/README.md"

echo "== config in $CONFIG_DIR"
install -d -m 0750 -o root -g "$SERVICE_USER" "$CONFIG_DIR"
if [ -e "$CONFIG_DIR/config.toml" ]; then
    # Never overwrite an edited config; leave the new defaults beside it for comparison.
    service_config > "$CONFIG_DIR/config.toml.dist"
    echo "kept $CONFIG_DIR/config.toml; the new defaults are in config.toml.dist"
else
    service_config > "$CONFIG_DIR/config.toml"
fi
chown root:"$SERVICE_USER" "$CONFIG_DIR"/config.toml*
chmod 0640 "$CONFIG_DIR"/config.toml*

echo "== folders"
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
# Operators in group cctv-gender may drop frames into the inbox.
install -d -m 2775 -o "$SERVICE_USER" -g "$SERVICE_USER" "$FRAMES_DIR" "$FRAMES_DIR/inbox"
install -d -m 2750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$FRAMES_DIR/processed" "$FRAMES_DIR/failed"

echo "== database"
runuser -u "$SERVICE_USER" -- "$PREFIX/.venv/bin/cctv-gender" db upgrade --config "$CONFIG_DIR/config.toml"

echo "== unit"
install -m 0644 "$REPO/systemd/$UNIT" "/etc/systemd/system/$UNIT"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl try-restart "$UNIT" || true
fi
echo "installed. Start it with: systemctl enable --now cctv-gender"
