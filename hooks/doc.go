// Package hooks runs the operator's connect/disconnect script, the
// eduVPN-compatible hook of wgkeeper.
//
// It owns everything about one script run: the exact environment the script
// sees (PATH, the configured pass-through names, and the VPN_* variables of
// one event), the trust check of the script's whole path (at startup and
// before every run) and the execution of exactly the file checked, the
// supervisor that ties each run's process group to wgkeeper's life, the
// process group, the timeout and its escalation from SIGTERM to SIGKILL,
// the bounded capture of stdout and stderr, the bound on concurrent runs
// and on the wait for one, and the log line of every run. It knows nothing
// of the store or of WireGuard devices: callers hand it the values of one
// event and get back a Result saying what happened.
//
// Importing it installs a check in its init: a process started as the
// hook supervisor (this program re-executed once per process, see
// supervise.go) does that job and exits there, before the program's main
// runs. Close stops the supervisor.
//
// The script is executed directly, never through a shell, with no arguments,
// stdin from /dev/null and "/" as its working directory. Values reach it only
// through the environment, verbatim, so nothing a portal sends can be
// interpreted as shell syntax by wgkeeper.
package hooks
