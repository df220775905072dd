#!/usr/bin/env bash
# Remove the cctv-gender service and application. Data stays unless asked:
#
#     sudo systemd/uninstall.sh            # keeps /etc/cctv-gender, /var/lib/cctv-gender, /srv/cctv-gender
#     sudo systemd/uninstall.sh --purge    # removes them and the cctv-gender user too
set -euo pipefail

UNIT=cctv-gender.service
if [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root" >&2
    exit 1
fi
if [ -d /run/systemd/system ]; then
    systemctl disable --now "$UNIT" 2>/dev/null || true
fi
rm -f "/etc/systemd/system/$UNIT"
[ -d /run/systemd/system ] && systemctl daemon-reload
rm -rf /opt/cctv-gender
if [ "${1:-}" = "--purge" ]; then
    rm -rf /etc/cctv-gender /var/lib/cctv-gender /srv/cctv-gender
    userdel cctv-gender 2>/dev/null || true
    echo "removed the service, the application, its config, database, models and frames"
else
    echo "removed the service and the application; kept /etc/cctv-gender, /var/lib/cctv-gender, /srv/cctv-gender"
fi
