package sqlite

// Linux only: the errno of a full or read-only file system, device and inode of the file.
import _ "github.com/wgkeeper/wgkeeper/internal/linuxonly"
