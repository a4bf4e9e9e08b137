package reconcile

// Linux only: flock(2) lock files and owner files.
import _ "github.com/wgkeeper/wgkeeper/internal/linuxonly"
