#!/bin/sh
# keepalived check: may this router hold the floating address?
#
# A pair (docs/cluster.md; the deployment file has a cluster: section): both routers
# run `hotspare router` all the time and share every decision in etcd; keepalived only
# moves the address. Exit 0 when the
# local router answers GET /v1/status with its services and reaches etcd. Exit 1 when it
# does not answer, or when it is cut off from etcd: it still serves the last known
# active but cannot fail over, so the address is better on the other router.
#
# Single (no cluster: section, or HOTSPARE_KEEPALIVED_MODE=single in /etc/hotspare/env):
# one router, run only where the address is (notify-hotspare.sh starts and stops it); on a
# BACKUP the router is stopped on purpose, so its absence is not a failure there.
#
# The admin API answers reads without a token; HOTSPARE_ADMIN_TOKEN is sent if set
# (in /etc/hotspare/env) in case reads are protected too.
set -u
[ -r /etc/hotspare/env ] && . /etc/hotspare/env
ADMIN_URL=${HOTSPARE_ADMIN_URL:-http://127.0.0.1:9100}
STATE_MARK=${HOTSPARE_KEEPALIVED_STATE:-/run/hotspare-keepalived.state}
# The mode: HOTSPARE_KEEPALIVED_MODE if set, else "pair" when the deployment file has a
# cluster: section, else "single".
CONFIG=${HOTSPARE_CONFIG:-/etc/hotspare/hotspare.yaml}
if grep -q '^cluster:' "$CONFIG" 2>/dev/null; then DETECTED=pair; else DETECTED=single; fi
MODE=${HOTSPARE_KEEPALIVED_MODE:-$DETECTED}

if [ "$MODE" = single ] && [ -r "$STATE_MARK" ] && [ "$(cat "$STATE_MARK")" != MASTER ]; then
    exit 0
fi

body=$(curl --silent --show-error --fail --max-time 2 --noproxy '*' \
    ${HOTSPARE_ADMIN_TOKEN:+-H "Authorization: Bearer $HOTSPARE_ADMIN_TOKEN"} \
    "$ADMIN_URL/v1/status") || exit 1
case $body in
    *'"etcd": {"ok": false'*|*'"etcd":{"ok":false'*)
        echo "check-hotspare: this router cannot reach etcd (no failover from here)" >&2; exit 1 ;;
    *'"services"'*) exit 0 ;;
    *) echo "check-hotspare: unexpected /v1/status answer" >&2; exit 1 ;;
esac
