// Package cli implements wgkeeper's subcommands: flag parsing, human and JSON
// output, and the wiring of config, store, device, hooks and the lifecycle
// engine. Logic lives in those packages; cli only connects them.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/wgkeeper/wgkeeper/reconcile"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Version is set at build time with -ldflags "-X github.com/wgkeeper/wgkeeper/cli.Version=...".
var Version = "dev"

// DefaultConfig is the config file used when -config is not given.
const DefaultConfig = "/etc/wgkeeper/wgkeeper.toml"

// usageError marks an error as the caller's mistake: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// exitStatus ends a command with this exit code and no further message: the
// command has printed what it had to say (hooks test passes on the
// script's status).
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// env is what every command gets.
type env struct {
	ctx        context.Context
	stdout     io.Writer
	stderr     io.Writer
	configPath string
	// createDB is set by the commands that may create a missing database
	// and check it with quick_check: migrate and daemon.
	createDB bool
}

type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
}

func commands() []command {
	return []command{
		{"daemon", "run: own interfaces, API, scheduler, expiry and delivery", cmdDaemon},
		{"housekeeping", "run one housekeeping (the systemd timer's job)", cmdHousekeeping},
		{"reconcile", "make the devices match the store (-dry-run: print the plan)", cmdReconcile},
		{"peer", "add, remove, revoke or list configs", cmdPeer},
		{"status", "the store next to the live devices", cmdStatus},
		{"events", "the event log; events retry ID|-failed", cmdEvents},
		{"hooks", "hooks test: run the script once with a sample event", cmdHooks},
		{"log", "who held an address at a time; a user's configs", cmdLog},
		{"migrate", "create or upgrade the database and print its schema version", cmdMigrate},
		{"version", "print the version", cmdVersion},
	}
}

const usageLine = "usage: wgkeeper [-config FILE] COMMAND [ARGS]"

func printUsage(w io.Writer) {
	fmt.Fprintln(w, usageLine)
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\n-config defaults to %s\n", DefaultConfig)
}

// Run runs wgkeeper with args (without the program name) and returns the
// process exit code: 0 ok, 1 failure, 2 usage.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wgkeeper", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", DefaultConfig, "config file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return ExitOK
		}
		fmt.Fprintf(stderr, "wgkeeper: %v\n%s\n", err, usageLine)
		return ExitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintf(stderr, "wgkeeper: no command given\n%s\n", usageLine)
		return ExitUsage
	}
	if rest[0] == "help" {
		printUsage(stdout)
		return ExitOK
	}
	// What a command changes is recorded as done by "cli:UID"; the daemon
	// replaces it with its own actor.
	ctx = reconcile.WithActor(ctx, reconcile.CLIActor(os.Getuid()))
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr, configPath: *configPath}
	for _, c := range commands() {
		if c.name != rest[0] {
			continue
		}
		err := c.run(e, rest[1:])
		if err == nil {
			return ExitOK
		}
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		var es exitStatus
		if errors.As(err, &es) {
			return int(es)
		}
		fmt.Fprintf(stderr, "wgkeeper %s: %v\n", c.name, err)
		if hint := unavailableHint(err); hint != "" {
			fmt.Fprintf(stderr, "wgkeeper %s: %s\n", c.name, hint)
		}
		var ue usageError
		if errors.As(err, &ue) {
			return ExitUsage
		}
		return ExitFailure
	}
	fmt.Fprintf(stderr, "wgkeeper: unknown command %q\n%s\n", rest[0], usageLine)
	return ExitUsage
}

func cmdVersion(e *env, args []string) error {
	if err := parseFlags(e, newFlags("version"), args, "version", "Print the version.", "wgkeeper version"); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("version takes no arguments")
	}
	fmt.Fprintf(e.stdout, "wgkeeper %s\n", Version)
	return nil
}
