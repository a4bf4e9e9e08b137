package wg

// Linux only: netlink links, a TUN device and the UAPI socket directory.
import _ "github.com/wgkeeper/wgkeeper/internal/linuxonly"
