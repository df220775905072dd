#!/usr/bin/env bash
# Remove the cctv-gender service and application. Data stays unless asked:
#
#     sudo systemd/uninstall.sh            # keeps /etc/cctv-gender, /var/lib/cctv-gender, /srv/cctv-gender
#     sudo systemd/uninstall.sh --purge    # removes them, the cctv-gender user and group too
#
# Folders outside those (named with install.sh --data/--inbox/--processed/--failed, listed in the
# unit's drop-in paths.conf) are never removed: they may be a share other nodes still use.
set -euo pipefail

UNIT=cctv-gender.service
DROPIN_DIR=/etc/systemd/system/$UNIT.d
# An uninstall that keeps the data keeps the drop-in's list of folders beside the config, so a
# later --purge can still say which folders it leaves.
KEPT_PATHS=/etc/cctv-gender/paths.conf
if [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root" >&2
    exit 1
fi
elsewhere=""
for paths in "$DROPIN_DIR/paths.conf" "$KEPT_PATHS"; do
    if [ -f "$paths" ]; then
        # RequiresMountsFor= names each folder (ReadWritePaths= may name the frames' parent).
        elsewhere=$(sed -n 's/^RequiresMountsFor=\(..*\)$/\1/p' "$paths" | tr ' ' '\n' |
            grep -v -E '^/(var/lib|srv)/cctv-gender(/|$)' | tr '\n' ' ' || true)
        break
    fi
done
if [ "${1:-}" != "--purge" ] && [ -f "$DROPIN_DIR/paths.conf" ] && [ -d /etc/cctv-gender ]; then
    cp "$DROPIN_DIR/paths.conf" "$KEPT_PATHS"
fi
if [ -d /run/systemd/system ]; then
    systemctl disable --now "$UNIT" 2>/dev/null || true
fi
rm -f "/etc/systemd/system/$UNIT" "$DROPIN_DIR/paths.conf"
rmdir "$DROPIN_DIR" 2>/dev/null || true
[ -d /run/systemd/system ] && systemctl daemon-reload
rm -rf /opt/cctv-gender
if [ "${1:-}" = "--purge" ]; then
    rm -rf /etc/cctv-gender /var/lib/cctv-gender /srv/cctv-gender
    userdel cctv-gender 2>/dev/null || true
    groupdel cctv-gender 2>/dev/null || true
    echo "removed the service, the application, its config, database, models and frames"
else
    echo "removed the service and the application; kept /etc/cctv-gender, /var/lib/cctv-gender, /srv/cctv-gender"
fi
if [ -n "$elsewhere" ]; then
    echo "kept (named in paths.conf; remove them by hand if no other node uses them): $elsewhere"
fi
