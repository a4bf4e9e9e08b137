// Package testenv holds what the test harnesses of reconcile, api and cli
// share: the config they start from, the hook script's files, the reader of
// the runs a script logged, and the check that a device holds exactly the
// active configs of the store. It imports neither reconcile nor api, so
// their own tests can use it.
package testenv

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Fakes reports whether a harness should use the in-memory device and
// runner (internal/enginetest) instead of a real userspace device and the
// real script: when the tests do not run as root, or when
// WGKEEPER_TEST_FAKES=1 asks for them as root. Tests about the real device
// or the real script ask for those and skip without root.
func Fakes() bool {
	return os.Geteuid() != 0 || os.Getenv("WGKEEPER_TEST_FAKES") == "1"
}

// Config is the test configuration: one interface with one profile
// "staff" (10.99.0.0/16 and fd00:99::/64) served by the hook script
// hook.sh beside the database wgkeeper.db, no API listener. The fields
// add lines to its sections.
type Config struct {
	// Top replaces the first line, database = "wgkeeper.db" (another
	// database, lock_dir...).
	Top       string
	Interface string
	Port      int
	// Hooks are more lines of [hooks] (script = "hook.sh" is always
	// there unless NoScript).
	Hooks    string
	NoScript bool
	// InterfaceLines are more lines of the [[interface]] section.
	InterfaceLines string
	// ProfileLines are more lines of the "staff" [[profile]] section.
	ProfileLines string
	// Extra is appended at the end: more sections.
	Extra string
}

// TOML returns the configuration's text.
func (c Config) TOML() string {
	var b strings.Builder
	top := "database = \"wgkeeper.db\""
	if c.Top != "" {
		top = strings.TrimSpace(c.Top)
	}
	b.WriteString(top + "\n\n[hooks]\n")
	if !c.NoScript {
		b.WriteString("script = \"hook.sh\"\n")
	}
	b.WriteString(strings.TrimSpace(c.Hooks) + "\n\n[api]\nlisten = \"\"\n\n")
	fmt.Fprintf(&b, "[[interface]]\nname = %q\nendpoint = \"127.0.0.1:%d\"\n%s\n\n", c.Interface, c.Port, strings.TrimSpace(c.InterfaceLines))
	fmt.Fprintf(&b, "[[profile]]\nid = \"staff\"\ninterface = %q\nipv4_range = \"10.99.0.0/16\"\nipv6_range = \"fd00:99::/64\"\n%s\n", c.Interface, strings.TrimSpace(c.ProfileLines))
	b.WriteString(c.Extra)
	return b.String()
}

// Load writes hook.sh (script, mode 0755, when not empty) and
// wgkeeper.toml (toml, mode 0600) into dir and loads the config.
func Load(t testing.TB, dir, toml, script string) *config.Config {
	t.Helper()
	if script != "" {
		WriteScript(t, filepath.Join(dir, "hook.sh"), script)
	}
	path := filepath.Join(dir, "wgkeeper.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	return cfg
}

// WriteScript writes an executable script (mode 0755 whatever the umask).
func WriteScript(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

// EnvRecord is the line a hook script writes before each environment it
// logs with `env | sort` (EnvRuns reads them back).
const EnvRecord = "---\n"

// shellVars are set by /bin/sh itself, not by wgkeeper.
var shellVars = map[string]bool{"PWD": true, "SHLVL": true, "_": true, "OLDPWD": true}

// EnvRuns reads a log of environments, one per script run, each after an
// EnvRecord line: one map per run, in order, without the variables the
// shell sets itself. A missing file is no runs.
func EnvRuns(t testing.TB, path string) []map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, rec := range strings.Split(string(data), EnvRecord) {
		if strings.TrimSpace(rec) == "" {
			continue
		}
		m := map[string]string{}
		for _, line := range strings.Split(strings.TrimRight(rec, "\n"), "\n") {
			k, v, _ := strings.Cut(line, "=")
			if !shellVars[k] {
				m[k] = v
			}
		}
		out = append(out, m)
	}
	return out
}

// FormatEnv is a run's environment as `env | LC_ALL=C sort` prints it,
// after an EnvRecord line: what a Go stand-in for a script logs.
func FormatEnv(env map[string]string) string {
	lines := make([]string, 0, len(env))
	for k, v := range env {
		lines = append(lines, k+"="+v)
	}
	sort.Strings(lines)
	return EnvRecord + strings.Join(lines, "\n") + "\n"
}

// Lines returns the lines of a log a script appends to; a missing file is
// none.
func Lines(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// Append appends text to the file at path, creating it: what a script's
// `>> file` does.
func Append(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Lister reads configs (every backend of the store contract is one).
type Lister interface {
	ListPeers(ctx context.Context, f store.PeerFilter) ([]store.Peer, error)
}

// Reader reads a device (wg.Client and the in-memory Device are).
type Reader interface {
	Read(ctx context.Context, name string) (*wg.Device, error)
}

// AssertInSync fails the test unless the device iface holds exactly the
// store's active configs on it, each with its addresses as /32 and /128
// allowed IPs.
func AssertInSync(t testing.TB, st Lister, dev Reader, iface string) {
	t.Helper()
	ctx := context.Background()
	peers, err := st.ListPeers(ctx, store.PeerFilter{Interface: iface, State: store.StateActive})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dev.Read(ctx, iface)
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, p := range peers {
		var ips []netip.Prefix
		if p.IPv4.IsValid() {
			ips = append(ips, netip.PrefixFrom(p.IPv4, 32))
		}
		if p.IPv6.IsValid() {
			ips = append(ips, netip.PrefixFrom(p.IPv6, 128))
		}
		want = append(want, fmt.Sprintf("%s=%v", p.PublicKey, ips))
	}
	for _, p := range d.Peers {
		got = append(got, fmt.Sprintf("%s=%v", p.PublicKey, p.AllowedIPs))
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(want, ",") != strings.Join(got, ",") {
		t.Fatalf("store and device disagree:\nstore active: %v\ndevice:       %v", want, got)
	}
}
