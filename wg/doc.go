// Package wg is wgkeeper's device layer: the only package that talks to
// WireGuard itself, through wgctrl and an embedded wireguard-go.
//
// It owns:
//
//   - Read: one wgctrl read of an interface, converted to plain domain values
//     (wgtypes.Key, netip.Prefix, time.Time).
//   - MakePlan: a pure function from the wanted peers and the peers on the
//     device to the smallest set of changes (adds, updates of drifted fields,
//     removals), in a deterministic order.
//   - Apply: one incremental wgctrl write of a plan. ReplacePeers is never
//     used and unchanged peers are never written, so live sessions are never
//     reset. SetDevice writes the private key and listen port, apart from
//     the peers, only when they differ.
//   - Link and WatchLinks: the cheap look at an interface (netlink link,
//     flags, MTU, addresses, UAPI socket; no peers) and notification of
//     its link changes, so a deleted or downed interface is noticed at once.
//   - Up, Ensure and Close: the interfaces wgkeeper owns, either a kernel
//     WireGuard link created over netlink ("kernel") or an embedded
//     wireguard-go device on a real TUN serving the standard UAPI socket
//     ("userspace"), recreated and set up again when the system took them
//     away.
//
// It runs on Linux only (see internal/linuxonly).
//
// It knows nothing of the database, of users or of scripts: callers decide
// what the wanted peers are.
package wg
