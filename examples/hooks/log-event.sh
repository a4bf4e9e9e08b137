#!/bin/sh
# log-event.sh - wgkeeper hook that appends one line per event to a log file.
#
# The line holds a UTC timestamp and every VPN_* variable wgkeeper set for the
# event, as NAME="value" pairs. Newlines, carriage returns and tabs in values
# become spaces, and " and \ are escaped with \, so each event is exactly one
# line that is easy to grep or parse.
#
# Log file: $WGKEEPER_EVENT_LOG when set, otherwise events.log in the
# directory of this script, so it works unchanged from a fresh checkout.
# (wgkeeper runs the very file it checked, as /proc/self/fd/4: $0 is that
# path, and `readlink -f "$0"` the script's real one.)
# In production set it, and pass it through to the script:
#
#   [hooks]
#   script   = "/usr/local/bin/wgkeeper-log-event"
#   pass_env = ["WGKEEPER_EVENT_LOG"]
#
# and start wgkeeper with WGKEEPER_EVENT_LOG=/var/log/wgkeeper-events.log.
#
# A failed write exits non-zero: a connect is then rejected and a disconnect
# retried, so the log never silently misses an event.
#
# Install: install -o root -g root -m 0755 log-event.sh /usr/local/bin/wgkeeper-log-event
set -eu

log=${WGKEEPER_EVENT_LOG:-$(dirname "$(readlink -f "$0")")/events.log}

line=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# field NAME ISSET VALUE appends NAME="VALUE" when ISSET is not empty.
field() {
	if [ -n "$2" ]; then
		v=$(printf '%s' "$3" | tr '\n\r\t' '   ' | sed 's/[\\"]/\\&/g')
		line="$line $1=\"$v\""
	fi
}

field VPN_EVENT          "${VPN_EVENT+x}"          "${VPN_EVENT-}"
field VPN_EVENT_ID       "${VPN_EVENT_ID+x}"       "${VPN_EVENT_ID-}"
field VPN_REASON         "${VPN_REASON+x}"         "${VPN_REASON-}"
field VPN_USER_ID        "${VPN_USER_ID+x}"        "${VPN_USER_ID-}"
field VPN_PROFILE_ID     "${VPN_PROFILE_ID+x}"     "${VPN_PROFILE_ID-}"
field VPN_PROTO          "${VPN_PROTO+x}"          "${VPN_PROTO-}"
field VPN_CONNECTION_ID  "${VPN_CONNECTION_ID+x}"  "${VPN_CONNECTION_ID-}"
field VPN_IP_FOUR        "${VPN_IP_FOUR+x}"        "${VPN_IP_FOUR-}"
field VPN_IP_SIX         "${VPN_IP_SIX+x}"         "${VPN_IP_SIX-}"
field VPN_ORIGINATING_IP "${VPN_ORIGINATING_IP+x}" "${VPN_ORIGINATING_IP-}"
field VPN_BYTES_IN       "${VPN_BYTES_IN+x}"       "${VPN_BYTES_IN-}"
field VPN_BYTES_OUT      "${VPN_BYTES_OUT+x}"      "${VPN_BYTES_OUT-}"
field VPN_INTERFACE      "${VPN_INTERFACE+x}"      "${VPN_INTERFACE-}"
field VPN_EXPIRES_AT     "${VPN_EXPIRES_AT+x}"     "${VPN_EXPIRES_AT-}"
field VPN_TEST           "${VPN_TEST+x}"           "${VPN_TEST-}"

# One write in append mode, so concurrent runs never interleave within a line.
printf '%s\n' "$line" >>"$log"
