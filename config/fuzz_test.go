package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary files to the loader: it never panics, a
// rejected file gives a *Error with one-line problems, and an accepted file
// holds what validation promises.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "examples", "wgkeeper.toml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, s := range []string{
		"",
		"database = \n",
		"[hooks]\ntimeout = \"-1s\"\nconcurrency = 0\npass_env = [\"PATH\", 5]\n",
		"[housekeeping]\nschedule = \"CRON_TZ=UTC\"\n",
		"[housekeeping]\nschedule = \"TZ=Europe/Amsterdam @every 1s\"\n",
		"[api]\nlisten = \"unix:\"\ntls_cert = \"c\"\n",
		"[api]\nlisten = \"[::1]:0\"\n",
		"interface = [{name = \"wg0\"}, 5]\n",
		"[interface]\nname = \"wg0\"\n",
		iface + profile + "ipv6_range = \"fd42::/64\"\n[[profile]]\nid = \"b\"\ninterface = \"wg0\"\nipv4_range = \"10.42.0.0/16\"\n",
		iface + "orphan_removal_limit = \"10%\"\n",
		iface + "orphan_removal_limit = 1048577\n",
		iface + "mode = \"kernel\"\nendpoint = \"[fe80::1%eth0]:1\"\n",
		iface + "[[profile]]\nid = \"x\"\ninterface = \"wg0\"\nipv4_range = \"10.42.0.5/31\"\nipv6_range = \"::ffff:1.2.3.4/128\"\n",
		iface + profile + "dns = [\"a\\nb\", \"1.2.3.4\"]\nclient_allowed_ips = []\nexpiry = \"0\"\nmax_expiry = \"1d\"\n",
		"\"a\\nb\" = 1\n[\"hooks\"]\n\"x.y\" = 2\n",
		"[sessions]\nscript = \"s\"\npoll_interval = \"1s\"\noffline_after = \"2s\"\non_reject = \"revoke\"\n" + iface + profile + "idle_expiry = \"2s\"\n",
		"[sessions]\npoll_interval = \"2m\"\non_reject = 1\n" + iface + profile + "idle_expiry = \"1s\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, testDir)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *Error", err, err)
			}
			if len(ce.Problems) == 0 {
				t.Fatal("*Error without problems")
			}
			for _, p := range ce.Problems {
				if p == "" || strings.ContainsAny(p, "\r\n") {
					t.Fatalf("problem %q is not one non-empty line", p)
				}
			}
			return
		}
		checkValid(t, c)
	})
}

// checkValid asserts what an accepted config guarantees.
func checkValid(t *testing.T, c *Config) {
	t.Helper()
	if !filepath.IsAbs(c.Database) {
		t.Fatalf("database %q is not absolute", c.Database)
	}
	for _, p := range []string{c.Hooks.Script, c.API.TokenFile, c.API.ReadTokenFile, c.API.TLSCert, c.API.TLSKey} {
		if p != "" && !filepath.IsAbs(p) {
			t.Fatalf("path %q is not absolute", p)
		}
	}
	if c.Hooks.Timeout <= 0 || c.Hooks.QueueTimeout <= 0 || c.Hooks.Concurrency < 1 || c.Hooks.MaxAttempts < 1 || c.Hooks.RetryBase > c.Hooks.RetryMax {
		t.Fatalf("hooks: %+v", c.Hooks)
	}
	if s := c.Sessions; s.PollInterval < MinPollInterval || s.OfflineAfter < 2*s.PollInterval ||
		s.OnReject != OnRejectIgnore && s.OnReject != OnRejectRevoke || s.Script != "" && !filepath.IsAbs(s.Script) {
		t.Fatalf("sessions: %+v", s)
	}
	if (c.API.TLSCert == "") != (c.API.TLSKey == "") {
		t.Fatalf("api tls: %+v", c.API)
	}
	if c.Housekeeping.Schedule != "" {
		if _, err := ParseSchedule(c.Housekeeping.Schedule); err != nil {
			t.Fatalf("schedule accepted but does not parse: %v", err)
		}
	}
	names := map[string]bool{}
	ports := map[int]bool{}
	for _, i := range c.Interfaces {
		if i.ListenPort != 0 && ports[i.ListenPort] {
			t.Fatalf("listen port %d used twice", i.ListenPort)
		}
		ports[i.ListenPort] = true
		if ifNameProblem(i.Name) != "" || names[i.Name] {
			t.Fatalf("interface name %q invalid or duplicate", i.Name)
		}
		names[i.Name] = true
		if i.Owned() && (i.PrivateKeyFile == "" || i.ListenPort < 1) {
			t.Fatalf("owned interface %+v", i)
		}
		if i.ListenPort < 0 || i.ListenPort > 65535 {
			t.Fatalf("listen port %d", i.ListenPort)
		}
		if l := i.OrphanRemovalLimit; l.Percent < 0 || l.Percent > 100 || l.Count < 0 || l.Count > MaxOrphanCount || l.Percent != 0 && l.Count != 0 {
			t.Fatalf("orphan_removal_limit %+v", l)
		}
	}
	ids := map[string]bool{}
	for k, p := range c.Profiles {
		if profileIDProblem(p.ID) != "" || ids[p.ID] || !names[p.Interface] {
			t.Fatalf("profile %+v: bad id, duplicate or unknown interface", p)
		}
		ids[p.ID] = true
		if !p.IPv4Range.IsValid() && !p.IPv6Range.IsValid() {
			t.Fatalf("profile %q without ranges", p.ID)
		}
		if p.IPv4Range.IsValid() && (!p.IPv4Range.Addr().Is4() || p.IPv4Range.Masked() != p.IPv4Range) {
			t.Fatalf("profile %q ipv4_range %v", p.ID, p.IPv4Range)
		}
		if p.IPv6Range.IsValid() && (!p.IPv6Range.Addr().Is6() || p.IPv6Range.Masked() != p.IPv6Range) {
			t.Fatalf("profile %q ipv6_range %v", p.ID, p.IPv6Range)
		}
		if p.Capacity() < 1 || len(p.ServerAddrs()) == 0 || len(p.ClientAllowedIPs) == 0 {
			t.Fatalf("profile %q: capacity %d, servers %v, allowed %v", p.ID, p.Capacity(), p.ServerAddrs(), p.ClientAllowedIPs)
		}
		for _, s := range p.ServerAddrs() {
			r := p.IPv4Range
			if s.Addr().Is6() {
				r = p.IPv6Range
			}
			if !r.Contains(s.Addr()) {
				t.Fatalf("profile %q: server address %v outside %v", p.ID, s, r)
			}
		}
		if p.IdleExpiry < 0 || p.IdleExpiry != 0 && p.IdleExpiry < c.Sessions.OfflineAfter {
			t.Fatalf("profile %q: idle_expiry %v, offline_after %v", p.ID, p.IdleExpiry, c.Sessions.OfflineAfter)
		}
		if p.MaxExpiry != 0 && (p.Expiry == 0 || p.MaxExpiry < p.Expiry) {
			t.Fatalf("profile %q: expiry %v, max %v", p.ID, p.Expiry, p.MaxExpiry)
		}
		for _, o := range c.Profiles[:k] {
			if o.Interface == p.Interface && (o.IPv4Range.IsValid() && p.IPv4Range.IsValid() && o.IPv4Range.Overlaps(p.IPv4Range) ||
				o.IPv6Range.IsValid() && p.IPv6Range.IsValid() && o.IPv6Range.Overlaps(p.IPv6Range)) {
				t.Fatalf("profiles %q and %q overlap", o.ID, p.ID)
			}
		}
	}
}

// FuzzParseSchedule: the cron parser behind housekeeping.schedule must not
// take the loader down on any input.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"@every 1m", "TZ=UTC", "CRON_TZ=", "TZ= 1 2 3 4 5", "@every -1s", "*/0 * * * *", "1-70 * * * *", "0 0 31 2 *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sched, err := ParseSchedule(s)
		if (err == nil) != (sched != nil) {
			t.Fatalf("ParseSchedule(%q) = %v, %v", s, sched, err)
		}
		if err == nil && !strings.HasPrefix(s, "@") {
			// Computing the next run of an accepted spec must neither
			// panic nor hang (dates that never come, like 31 February,
			// give the zero time).
			_ = sched.Next(fixedNow)
		}
	})
}

var fixedNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
