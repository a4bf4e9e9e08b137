package hooks

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestScriptEnvironmentGolden(t *testing.T) {
	t.Setenv("PATH", "/usr/bin:/bin")
	t.Setenv("WGK_TEST_SECRET", "hunter2")
	t.Setenv("VPN_USER_ID", "from-parent") // must be overridden, never duplicated

	tests := []struct {
		name string
		v    Vars
		want []string
	}{
		{"connect", connectVars(), []string{
			"PATH=/usr/bin:/bin",
			"VPN_EVENT=C",
			"VPN_USER_ID=alice@example.org",
			"VPN_PROFILE_ID=employees",
			"VPN_PROTO=wireguard",
			"VPN_CONNECTION_ID=" + testKey,
			"VPN_IP_FOUR=10.42.0.2",
			"VPN_IP_SIX=fd42::2",
			"VPN_ORIGINATING_IP=192.0.2.10",
			"VPN_REASON=created",
			"VPN_INTERFACE=wg0",
			"VPN_EXPIRES_AT=2027-02-26T15:04:05Z",
			"VPN_EVENT_ID=41",
			"VPN_NODE_NAME=",
		}},
		{"test", func() Vars { v := connectVars(); v.Test = true; return v }(), []string{
			"PATH=/usr/bin:/bin",
			"VPN_EVENT=C",
			"VPN_USER_ID=alice@example.org",
			"VPN_PROFILE_ID=employees",
			"VPN_PROTO=wireguard",
			"VPN_CONNECTION_ID=" + testKey,
			"VPN_IP_FOUR=10.42.0.2",
			"VPN_IP_SIX=fd42::2",
			"VPN_ORIGINATING_IP=192.0.2.10",
			"VPN_REASON=created",
			"VPN_INTERFACE=wg0",
			"VPN_EXPIRES_AT=2027-02-26T15:04:05Z",
			"VPN_EVENT_ID=41",
			"VPN_NODE_NAME=",
			"VPN_TEST=1",
		}},
		{"disconnect", disconnectVars(), []string{
			"PATH=/usr/bin:/bin",
			"VPN_EVENT=D",
			"VPN_USER_ID=bob",
			"VPN_PROFILE_ID=guests",
			"VPN_PROTO=wireguard",
			"VPN_CONNECTION_ID=" + testKey,
			"VPN_IP_FOUR=10.42.0.3",
			"VPN_IP_SIX=",
			"VPN_BYTES_IN=123456789",
			"VPN_BYTES_OUT=42",
			"VPN_REASON=expired",
			"VPN_INTERFACE=wg1",
			"VPN_EXPIRES_AT=",
			"VPN_EVENT_ID=42",
			"VPN_NODE_NAME=",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "env")
			r := newRunner(t, Config{Script: envDumpScript(t, dir, out)})
			res := r.Run(context.Background(), tt.v)
			if !res.OK() {
				t.Fatalf("run: %+v (%v)", res, res.Failure())
			}
			got := readEnv(t, out)
			if !slices.Equal(got, tt.want) {
				t.Errorf("environment:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestPassEnvAndPath(t *testing.T) {
	t.Setenv("PATH", "/opt/custom/bin:/usr/bin")
	t.Setenv("WGK_TEST_PASSED", "a value with spaces")
	t.Setenv("WGK_TEST_EMPTY", "")
	t.Setenv("WGK_TEST_SECRET", "hunter2")
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	r := newRunner(t, Config{
		Script:  envDumpScript(t, dir, out),
		PassEnv: []string{"WGK_TEST_PASSED", "WGK_TEST_EMPTY", "WGK_TEST_UNSET", "PATH", "WGK_TEST_PASSED"},
	})
	if res := r.Run(context.Background(), disconnectVars()); !res.OK() {
		t.Fatalf("run: %v", res.Failure())
	}
	got := readEnv(t, out)
	want := []string{"PATH=/opt/custom/bin:/usr/bin", "WGK_TEST_PASSED=a value with spaces", "WGK_TEST_EMPTY="}
	if !slices.Equal(got[:3], want) {
		t.Errorf("first variables: got %q, want %q", got[:3], want)
	}
	for _, kv := range got[3:] {
		if !strings.HasPrefix(kv, "VPN_") {
			t.Errorf("unexpected variable %q", kv)
		}
	}

	// No PATH at all in wgkeeper's environment: the safe default.
	os.Unsetenv("PATH")
	if res := r.Run(context.Background(), disconnectVars()); !res.OK() {
		t.Fatalf("run without PATH: %v", res.Failure())
	}
	if got := readEnv(t, out)[0]; got != "PATH="+DefaultPath {
		t.Errorf("PATH when unset: got %q, want %q", got, "PATH="+DefaultPath)
	}
}

func TestPassEnvNames(t *testing.T) {
	for _, tt := range []struct{ name, want string }{
		{"", "empty variable name"},
		{"1ABC", "not a valid variable name"},
		{"A=B", "not a valid variable name"},
		{"A B", "not a valid variable name"},
		{"VPN_USER_ID", "reserved"},
	} {
		_, err := New(Config{PassEnv: []string{tt.name}})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("PassEnv %q: got %v, want error containing %q", tt.name, err, tt.want)
		}
	}
	for _, cfg := range []Config{{Timeout: -1}, {KillGrace: -1}, {Concurrency: -1}} {
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "negative") {
			t.Errorf("New(%+v): got %v, want a negative-value error", cfg, err)
		}
	}
}

func TestEnvRefusals(t *testing.T) {
	v4 := netip.MustParseAddr("10.0.0.1")
	v6 := netip.MustParseAddr("fd00::1")
	for _, tt := range []struct {
		name string
		mod  func(*Vars)
		want string
	}{
		{"event", func(v *Vars) { v.Event = "X" }, `hook event "X"`},
		{"nul user", func(v *Vars) { v.UserID = "a\x00b" }, "VPN_USER_ID contains a NUL byte"},
		{"nul reason", func(v *Vars) { v.Reason = "\x00" }, "VPN_REASON contains a NUL byte"},
		{"nul zone", func(v *Vars) { v.IPSix = v6.WithZone("x\x00") }, "VPN_IP_SIX contains a NUL byte"},
		{"v6 as four", func(v *Vars) { v.IPFour = v6 }, "VPN_IP_FOUR fd00::1 is not an IPv4 address"},
		{"v4 as six", func(v *Vars) { v.IPSix = v4 }, "VPN_IP_SIX 10.0.0.1 is not an IPv6 address"},
		{"negative bytes", func(v *Vars) { v.BytesIn = -1 }, "negative byte counter"},
	} {
		v := disconnectVars()
		tt.mod(&v)
		if _, err := v.Env(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want error containing %q", tt.name, err, tt.want)
		}
	}

	// A refused value runs nothing.
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	r := newRunner(t, Config{Script: writeScript(t, dir, "s.sh", "#!/bin/sh\n: > "+quote(marker)+"\n")})
	v := connectVars()
	v.ProfileID = "x\x00y"
	res := r.Run(context.Background(), v)
	if res.OK() || res.Err == nil || !strings.Contains(res.Err.Error(), "VPN_PROFILE_ID contains a NUL byte") {
		t.Fatalf("got %+v, want a NUL refusal", res)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the script ran although a value was refused")
	}

	// IPv4-mapped IPv6 is shown as plain IPv4.
	v = connectVars()
	v.IPFour = netip.MustParseAddr("::ffff:10.1.2.3")
	env, err := v.Env()
	if err != nil || !slices.Contains(env, "VPN_IP_FOUR=10.1.2.3") {
		t.Errorf("mapped address: got %q, %v", env, err)
	}
}

// TestNastyValuesReachScriptVerbatim runs a real script with values full of
// shell syntax and proves each arrives byte for byte and nothing was
// interpreted.
func TestNastyValuesReachScriptVerbatim(t *testing.T) {
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	out := filepath.Join(dir, "env")
	r := newRunner(t, Config{Script: envDumpScript(t, dir, out)})
	nasty := []string{
		"$(touch " + pwned + ")",
		"`touch " + pwned + "`",
		"; touch " + pwned,
		"a && touch " + pwned + " || true",
		"'\"\\$HOME${PATH}*?[a-z]~",
		"line1\nline2\r\n\ttab",
		"-rf --help",
		"key=value=more",
		"ünïcødé ✓ \u202e",
		"\xff\xfe not utf-8",
		"",
		" leading and trailing ",
		"%s%n%x",
	}
	for i, s := range nasty {
		v := disconnectVars()
		v.UserID, v.ProfileID, v.Reason, v.Interface, v.ConnectionID = s, s+"p", s+"r", s+"i", s+"c"
		res := r.Run(context.Background(), v)
		if !res.OK() {
			t.Fatalf("value %d %q: %v", i, s, res.Failure())
		}
		got := readEnv(t, out)
		for _, want := range []string{"VPN_USER_ID=" + s, "VPN_PROFILE_ID=" + s + "p", "VPN_REASON=" + s + "r", "VPN_INTERFACE=" + s + "i", "VPN_CONNECTION_ID=" + s + "c"} {
			if !slices.Contains(got, want) {
				t.Errorf("value %d: %q missing from %q", i, want, got)
			}
		}
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("a value was interpreted by a shell")
	}
}

func FuzzVarsEnv(f *testing.F) {
	f.Add("C", "alice", "employees", testKey, "created", "wg0", []byte{10, 0, 0, 2}, []byte{0xfd, 0x42, 15: 2}, "", int64(0), int64(0), int64(41), int64(1800000000))
	f.Add("D", "$(reboot)", "`id`", "x;y", "expired", "wg\n0", []byte{}, []byte{}, "eth0", int64(5), int64(7), int64(-3), int64(0))
	f.Add("D", "a\x00b", "", "", "", "", []byte{1, 2, 3}, []byte{1}, "z\x00", int64(-1), int64(1), int64(0), int64(-62135596800))
	f.Add("E", "", "", "", "", "", []byte(nil), []byte(nil), "", int64(0), int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, event, user, profile, conn, reason, iface string, four, six []byte, zone string, in, out, id, expires int64) {
		v := Vars{Event: event, UserID: user, ProfileID: profile, ConnectionID: conn, Reason: reason, Interface: iface,
			BytesIn: in, BytesOut: out, EventID: id}
		if len(four) == 4 {
			v.IPFour = netip.AddrFrom4([4]byte(four))
		}
		if len(six) == 16 {
			v.IPSix = netip.AddrFrom16([16]byte(six)).WithZone(zone)
		}
		if expires != 0 {
			v.ExpiresAt = timeUnix(expires)
		}
		env, err := v.Env()
		hasNUL := strings.ContainsRune(event+user+profile+conn+reason+iface, 0) || (v.IPSix.IsValid() && strings.ContainsRune(v.IPSix.Zone(), 0))
		switch {
		case event != "C" && event != "D":
			if err == nil {
				t.Fatalf("event %q accepted", event)
			}
			return
		case hasNUL:
			if err == nil {
				t.Fatal("value with NUL accepted")
			}
			return
		case event == "D" && (in < 0 || out < 0):
			if err == nil {
				t.Fatal("negative byte counter accepted")
			}
			return
		case err != nil:
			t.Fatalf("valid values refused: %v", err)
		}
		got := map[string]string{}
		var names []string
		for _, kv := range env {
			name, value, ok := strings.Cut(kv, "=")
			if !ok || !strings.HasPrefix(name, "VPN_") {
				t.Fatalf("bad entry %q", kv)
			}
			if _, dup := got[name]; dup {
				t.Fatalf("duplicate %s", name)
			}
			got[name] = value
			names = append(names, name)
		}
		want := map[string]string{
			"VPN_EVENT": event, "VPN_USER_ID": user, "VPN_PROFILE_ID": profile, "VPN_PROTO": "wireguard",
			"VPN_CONNECTION_ID": conn, "VPN_REASON": reason, "VPN_INTERFACE": iface,
		}
		for name, w := range want {
			if got[name] != w {
				t.Fatalf("%s = %q, want %q verbatim", name, got[name], w)
			}
		}
		four4, six6, exp := "", "", ""
		if v.IPFour.IsValid() {
			four4 = v.IPFour.String()
		}
		if v.IPSix.IsValid() {
			six6 = v.IPSix.String()
		}
		if !v.ExpiresAt.IsZero() {
			exp = v.ExpiresAt.UTC().Format(time.RFC3339)
		}
		if got["VPN_IP_FOUR"] != four4 || got["VPN_IP_SIX"] != six6 || got["VPN_EXPIRES_AT"] != exp {
			t.Fatalf("addresses/expiry: got %q %q %q, want %q %q %q", got["VPN_IP_FOUR"], got["VPN_IP_SIX"], got["VPN_EXPIRES_AT"], four4, six6, exp)
		}
		if _, ok := got["VPN_ORIGINATING_IP"]; ok {
			t.Fatal("VPN_ORIGINATING_IP set although unknown")
		}
		n := 12
		if event == "D" {
			n += 2
		}
		if len(names) != n {
			t.Fatalf("got %d variables %q, want %d", len(names), names, n)
		}
	})
}
