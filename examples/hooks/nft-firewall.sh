#!/bin/sh
# nft-firewall.sh - wgkeeper hook that keeps nftables sets of the addresses
# of connected peers: on a connect (VPN_EVENT=C) it adds the peer's IPv4 and
# IPv6 address to the sets allowed4 and allowed6 of the table "inet wgkeeper",
# on a disconnect (VPN_EVENT=D) it removes them. Your rules decide what the
# sets mean; the example below drops forwarded traffic from VPN addresses that
# are not in them, so a config works only while wgkeeper knows it.
#
# Install, as root:
#
#   nft add table inet wgkeeper
#   nft add set inet wgkeeper allowed4 '{ type ipv4_addr; }'
#   nft add set inet wgkeeper allowed6 '{ type ipv6_addr; }'
#   nft add chain inet wgkeeper forward '{ type filter hook forward priority 0; policy accept; }'
#   nft add rule inet wgkeeper forward iifname "wg0" ip saddr != @allowed4 drop
#   nft add rule inet wgkeeper forward iifname "wg0" ip6 saddr != @allowed6 drop
#   install -o root -g root -m 0755 nft-firewall.sh /usr/local/bin/wgkeeper-nft
#
# then in wgkeeper.toml:
#
#   [hooks]
#   script = "/usr/local/bin/wgkeeper-nft"
#
# Make the table survive reboots by adding it to /etc/nftables.conf (the sets
# start empty; `wgkeeper reconcile` does not re-run connect scripts, so after a
# reboot fill them from `wgkeeper peer list -json` or keep the sets' contents
# with `nft list table inet wgkeeper > /etc/nftables.d/wgkeeper.nft`).
#
# The script must run as root (wgkeeper usually does). The table name can be
# changed with WGKEEPER_NFT_TABLE, passed through with hooks.pass_env.
# Adding an address that is already there and removing one that is already
# gone both succeed, so a repeated delivery of the same event is harmless.
set -eu

table=${WGKEEPER_NFT_TABLE:-wgkeeper}

# check_addr VALUE refuses anything but the characters of an IP address.
check_addr() {
	case $1 in
	*[!0-9A-Fa-f.:]*)
		echo "nft-firewall.sh: refusing address \"$1\"" >&2
		exit 2
		;;
	esac
}

# element OP SET ADDR adds or deletes one address.
element() {
	[ -n "$3" ] || return 0
	check_addr "$3"
	if [ "$1" = delete ] && ! nft get element inet "$table" "$2" "{ $3 }" >/dev/null 2>&1; then
		return 0 # already gone
	fi
	nft "$1" element inet "$table" "$2" "{ $3 }"
}

case ${VPN_EVENT:-} in
C) op=add ;;
D) op=delete ;;
*)
	echo "nft-firewall.sh: unknown VPN_EVENT \"${VPN_EVENT:-}\"" >&2
	exit 2
	;;
esac

element "$op" allowed4 "${VPN_IP_FOUR:-}"
element "$op" allowed6 "${VPN_IP_SIX:-}"
