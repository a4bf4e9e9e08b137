package hooks

// Linux only: O_PATH, pipe2(2), Pdeathsig and /proc.
import _ "github.com/wgkeeper/wgkeeper/internal/linuxonly"
