#!/bin/sh
# remote-notify.sh - wgkeeper hook that reports each event to a remote URL,
# like eduVPN's example connect script: one HTTP POST per event whose
# form-encoded body holds every VPN_* variable wgkeeper set.
#
# Configuration, passed through from wgkeeper's environment:
#
#   [hooks]
#   script   = "/usr/local/bin/wgkeeper-remote-notify"
#   pass_env = ["WGKEEPER_NOTIFY_URL", "WGKEEPER_NOTIFY_TOKEN"]
#
#   WGKEEPER_NOTIFY_URL    where to POST (required)
#   WGKEEPER_NOTIFY_TOKEN  optional bearer token; it is handed to curl on its
#                          stdin, never on the command line where other
#                          users could read it
#
# The script exits non-zero when the URL is missing, the server cannot be
# reached within 20 seconds, or it answers with an HTTP error (4xx/5xx):
# wgkeeper then rejects the connect, or retries the disconnect later. The
# receiver should use VPN_EVENT_ID to drop duplicates, since a disconnect can
# be delivered more than once.
#
# POSIX sh only; values are passed to curl as separate arguments and never
# evaluated by the shell.
#
# Install: install -o root -g root -m 0755 remote-notify.sh /usr/local/bin/wgkeeper-remote-notify
set -eu

url=${WGKEEPER_NOTIFY_URL:-}
if [ -z "$url" ]; then
	echo "remote-notify.sh: WGKEEPER_NOTIFY_URL is not set; set it and add it to hooks.pass_env" >&2
	exit 2
fi

set -- \
	--silent --show-error --fail --max-time 20 \
	--config - \
	--url "$url"
[ -z "${VPN_EVENT+x}" ]          || set -- "$@" --data-urlencode "VPN_EVENT=$VPN_EVENT"
[ -z "${VPN_EVENT_ID+x}" ]       || set -- "$@" --data-urlencode "VPN_EVENT_ID=$VPN_EVENT_ID"
[ -z "${VPN_NODE_NAME+x}" ]      || set -- "$@" --data-urlencode "VPN_NODE_NAME=$VPN_NODE_NAME"
[ -z "${VPN_REASON+x}" ]         || set -- "$@" --data-urlencode "VPN_REASON=$VPN_REASON"
[ -z "${VPN_USER_ID+x}" ]        || set -- "$@" --data-urlencode "VPN_USER_ID=$VPN_USER_ID"
[ -z "${VPN_PROFILE_ID+x}" ]     || set -- "$@" --data-urlencode "VPN_PROFILE_ID=$VPN_PROFILE_ID"
[ -z "${VPN_PROTO+x}" ]          || set -- "$@" --data-urlencode "VPN_PROTO=$VPN_PROTO"
[ -z "${VPN_CONNECTION_ID+x}" ]  || set -- "$@" --data-urlencode "VPN_CONNECTION_ID=$VPN_CONNECTION_ID"
[ -z "${VPN_IP_FOUR+x}" ]        || set -- "$@" --data-urlencode "VPN_IP_FOUR=$VPN_IP_FOUR"
[ -z "${VPN_IP_SIX+x}" ]         || set -- "$@" --data-urlencode "VPN_IP_SIX=$VPN_IP_SIX"
[ -z "${VPN_ORIGINATING_IP+x}" ] || set -- "$@" --data-urlencode "VPN_ORIGINATING_IP=$VPN_ORIGINATING_IP"
[ -z "${VPN_BYTES_IN+x}" ]       || set -- "$@" --data-urlencode "VPN_BYTES_IN=$VPN_BYTES_IN"
[ -z "${VPN_BYTES_OUT+x}" ]      || set -- "$@" --data-urlencode "VPN_BYTES_OUT=$VPN_BYTES_OUT"
[ -z "${VPN_INTERFACE+x}" ]      || set -- "$@" --data-urlencode "VPN_INTERFACE=$VPN_INTERFACE"
[ -z "${VPN_EXPIRES_AT+x}" ]     || set -- "$@" --data-urlencode "VPN_EXPIRES_AT=$VPN_EXPIRES_AT"

# curl reads extra options from stdin (--config -): only the token header.
if [ -n "${WGKEEPER_NOTIFY_TOKEN:-}" ]; then
	printf 'header = "Authorization: Bearer %s"\n' "$WGKEEPER_NOTIFY_TOKEN"
fi | curl "$@" >/dev/null
