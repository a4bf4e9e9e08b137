package cli

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/reconcile"
)

// sampleOriginatingIP is the client address a sample event carries: an
// address of the documentation range (RFC 5737), never a real client.
var sampleOriginatingIP = netip.MustParseAddr("192.0.2.10")

func cmdHooks(e *env, args []string) error {
	if len(args) == 0 {
		return usagef("hooks needs a subcommand: test (hooks -h for help)")
	}
	switch args[0] {
	case "-h", "help":
		fmt.Fprintln(e.stdout, "usage: wgkeeper [-config FILE] hooks test [flags]\n\nsubcommands:\n  test     run the configured script once with a sample event\n\nexample:\n  wgkeeper hooks test -event D -user alice")
		return nil
	case "test":
		return cmdHooksTest(e, args[1:])
	}
	return usagef("unknown hooks subcommand %q: want test", args[0])
}

// cmdHooksTest runs hooks.script once through the same runner the daemon
// uses, with a sample event marked VPN_TEST=1, and exits with the script's
// status: 128+N when a signal ended it, 1 when it could not run or timed out.
func cmdHooksTest(e *env, args []string) error {
	fs := newFlags("hooks test")
	event := fs.String("event", "C", "C (connect) or D (disconnect)")
	user := fs.String("user", "test-user", "VPN_USER_ID of the sample event")
	profile := fs.String("profile", "", "VPN_PROFILE_ID of the sample event; empty = the first profile of the config")
	if err := parseFlags(e, fs, args, "hooks test",
		"Run the configured script once, as wgkeeper runs it (same environment\nrules, timeout and checks), with a sample event marked VPN_TEST=1: a\nfresh public key, the profile's last addresses, an originating address\nfrom 192.0.2.0/24 and, for D, sample byte counters. Prints the\nenvironment, the exit status, the time taken and stdout/stderr, and exits\nwith the script's status. Nothing is written to the store or a device.",
		"wgkeeper -config /etc/wgkeeper/wgkeeper.toml hooks test -event D -user alice"); err != nil {
		return err
	}
	if *event != hooks.EventConnect && *event != hooks.EventDisconnect {
		return usagef("-event %q: want C or D", *event)
	}
	if err := reconcile.ValidateUserID(*user); err != nil {
		return usagef("-user: %v", err)
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	if cfg.Hooks.Script == "" {
		return fmt.Errorf("no hooks.script in %s: nothing to test", e.configPath)
	}
	prof, err := sampleProfile(cfg, *profile)
	if err != nil {
		return err
	}
	v, err := sampleVars(prof, *event, *user, time.Now())
	if err != nil {
		return err
	}
	v.NodeName = cfg.Node
	runner, err := hooks.New(hooks.Config{
		Script:      cfg.Hooks.Script,
		Timeout:     cfg.Hooks.Timeout,
		Concurrency: 1,
		PassEnv:     cfg.Hooks.PassEnv,
	})
	if err != nil {
		return fmt.Errorf("hooks.script: %w", err)
	}
	vpn, err := v.Env()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "running %s with:\n", cfg.Hooks.Script)
	for _, kv := range vpn {
		fmt.Fprintf(e.stdout, "  %s\n", kv)
	}
	res := runner.Run(e.ctx, v)
	code := 0
	switch {
	case res.Err != nil:
		fmt.Fprintf(e.stdout, "could not run the script (after %s): %v\n", res.Duration.Round(time.Millisecond), res.Err)
		code = ExitFailure
	case res.TimedOut:
		fmt.Fprintf(e.stdout, "timed out after %s (hooks.timeout %s): killed\n", res.Duration.Round(time.Millisecond), cfg.Hooks.Timeout)
		code = ExitFailure
	case res.Signal != 0:
		fmt.Fprintf(e.stdout, "killed by signal %d (%s) after %s\n", int(res.Signal), res.Signal, res.Duration.Round(time.Millisecond))
		code = 128 + int(res.Signal)
	default:
		fmt.Fprintf(e.stdout, "exit status %d in %s\n", res.ExitCode, res.Duration.Round(time.Millisecond))
		code = res.ExitCode
	}
	printOutput(e, "stdout", res.Stdout, res.StdoutDropped)
	printOutput(e, "stderr", res.Stderr, res.StderrDropped)
	if res.OK() && len(bytes.TrimSpace(res.Stderr)) > 0 {
		fmt.Fprintln(e.stdout, "warning: the script exited 0 but wrote to stderr; the daemon logs this at WARN. "+
			"A #!/bin/sh script runs under dash on Debian, which rejects bash syntax such as [ \"$VPN_EVENT\" == \"C\" ] (use =).")
	}
	if code != 0 {
		return exitStatus(code)
	}
	return nil
}

func printOutput(e *env, name string, out []byte, dropped int64) {
	out = bytes.TrimRight(out, "\n")
	if len(out) == 0 && dropped == 0 {
		fmt.Fprintf(e.stdout, "%s: (empty)\n", name)
		return
	}
	fmt.Fprintf(e.stdout, "%s:\n", name)
	for _, line := range strings.Split(strings.ToValidUTF8(string(out), "\uFFFD"), "\n") {
		fmt.Fprintf(e.stdout, "  | %s\n", line)
	}
	if dropped > 0 {
		fmt.Fprintf(e.stdout, "  (%d more bytes dropped)\n", dropped)
	}
}

// sampleProfile returns the profile named id, or the config's first.
func sampleProfile(cfg *config.Config, id string) (config.Profile, error) {
	if id == "" {
		if len(cfg.Profiles) == 0 {
			return config.Profile{}, usagef("the config has no profile: give -profile")
		}
		return cfg.Profiles[0], nil
	}
	p, ok := cfg.Profile(id)
	if !ok {
		return config.Profile{}, usagef("-profile %q: no such profile in the config", id)
	}
	return p, nil
}

// sampleVars builds the sample event: a fresh public key and the profile's
// last host addresses, the least likely to belong to a real config.
func sampleVars(prof config.Profile, event, user string, now time.Time) (hooks.Vars, error) {
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return hooks.Vars{}, fmt.Errorf("generate a sample key: %w", err)
	}
	v := hooks.Vars{
		Event:         event,
		UserID:        user,
		ProfileID:     prof.ID,
		ConnectionID:  priv.PublicKey().String(),
		OriginatingIP: sampleOriginatingIP,
		Reason:        "created",
		Interface:     prof.Interface,
		Test:          true,
	}
	if n := prof.Capacity(); n > 0 {
		v.IPFour, v.IPSix, _ = prof.HostAddrs(n - 1)
	}
	if prof.Expiry > 0 {
		v.ExpiresAt = now.Add(prof.Expiry).Truncate(time.Second)
	}
	if event == hooks.EventDisconnect {
		v.Reason = "deleted"
		v.BytesIn, v.BytesOut = 1234567, 7654321
	}
	return v, nil
}
