package cli

import (
	"net"
	"os"
)

// sdNotify sends a state line to systemd's notify socket ($NOTIFY_SOCKET)
// when wgkeeper runs as a Type=notify service; elsewhere it does nothing.
// Errors are ignored: notification is advisory.
func sdNotify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' { // abstract socket
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = c.Write([]byte(state))
}
