package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/skip2/go-qrcode"

	"github.com/wgkeeper/wgkeeper/api"
	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/internal/humanfmt"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// now is the clock of human output (relative times); tests fix it.
var now = time.Now

// withParts runs fn with the parts open, logging warnings and errors to
// stderr.
func (e *env) withParts(fn func(p *parts) error) error {
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := e.openParts(log)
	if err != nil {
		return err
	}
	defer p.close()
	return fn(p)
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdPeer(e *env, args []string) error {
	if len(args) == 0 {
		return usagef("peer needs a subcommand: add, remove, revoke, extend or list (peer -h for help)")
	}
	if args[0] == "-h" || args[0] == "help" {
		fmt.Fprintln(e.stdout, "usage: wgkeeper [-config FILE] peer add|remove|revoke|extend|list [flags]\n\nsubcommands:\n  add      create a config and print it as a wg-quick file\n  remove   remove one config by public key\n  revoke   remove every config of a user\n  extend   change the expiry of a config, or of all of a user's\n  list     list configs\n\nexample:\n  wgkeeper peer add -user alice -profile default -expires 30d")
		return nil
	}
	switch args[0] {
	case "add":
		return cmdPeerAdd(e, args[1:])
	case "remove":
		return cmdPeerRemove(e, args[1:])
	case "revoke":
		return cmdPeerRevoke(e, args[1:])
	case "extend":
		return cmdPeerExtend(e, args[1:])
	case "list":
		return cmdPeerList(e, args[1:])
	}
	return usagef("unknown peer subcommand %q: want add, remove, revoke, extend or list", args[0])
}

// parseExpiry reads -expires: a duration (90d, 12h) or an RFC 3339 time.
func parseExpiry(s string) (at time.Time, in time.Duration, err error) {
	if s == "" {
		return time.Time{}, 0, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, 0, nil
	}
	d, err := config.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, 0, usagef("-expires %q: want a duration such as 90d or 12h, or an RFC 3339 time", s)
	}
	return time.Time{}, d, nil
}

func cmdPeerAdd(e *env, args []string) error {
	fs := newFlags("peer add")
	user := fs.String("user", "", "owner of the config (required)")
	profile := fs.String("profile", "", "profile id (required)")
	pubKey := fs.String("public-key", "", "the client's public key; empty = generate a key pair (the private key is printed once, never stored)")
	expires := fs.String("expires", "", "lifetime (90d, 12h) or an RFC 3339 time; empty = the profile's default")
	name := fs.String("name", "", "display name")
	origIP := fs.String("originating-ip", "", "the client's address as the portal saw it")
	qr := fs.Bool("qr", false, "also print the config as a QR code for phone clients")
	asJSON := fs.Bool("json", false, "print JSON (exactly the answer of POST /v1/peers)")
	if err := parseFlags(e, fs, args, "peer add",
		"Create a config: run the connect script, add the peer to the device and\nprint the wg-quick client config.",
		"wgkeeper peer add -user alice -profile default -expires 30d -qr"); err != nil {
		return err
	}
	if *user == "" || *profile == "" {
		return usagef("peer add needs -user and -profile")
	}
	if *qr && *asJSON {
		return usagef("-qr and -json do not go together")
	}
	req := reconcile.CreateRequest{UserID: *user, ProfileID: *profile, DisplayName: *name}
	if *pubKey != "" {
		k, err := reconcile.ParseKey(*pubKey)
		if err != nil {
			return usagef("-public-key: %v", err)
		}
		req.PublicKey = &k
	}
	var err error
	if req.ExpiresAt, req.ExpiresIn, err = parseExpiry(*expires); err != nil {
		return err
	}
	if *origIP != "" {
		a, err := netip.ParseAddr(*origIP)
		if err != nil {
			return usagef("-originating-ip %q is not an IP address", *origIP)
		}
		req.OriginatingIP = a.Unmap()
	}
	return e.withParts(func(p *parts) error {
		c, err := p.engine.Create(e.ctx, req)
		if err != nil {
			var inv *reconcile.InvalidError
			if errors.As(err, &inv) {
				return usagef("%v", err)
			}
			return err
		}
		if c.Existing {
			fmt.Fprintln(e.stderr, "wgkeeper: this config already exists; printed again without its private key")
		}
		if *asJSON {
			return writeJSONOut(e.stdout, api.CreateView(c))
		}
		conf := c.Client.WGQuick()
		fmt.Fprint(e.stdout, conf)
		if *qr {
			q, err := qrcode.New(conf, qrcode.Low)
			if err != nil {
				return fmt.Errorf("QR code: %w", err)
			}
			fmt.Fprintln(e.stdout)
			fmt.Fprint(e.stdout, q.ToSmallString(false))
		}
		return nil
	})
}

func cmdPeerRemove(e *env, args []string) error {
	fs := newFlags("peer remove")
	asJSON := fs.Bool("json", false, "print JSON (exactly the answer of DELETE /v1/peers/{public_key})")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(e.stdout, "usage: wgkeeper [-config FILE] peer remove [-json] KEY\n\nRemove one config: D event, peer off the device, disconnect script.\n\nexample:\n  wgkeeper peer remove 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg='")
			return flag.ErrHelp
		}
		return usagef("%v", err)
	}
	if fs.NArg() != 1 {
		return usagef("peer remove takes one public key")
	}
	k, err := reconcile.ParseKey(fs.Arg(0))
	if err != nil {
		return usagef("%v", err)
	}
	return e.withParts(func(p *parts) error {
		r, err := p.engine.Delete(e.ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no config has the public key %s", k)
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSONOut(e.stdout, api.RemovedView(r))
		}
		printRemoved(e.stdout, r)
		return nil
	})
}

func printRemoved(w io.Writer, r reconcile.Removed) {
	for _, ev := range r.Events {
		fmt.Fprintf(w, "removed %s (user %s, %s, event %d)\n", ev.PublicKey, ev.UserID, ev.Reason, ev.ID)
	}
	if n := len(r.Events) - r.Delivery.Done; n > 0 {
		fmt.Fprintf(w, "%d disconnect script run(s) failed and will be retried; see `wgkeeper events -status pending`\n", n)
	}
	for iface, err := range r.DeviceErrs {
		fmt.Fprintf(w, "warning: %s not updated (the next reconcile removes the peers): %v\n", iface, err)
	}
}

func cmdPeerRevoke(e *env, args []string) error {
	fs := newFlags("peer revoke")
	user := fs.String("user", "", "the user whose configs are all removed (required)")
	asJSON := fs.Bool("json", false, "print JSON (exactly the answer of DELETE /v1/users/{user_id}/peers)")
	if err := parseFlags(e, fs, args, "peer revoke", "Remove every config of a user (reason revoked).", "wgkeeper peer revoke -user alice"); err != nil {
		return err
	}
	if *user == "" {
		return usagef("peer revoke needs -user")
	}
	if err := reconcile.ValidateUserID(*user); err != nil {
		return usagef("%v", err)
	}
	return e.withParts(func(p *parts) error {
		r, err := p.engine.RevokeUser(e.ctx, *user)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSONOut(e.stdout, api.RemovedView(r))
		}
		printRemoved(e.stdout, r)
		fmt.Fprintf(e.stdout, "revoked %d config(s) of %s\n", len(r.Events), *user)
		return nil
	})
}

func cmdPeerList(e *env, args []string) error {
	fs := newFlags("peer list")
	user := fs.String("user", "", "only this user's configs")
	profile := fs.String("profile", "", "only this profile's configs")
	iface := fs.String("interface", "", "only the configs on this interface")
	state := fs.String("state", "", "only configs in this state: active or pending")
	limit := fs.Int("limit", 0, "at most this many (0 = all)")
	asJSON := fs.Bool("json", false, "print JSON (exactly the answer of GET /v1/peers), with each config's live state")
	if err := parseFlags(e, fs, args, "peer list", "List configs from the store.", "wgkeeper peer list -user alice -json"); err != nil {
		return err
	}
	f := store.PeerFilter{UserID: *user, ProfileID: *profile, Interface: *iface, State: store.State(*state), Limit: *limit}
	switch f.State {
	case "", store.StateActive, store.StatePending:
	default:
		return usagef("-state %q: want active or pending", *state)
	}
	if *limit < 0 {
		return usagef("-limit must not be negative")
	}
	if *user != "" {
		if err := reconcile.ValidateUserID(*user); err != nil {
			return usagef("-user: %v", err)
		}
	}
	return e.withStore(func(cfg *config.Config, st store.Store) error {
		if *asJSON {
			// The live fields need the devices; an interface that cannot
			// be read is named in device_errors, as by the API.
			dev, err := wg.NewClient()
			if err != nil {
				return fmt.Errorf("open WireGuard control: %w", err)
			}
			defer dev.Close()
			out, err := api.Source{Store: st, Read: dev.Read, Online: reconcile.OnlineRule(cfg.Sessions), Now: now()}.Peers(e.ctx, f)
			if err != nil {
				return err
			}
			return writeJSONOut(e.stdout, out)
		}
		peers, err := st.ListPeers(e.ctx, f)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PUBLIC KEY\tUSER\tPROFILE\tIPV4\tIPV6\tSTATE\tCREATED\tEXPIRES")
		t := now()
		for _, p := range peers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.PublicKey, p.UserID, p.ProfileID, addrOr(p.IPv4), addrOr(p.IPv6),
				p.State, humanfmt.Ago(t, p.CreatedAt), humanfmt.Until(t, p.ExpiresAt))
		}
		return tw.Flush()
	})
}

// withStore opens only the config and the store, with no device, script
// runner or engine: for the commands that read the store, and for migrate.
// The store is closed when fn returns.
func (e *env) withStore(fn func(cfg *config.Config, st store.Store) error) error {
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	st, err := e.openStore(cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(cfg, st)
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func addrOr(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func joinNonEmpty(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" && p != "-" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}
