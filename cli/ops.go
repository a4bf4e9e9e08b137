package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api"
	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/internal/humanfmt"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
)

const reconcileHelp = "Make the interfaces match the store (all, or those named): add missing\npeers (no C event), repair drift, remove orphans. Prints the plan like a diff:\n  + added   ~ updated (what drifted)   - removed   = orphan kept\n  x orphan not removed (blocked)   ! would expire (dry run)\nMore orphans than an interface's orphan_removal_limit block their removal:\nnone are removed and the command fails, until -force IFACE confirms the\nstore is right."

func cmdReconcile(e *env, args []string) error {
	fs := newFlags("reconcile")
	dry := fs.Bool("dry-run", false, "print the plan and change nothing")
	force := fs.Bool("force", false, "remove the orphans of the named interfaces even above orphan_removal_limit")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(e.stdout, "usage: wgkeeper [-config FILE] reconcile [-dry-run] [-force] [-json] [IFACE...]\n\n%s\n\nexamples:\n  wgkeeper reconcile -dry-run\n  wgkeeper reconcile -force wg0\n\nflags:\n", reconcileHelp)
			fs.SetOutput(e.stdout)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
			return flag.ErrHelp
		}
		return usagef("%v", err)
	}
	names := fs.Args()
	if *force && len(names) == 0 {
		return usagef("-force needs the interfaces named: wgkeeper reconcile -force IFACE")
	}
	for _, n := range names {
		if strings.HasPrefix(n, "-") {
			return usagef("flags go before the interface names: %q", n)
		}
	}
	return e.withParts(func(p *parts) error {
		for _, n := range names {
			if _, ok := p.cfg.Interface(n); !ok {
				return usagef("interface %q is not in the config", n)
			}
		}
		var reports []reconcile.Report
		if len(names) == 0 {
			reports = p.engine.ReconcileAll(e.ctx, *dry)
		} else {
			for _, n := range names {
				reports = append(reports, p.engine.ReconcileWith(e.ctx, n, reconcile.ReconcileOptions{DryRun: *dry, Force: *force}))
			}
		}
		var failed []string
		for _, r := range reports {
			switch {
			case r.Err != nil:
				failed = append(failed, fmt.Sprintf("%s: %v", r.Interface, r.Err))
			case !r.DryRun && !r.Force && r.Orphans.Blocked:
				failed = append(failed, fmt.Sprintf("%s: %v", r.Interface, r.Orphans.Err()))
			}
		}
		if *asJSON {
			// The shape of GET /v1/plan; the failures go to stderr.
			if err := writeJSONOut(e.stdout, api.PlanOf(reports)); err != nil {
				return err
			}
		} else {
			for _, r := range reports {
				printPlan(e.stdout, r)
			}
		}
		if len(failed) > 0 {
			return errors.New(strings.Join(failed, "; "))
		}
		return nil
	})
}

func printPlan(w io.Writer, r reconcile.Report) {
	verb := "reconciled"
	if r.DryRun {
		verb = "plan"
	}
	if r.Err != nil {
		fmt.Fprintf(w, "%s %s: %v\n", verb, r.Interface, r.Err)
		return
	}
	fmt.Fprintf(w, "%s %s: %d to add, %d to update, %d to remove, %d orphans kept", verb, r.Interface,
		len(r.Plan.Add), len(r.Plan.Update), len(r.Plan.Remove), len(r.Plan.KeptOrphans))
	if r.DryRun {
		fmt.Fprintf(w, ", %d expiring", len(r.Expiring))
	}
	fmt.Fprintln(w)
	blocked := r.Orphans.Blocked && !r.Force
	switch {
	case blocked:
		fmt.Fprintf(w, "blocked: %d orphans, more than orphan_removal_limit %d: none removed\n  %s\n", r.Orphans.Orphans, r.Orphans.Limit, reconcile.ForceHint(r.Interface))
	case r.Orphans.Blocked:
		fmt.Fprintf(w, "forced: %d orphans removed above orphan_removal_limit %d\n", r.Orphans.Orphans, r.Orphans.Limit)
	}
	for _, a := range r.Plan.Add {
		fmt.Fprintf(w, "+ %s %s\n", a.PublicKey, prefixes(a.AllowedIPs))
	}
	for _, u := range r.Plan.Update {
		var what []string
		if u.AllowedIPs {
			what = append(what, "allowed-ips "+prefixes(u.Wanted.AllowedIPs))
		}
		if u.PresharedKey {
			what = append(what, "preshared-key")
		}
		if u.Keepalive {
			what = append(what, "keepalive")
		}
		fmt.Fprintf(w, "~ %s %s\n", u.Wanted.PublicKey, strings.Join(what, ", "))
	}
	for _, k := range r.Plan.Remove {
		fmt.Fprintf(w, "- %s\n", k)
	}
	kept := map[wgtypes.Key]reconcile.HeldOrphan{}
	for _, h := range r.Orphans.Held {
		kept[h.PublicKey] = h
	}
	for _, k := range r.Plan.KeptOrphans {
		if txt := kept[k].KeepsText(); txt != "" {
			fmt.Fprintf(w, "= %s orphan kept (keeps %s)\n", k, txt)
		} else {
			fmt.Fprintf(w, "= %s orphan kept\n", k)
		}
	}
	if blocked {
		for _, h := range r.Orphans.Held {
			fmt.Fprintf(w, "x %s orphan not removed (blocked) %s\n", h.PublicKey, prefixes(h.AllowedIPs))
		}
	}
	for _, p := range r.Expiring {
		fmt.Fprintf(w, "! %s expired %s (user %s)\n", p.PublicKey, p.ExpiresAt.UTC().Format(time.RFC3339), p.UserID)
	}
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func cmdHousekeeping(e *env, args []string) error {
	fs := newFlags("housekeeping")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(e, fs, args, "housekeeping",
		"Run one housekeeping: expire, clean stale pending configs, reconcile every\ninterface, deliver due events, prune old events. Waits while another run\n(the daemon's, or the timer's) is in progress. This is the job of\nwgkeeper-housekeeping.timer.",
		"wgkeeper -config /etc/wgkeeper/wgkeeper.toml housekeeping"); err != nil {
		return err
	}
	return e.withParts(func(p *parts) error {
		sum, err := p.engine.Housekeeping(e.ctx, true)
		if sum.StartedAt.IsZero() && err != nil {
			return err
		}
		if *asJSON {
			if werr := writeJSONOut(e.stdout, api.HousekeepingView(sum)); werr != nil {
				return werr
			}
		} else {
			fmt.Fprintf(e.stdout, "housekeeping in %s: %d expired, %d stale, %d delivered, %d retried, %d failed, %d pruned\n",
				sum.Duration.Round(time.Millisecond), sum.Expired, sum.Stale, sum.Delivery.Done, sum.Delivery.Retried, sum.Delivery.Failed, sum.Pruned)
			for _, r := range sum.Reports {
				if r.Err != nil {
					fmt.Fprintf(e.stdout, "  %s: %v\n", r.Interface, r.Err)
					continue
				}
				fmt.Fprintf(e.stdout, "  %s: %d added, %d updated, %d removed, %d orphans kept\n", r.Interface,
					r.Counts.Added, r.Counts.Updated, r.Counts.Removed, len(r.Plan.KeptOrphans))
				if r.Orphans.Blocked {
					fmt.Fprintf(e.stdout, "  %s: blocked: %d orphans, more than orphan_removal_limit %d: none removed\n", r.Interface, r.Orphans.Orphans, r.Orphans.Limit)
				}
			}
		}
		// A blocked interface needs the operator: fail, so a timer's
		// unit shows it.
		var blocked []error
		for _, r := range sum.Reports {
			if r.Err == nil && r.Orphans.Blocked {
				blocked = append(blocked, fmt.Errorf("%s: %w", r.Interface, r.Orphans.Err()))
			}
		}
		if len(blocked) > 0 {
			err = errors.Join(append([]error{err}, blocked...)...)
		}
		return err
	})
}

func cmdEvents(e *env, args []string) error {
	if len(args) > 0 && args[0] == "retry" {
		return cmdEventsRetry(e, args[1:])
	}
	fs := newFlags("events")
	status := fs.String("status", "", "only events with this status: running, pending, done or failed")
	kind := fs.String("event", "", "only events of this kind: C or D")
	user := fs.String("user", "", "only this user's events")
	limit := fs.Int("limit", 50, "at most this many, newest first (0 = all)")
	beforeID := fs.Int64("before-id", 0, "only events older than this id (the next page)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(e, fs, args, "events",
		"List connect (C) and disconnect (D) events, newest first, with their\ndelivery status. `events retry ID` or `events retry -failed` makes failed\nevents due again.",
		"wgkeeper events -status failed"); err != nil {
		return err
	}
	switch *status {
	case "", "running", "pending", "done", "failed":
	default:
		return usagef("-status %q: want running, pending, done or failed", *status)
	}
	switch *kind {
	case "", store.KindConnect, store.KindDisconnect:
	default:
		return usagef("-event %q: want C or D", *kind)
	}
	if *user != "" {
		if err := reconcile.ValidateUserID(*user); err != nil {
			return usagef("-user: %v", err)
		}
	}
	if *limit < 0 || *beforeID < 0 {
		return usagef("-limit and -before-id must not be negative")
	}
	f := store.EventFilter{Status: *status, Kind: *kind, UserID: *user, Limit: *limit, BeforeID: *beforeID}
	return e.withStore(func(_ *config.Config, st store.Store) error {
		if *asJSON {
			out, err := api.Source{Store: st}.Events(e.ctx, f)
			if err != nil {
				return err
			}
			return writeJSONOut(e.stdout, out)
		}
		evs, err := st.ListEvents(e.ctx, f)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tEV\tREASON\tSTATUS\tTRIES\tUSER\tKEY\tADDRESSES\tCREATED\tACTOR\tLEASE\tLAST ERROR")
		t := now()
		for _, ev := range evs {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.ID, ev.Kind, ev.Reason, ev.Status, ev.Attempts, ev.UserID,
				humanfmt.ShortKey(ev.PublicKey.String()), joinNonEmpty(addrText(ev.IPv4), addrText(ev.IPv6)), humanfmt.Ago(t, ev.CreatedAt), dash(ev.Actor), leaseText(t, ev), dash(ev.LastError))
		}
		return tw.Flush()
	})
}

// leaseText is who holds an event's lease and until when: "OWNER until
// TIME (in 2m)", "-" when it is not leased.
func leaseText(t time.Time, ev store.Event) string {
	if ev.LeaseOwner == "" {
		return "-"
	}
	if ev.LeaseUntil.IsZero() {
		return ev.LeaseOwner
	}
	return fmt.Sprintf("%s until %s (%s)", ev.LeaseOwner, ev.LeaseUntil.UTC().Format(time.RFC3339), humanfmt.Until(t, ev.LeaseUntil))
}

func cmdEventsRetry(e *env, args []string) error {
	fs := newFlags("events retry")
	all := fs.Bool("failed", false, "retry every failed event")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(e.stdout, "usage: wgkeeper [-config FILE] events retry ID | -failed\n\nMake a failed event due again (attempts start over).\n\nexample:\n  wgkeeper events retry -failed")
			return flag.ErrHelp
		}
		return usagef("%v", err)
	}
	if *all == (fs.NArg() == 1) || fs.NArg() > 1 {
		return usagef("events retry takes one event ID or -failed")
	}
	var id int64
	if !*all {
		n, err := strconv.ParseInt(fs.Arg(0), 10, 64)
		if err != nil || n <= 0 {
			return usagef("event ID %q is not a positive number", fs.Arg(0))
		}
		id = n
	}
	return e.withStore(func(_ *config.Config, st store.Store) error {
		if *all {
			n, err := st.RetryFailed(e.ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%d failed event(s) are due again\n", n)
			return nil
		}
		switch err := st.RetryEvent(e.ctx, id); {
		case errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("no event %d", id)
		case errors.Is(err, store.ErrConflict):
			return fmt.Errorf("event %d has not failed; only failed events can be retried", id)
		case err != nil:
			return err
		}
		fmt.Fprintf(e.stdout, "event %d is due again\n", id)
		return nil
	})
}

// parseAt reads -at: RFC 3339, or "2006-01-02 15:04[:05]" in UTC.
func parseAt(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, usagef("-at %q: want RFC 3339 or \"2006-01-02 15:04[:05]\" (UTC)", s)
}

func cmdLog(e *env, args []string) error {
	fs := newFlags("log")
	ip := fs.String("ip", "", "who held this address")
	at := fs.String("at", "", "at this time (RFC 3339 or \"2006-01-02 15:04\" UTC; default now)")
	user := fs.String("user", "", "a user's configs, past and present")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(e, fs, args, "log",
		"Answer from the event log who held an address at a time (-ip, -at), with\nthe endpoint of the session that covered that time, or list a user's\nconfigs past and present with their C and D times and their sessions\n(-user).",
		"wgkeeper log -ip 10.42.0.7 -at '2026-11-24 14:03'"); err != nil {
		return err
	}
	if (*ip == "") == (*user == "") {
		return usagef("log takes -ip IP [-at TIME] or -user U")
	}
	var addr netip.Addr
	when := now().UTC()
	if *ip != "" {
		a, err := netip.ParseAddr(*ip)
		if err != nil {
			return usagef("-ip %q is not an IP address", *ip)
		}
		addr = a.Unmap()
		if *at != "" {
			if when, err = parseAt(*at); err != nil {
				return err
			}
		}
	} else if *at != "" {
		return usagef("-at goes with -ip")
	}
	return e.withStore(func(_ *config.Config, st store.Store) error {
		var lg api.LogResponse
		var err error
		if *ip != "" {
			lg, err = api.LogOfAddr(e.ctx, st, addr, when)
		} else {
			lg, err = api.LogOfUser(e.ctx, st, *user)
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSONOut(e.stdout, lg) // GET /v1/log's answer
		}
		ss, cs := lg.Configs, lg.Clients
		if len(ss) == 0 {
			if *ip != "" {
				fmt.Fprintf(e.stdout, "nobody held %s at %s\n", addr, when.Format(time.RFC3339))
			} else {
				fmt.Fprintf(e.stdout, "no configs recorded for %s\n", *user)
			}
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tPROFILE\tKEY\tADDRESSES\tCONNECTED\tDISCONNECTED\tREASON\tRX\tTX")
		for _, s := range ss {
			disc, reason, rx, tx := "still connected", "-", "-", "-"
			if s.D != nil {
				disc = s.D.CreatedAt.UTC().Format(time.RFC3339)
				reason = s.D.Reason
				rx, tx = humanfmt.Bytes(s.D.BytesIn), humanfmt.Bytes(s.D.BytesOut)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.C.UserID, s.C.ProfileID, s.C.PublicKey,
				joinNonEmpty(addrText(s.C.IPv4), addrText(s.C.IPv6)), s.C.CreatedAt.UTC().Format(time.RFC3339), disc, reason, rx, tx)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(cs) == 0 {
			if *ip != "" {
				fmt.Fprintf(e.stdout, "\nno session (client talking) covered %s\n", when.Format(time.RFC3339))
			}
			return nil
		}
		fmt.Fprintln(e.stdout)
		tw = tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SESSION\tKEY\tENDPOINT\tSTARTED\tENDED\tREASON\tRX\tTX")
		for _, c := range cs {
			// a session not ended yet: whether its client is online now is
			// status's to say (reconcile.Online)
			ended, reason := "open", "-"
			if !c.Ended.IsZero() {
				ended, reason = c.Ended.Format(time.RFC3339), c.EndReason
			}
			eps := make([]string, len(c.Endpoints))
			for i, ep := range c.Endpoints {
				eps[i] = ep.String()
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.PublicKey, joinNonEmpty(eps...),
				c.Started.Format(time.RFC3339), ended, reason, humanfmt.Bytes(c.BytesIn), humanfmt.Bytes(c.BytesOut))
		}
		return tw.Flush()
	})
}
