package tmpfs

// Linux only: mount(2).
import _ "github.com/wgkeeper/wgkeeper/internal/linuxonly"
