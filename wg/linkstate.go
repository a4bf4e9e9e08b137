package wg

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"syscall"
)

// LinkState is what the system says about an interface without reading its
// WireGuard device: the kernel link, over netlink, and the UAPI socket of a
// userspace implementation. Getting it costs one link lookup, one address
// dump and one stat: nothing grows with the number of peers.
type LinkState struct {
	// Exists is true when a kernel link has the name: a kernel WireGuard
	// link, or the TUN of a userspace implementation. A userspace device on
	// a netstack has a socket and no link.
	Exists bool
	Index  int    // ifindex; 0 when no link
	Kind   string // netlink link type: "wireguard", "tuntap", …
	Up     bool   // administratively up (IFF_UP)
	MTU    int
	// Addresses on the link with their prefix length; IPv6 link-local ones
	// are left out.
	Addresses []netip.Prefix
	// Socket identifies the UAPI socket SocketDir/NAME.sock (zero: none). A
	// new socket, as after a restart of the implementation, has a new
	// identity.
	Socket SocketID
}

// SocketID identifies one socket file: device, inode and modification time.
type SocketID struct {
	Dev, Ino uint64
	Mtime    int64 // ns
}

// Present reports whether anything of the interface exists: a link or a
// UAPI socket.
func (s LinkState) Present() bool { return s.Exists || s.Socket != (SocketID{}) }

// Same reports whether s and o describe the same life of the interface:
// the same link index and the same socket. An interface that was deleted
// and created again is not the same.
func (s LinkState) Same(o LinkState) bool {
	return s.Index == o.Index && s.Socket == o.Socket && s.Present()
}

// HasAddr reports whether the link carries the address a (with its prefix
// length).
func (s LinkState) HasAddr(a netip.Prefix) bool {
	for _, h := range s.Addresses {
		if h == a {
			return true
		}
	}
	return false
}

// Link returns the state of the interface's link and UAPI socket. A missing
// interface is not an error: Present reports false. Errors are failures to
// ask (netlink refused, permission).
func (c *Client) Link(ctx context.Context, name string) (LinkState, error) {
	if err := CheckName(name); err != nil {
		return LinkState{}, err
	}
	if err := ctx.Err(); err != nil {
		return LinkState{}, err
	}
	st, err := inspectLink(name)
	if err != nil {
		return LinkState{}, fmt.Errorf("inspect %s: %w", name, err)
	}
	st.Socket, err = socketID(socketPath(name))
	if err != nil {
		return LinkState{}, fmt.Errorf("inspect %s: %w", name, err)
	}
	return st, nil
}

func socketID(path string) (SocketID, error) {
	fi, err := os.Stat(path)
	if os.IsNotExist(err) {
		return SocketID{}, nil
	}
	if err != nil {
		return SocketID{}, err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return SocketID{}, nil
	}
	id := SocketID{Mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.Dev, id.Ino = uint64(st.Dev), uint64(st.Ino)
	}
	return id, nil
}
