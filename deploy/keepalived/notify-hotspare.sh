#!/bin/sh
# keepalived notify. Called as: notify-hotspare.sh TYPE NAME STATE PRIORITY
# (STATE: MASTER, BACKUP, FAULT, STOP).
#
# A pair (docs/cluster.md; the deployment file has a cluster: section): both routers
# run all the time and the decisions are in etcd, so moving the address changes nothing
# in hotspare: the state is only recorded (for check-hotspare.sh and for people) and
# logged.
#
# Single (no cluster: section, or HOTSPARE_KEEPALIVED_MODE=single in /etc/hotspare/env):
# one router runs only where the address is: started on MASTER (taking the peer's newer
# state file first, so it comes back with the same active), stopped on BACKUP/FAULT.
set -u
[ -r /etc/hotspare/env ] && . /etc/hotspare/env
STATE=${3:-UNKNOWN}
STATE_MARK=${HOTSPARE_KEEPALIVED_STATE:-/run/hotspare-keepalived.state}
# The mode: HOTSPARE_KEEPALIVED_MODE if set, else "pair" when the deployment file has a
# cluster: section, else "single".
CONFIG=${HOTSPARE_CONFIG:-/etc/hotspare/hotspare.yaml}
if grep -q '^cluster:' "$CONFIG" 2>/dev/null; then DETECTED=pair; else DETECTED=single; fi
MODE=${HOTSPARE_KEEPALIVED_MODE:-$DETECTED}
STATE_FILE=${HOTSPARE_STATE_FILE:-/var/lib/hotspare/state.json}
PEER=${HOTSPARE_PEER:-10.20.0.9}   # the other router
SSH_KEY=${HOTSPARE_SSH_KEY:-/var/lib/hotspare/.ssh/id_ed25519}

echo "$STATE" > "$STATE_MARK"
logger -t hotspare-keepalived "floating address: this router is now $STATE ($MODE mode)" 2>/dev/null || true
[ "$MODE" = single ] || exit 0

case $STATE in
    MASTER)
        tmp=$(mktemp)
        if scp -q -i "$SSH_KEY" -o ConnectTimeout=2 -o BatchMode=yes "hotspare@$PEER:$STATE_FILE" "$tmp" 2>/dev/null; then
            peer_epoch=$(sed -n 's/.*"epoch": *\([0-9]*\).*/\1/p' "$tmp" | sort -n | tail -n 1)
            own_epoch=$(sed -n 's/.*"epoch": *\([0-9]*\).*/\1/p' "$STATE_FILE" 2>/dev/null | sort -n | tail -n 1)
            if [ "${peer_epoch:-0}" -gt "${own_epoch:-0}" ]; then
                install -m 0640 -o hotspare -g hotspare "$tmp" "$STATE_FILE"
            fi
        fi
        rm -f "$tmp"
        systemctl start hotspare-router.service
        ;;
    BACKUP|FAULT|STOP)
        systemctl stop hotspare-router.service
        ;;
esac
exit 0
