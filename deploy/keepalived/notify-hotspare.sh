#!/bin/sh
# keepalived notify: run `hotspare router` only where the floating address is.
# Called as: notify-hotspare.sh TYPE NAME STATE PRIORITY  (STATE: MASTER, BACKUP, FAULT, STOP)
set -u
STATE=${3:-UNKNOWN}
STATE_MARK=${HOTSPARE_KEEPALIVED_STATE:-/run/hotspare-keepalived.state}
STATE_FILE=${HOTSPARE_STATE_FILE:-/var/lib/hotspare/state.json}
PEER=${HOTSPARE_PEER:-10.20.0.9}   # the other router
SSH_KEY=${HOTSPARE_SSH_KEY:-/var/lib/hotspare/.ssh/id_ed25519}

echo "$STATE" > "$STATE_MARK"
case $STATE in
    MASTER)
        # Take the newer state file (higher epoch) from the peer if it can be reached:
        # the router must come back with the same active the old master had chosen.
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
