//go:build !linux

package linuxonly

// The build stops here on purpose, naming the reason.
var _ = wgkeeper_builds_on_Linux_only
