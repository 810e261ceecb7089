#!/bin/sh
# keepalived check: is the local hotspare router alive?
# Exit 0: it answers GET /v1/status with a list of services (or this node is not the
# master, so the router is not supposed to run). Exit 1 otherwise.
# The admin API answers reads without a token; HOTSPARE_ADMIN_TOKEN is sent if set
# (in /etc/hotspare/env) in case reads are protected too.
set -u
ADMIN_URL=${HOTSPARE_ADMIN_URL:-http://127.0.0.1:9100}
STATE_MARK=${HOTSPARE_KEEPALIVED_STATE:-/run/hotspare-keepalived.state}
[ -r /etc/hotspare/env ] && . /etc/hotspare/env

# On a BACKUP the router is stopped on purpose: do not count that as a failure.
if [ -r "$STATE_MARK" ] && [ "$(cat "$STATE_MARK")" != MASTER ]; then
    exit 0
fi

body=$(curl --silent --show-error --fail --max-time 2 --noproxy '*' \
    ${HOTSPARE_ADMIN_TOKEN:+-H "Authorization: Bearer $HOTSPARE_ADMIN_TOKEN"} \
    "$ADMIN_URL/v1/status") || exit 1
case $body in
    *'"services"'*) exit 0 ;;
    *) echo "check-hotspare: unexpected /v1/status answer" >&2; exit 1 ;;
esac
