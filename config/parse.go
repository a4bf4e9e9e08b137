package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// The file is decoded into generic TOML values first and then read key by
// key: a typed decode stops at the first type mismatch, while an operator
// wants every problem of the file in one run.

// problems collects the messages of one parse.
type problems struct{ list []string }

func (ps *problems) add(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	// One problem is one line, whatever the file contained.
	msg = strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(msg)
	ps.list = append(ps.list, msg)
}

// table is one TOML table being read: the top level, a section such as
// [hooks], or one entry of [[interface]] / [[profile]].
type table struct {
	m      map[string]any
	prefix string // key prefix of a section: "hooks."
	array  string // array name of an entry: "interface"
	label  string // how problems name an entry: `interface "wg0"`
	ps     *problems
	failed map[string]bool // keys that already have a problem
}

func newTable(m map[string]any, prefix string, ps *problems) *table {
	return &table{m: m, prefix: prefix, ps: ps, failed: map[string]bool{}}
}

// key is how a problem names key k.
func (t *table) key(k string) string {
	if t.label != "" {
		return t.label + ": " + k
	}
	return t.prefix + k
}

// bad records a problem with the value of key k.
func (t *table) bad(k string, v any, format string, args ...any) {
	t.failed[k] = true
	t.ps.add("%s = %s: %s", t.key(k), render(v), fmt.Sprintf(format, args...))
}

// problem records a problem of the entry or section as a whole.
func (t *table) problem(format string, args ...any) {
	prefix := t.label
	if prefix == "" {
		prefix = strings.TrimSuffix(t.prefix, ".")
	}
	if prefix == "" {
		t.ps.add(format, args...)
		return
	}
	t.ps.add("%s: %s", prefix, fmt.Sprintf(format, args...))
}

// ok reports whether none of the keys has a problem.
func (t *table) ok(keys ...string) bool {
	for _, k := range keys {
		if t.failed[k] {
			return false
		}
	}
	return true
}

func (t *table) has(k string) bool { _, ok := t.m[k]; return ok }

// unknown reports the keys of the table that are not in known, sorted.
func (t *table) unknown(known ...string) {
	var extra []string
	for k := range t.m {
		if !slices.Contains(known, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	for _, k := range extra {
		if t.array != "" {
			t.ps.add("unknown key %q in %s", t.array+"."+k, t.label)
		} else {
			t.ps.add("unknown key %q", t.prefix+k)
		}
	}
}

// str returns the string at k; ok is false when k is absent or not a string
// (then a problem is recorded).
func (t *table) str(k string) (string, bool) {
	v, present := t.m[k]
	if !present {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		t.bad(k, v, "must be a string")
		return "", false
	}
	return s, true
}

func (t *table) integer(k string) (int64, bool) {
	v, present := t.m[k]
	if !present {
		return 0, false
	}
	n, isInt := v.(int64)
	if !isInt {
		t.bad(k, v, "must be an integer")
		return 0, false
	}
	return n, true
}

func (t *table) boolean(k string) (bool, bool) {
	v, present := t.m[k]
	if !present {
		return false, false
	}
	b, isBool := v.(bool)
	if !isBool {
		t.bad(k, v, "must be true or false")
		return false, false
	}
	return b, true
}

// duration returns the duration at k, or def when k is absent. ok is false
// when the value is bad (a problem is recorded).
func (t *table) duration(k string, def time.Duration) (time.Duration, bool) {
	v, present := t.m[k]
	if !present {
		return def, true
	}
	s, isStr := v.(string)
	if !isStr {
		t.bad(k, v, `must be a duration string such as "30s", "1h30m" or "90d"`)
		return def, false
	}
	d, err := parseDuration(s)
	if err != nil {
		t.bad(k, v, "%s", err)
		return def, false
	}
	return d, true
}

// shownDuration names key k with its value as written, or def marked as the default.
func (t *table) shownDuration(k string, def time.Duration) string {
	if v, ok := t.m[k]; ok {
		return t.key(k) + " = " + render(v)
	}
	return fmt.Sprintf("%s (default %q)", t.key(k), FormatDuration(def))
}

// strList calls each for every string of the array at k, in order, and
// reports the elements that are not strings. It returns the length of the
// array, and false when k is absent or not an array.
func (t *table) strList(k string, each func(i int, s string)) (int, bool) {
	v, ok := t.m[k]
	if !ok {
		return 0, false
	}
	arr, isArr := v.([]any)
	if !isArr {
		t.bad(k, v, "must be an array of strings")
		return 0, false
	}
	for i, e := range arr {
		s, isStr := e.(string)
		if !isStr {
			t.bad(fmt.Sprintf("%s[%d]", k, i), e, "must be a string")
			continue
		}
		each(i, s)
	}
	return len(arr), true
}

// section returns the sub-table at k (empty when absent).
func (t *table) section(k string) *table {
	sub := newTable(nil, t.prefix+k+".", t.ps)
	v, present := t.m[k]
	if !present {
		return sub
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		t.bad(k, v, "must be a table ([%s])", k)
		return sub
	}
	sub.m = m
	return sub
}

// entries returns the array of tables at k.
func (t *table) entries(k string) []map[string]any {
	v, present := t.m[k]
	if !present {
		return nil
	}
	switch x := v.(type) {
	case []map[string]any:
		return x
	case []any:
		out := make([]map[string]any, 0, len(x))
		for _, e := range x {
			m, isMap := e.(map[string]any)
			if !isMap {
				t.bad(k, v, "must be an array of tables ([[%s]])", k)
				return nil
			}
			out = append(out, m)
		}
		return out
	}
	t.bad(k, v, "must be an array of tables ([[%s]])", k)
	return nil
}

// path returns the path at k resolved against dir, def when absent. An
// empty value is returned as "" unless required.
func (t *table) path(k, def, dir string, required bool) string {
	v, present := t.m[k]
	if !present {
		return def
	}
	s, ok := t.str(k)
	if !ok {
		return ""
	}
	if s == "" {
		if required {
			t.bad(k, v, "must not be empty")
		}
		return ""
	}
	if reason := pathProblem(s); reason != "" {
		t.bad(k, v, "%s", reason)
		return ""
	}
	return resolve(s, dir)
}

// dirPath reads a directory's path (key k, default def): not empty, no
// NUL byte, no "~"; resolved against dir.
func (t *table) dirPath(k, def, dir string) string {
	v, present := t.m[k]
	if !present {
		return def
	}
	s, ok := t.str(k)
	if !ok {
		return ""
	}
	switch {
	case s == "":
		t.bad(k, v, "must not be empty")
		return ""
	case strings.IndexByte(s, 0) >= 0:
		t.bad(k, v, "must not contain a NUL byte")
		return ""
	case strings.HasPrefix(s, "~"):
		t.bad(k, v, `"~" is not expanded here; write the full path`)
		return ""
	}
	return resolve(s, dir)
}

func pathProblem(s string) string {
	switch {
	case strings.IndexByte(s, 0) >= 0:
		return "must not contain a NUL byte"
	case strings.HasPrefix(s, "~"):
		return `"~" is not expanded here; write the full path`
	case strings.HasSuffix(s, "/"), filepath.Base(s) == ".", filepath.Base(s) == "..":
		return "must name a file, not a directory"
	}
	return ""
}

func resolve(p, dir string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// render writes a TOML value the way it could appear in the file, shortened
// when long.
func render(v any) string {
	switch x := v.(type) {
	case string:
		const maxLen = 100
		if len(x) > maxLen {
			cut := maxLen
			for cut > 0 && !utf8.RuneStart(x[cut]) {
				cut--
			}
			return strconv.Quote(x[:cut]) + "…"
		}
		return strconv.Quote(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case []any:
		parts := make([]string, 0, len(x))
		for i, e := range x {
			if i == 4 {
				parts = append(parts, "…")
				break
			}
			parts = append(parts, render(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []map[string]any:
		return "[{…}]"
	case map[string]any:
		return "{…}"
	}
	return fmt.Sprintf("%v", v)
}

// parse reads data; dir is absolute.
func parse(data []byte, dir string) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		ps := &problems{}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			ps.add("line %d, column %d: %s", pe.Position.Line, pe.Position.Col, pe.Message)
		} else {
			ps.add("%s", err)
		}
		return nil, &Error{Problems: ps.list}
	}
	ps := &problems{}
	top := newTable(raw, "", ps)
	top.unknown("database", "lock_dir", "node", "hooks", "housekeeping", "sessions", "api", "interface", "profile")

	c := &Config{}
	if s, ok := top.m["database"].(string); ok && IsPostgresURL(s) {
		if _, err := url.Parse(s); err != nil {
			// The error would quote the URL, password and all.
			top.bad("database", "(a PostgreSQL URL)", "is not a valid URL; write postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...")
		}
		c.Database = s
		c.LockDir = top.dirPath("lock_dir", DefaultLockDir, dir)
	} else {
		c.Database = top.path("database", DefaultDatabase, dir, true)
		if _, present := top.m["lock_dir"]; present {
			top.bad("lock_dir", top.m["lock_dir"], "is only for a PostgreSQL database; with SQLite the lock files live beside the database file")
		}
		c.LockDir = filepath.Dir(c.Database)
	}
	if n, ok := top.str("node"); ok {
		if reason := ValidNodeName(n); reason != "" {
			top.bad("node", n, "%s", reason)
		}
		c.Node = n
	} else if _, present := top.m["node"]; !present {
		c.Node = defaultNode()
		if c.Node == "" && c.PostgreSQL() {
			top.problem("node: the host name is no valid node name; set node (1 to 48 characters out of A-Z, a-z, 0-9, \".\", \"_\" and \"-\")")
		}
	}
	c.Hooks = parseHooks(top.section("hooks"), dir)
	c.Housekeeping = parseHousekeeping(top.section("housekeeping"))
	sessions := top.section("sessions")
	c.Sessions = parseSessions(sessions, dir)
	c.API = parseAPI(top.section("api"), dir)
	c.Interfaces = parseInterfaces(top, dir)
	c.Profiles = parseProfiles(top, c.Interfaces, sessions, c.Sessions)

	if len(ps.list) > 0 {
		return nil, &Error{Problems: ps.list}
	}
	return c, nil
}

func parseHooks(t *table, dir string) Hooks {
	t.unknown("script", "timeout", "concurrency", "queue_timeout", "max_attempts", "retry_base", "retry_max", "pass_env")
	h := Hooks{
		Concurrency: DefaultHookConcurrency,
		MaxAttempts: DefaultMaxAttempts,
	}
	h.Script = t.path("script", "", dir, false)

	var ok bool
	if h.Timeout, ok = t.duration("timeout", DefaultHookTimeout); ok && h.Timeout == 0 {
		t.bad("timeout", t.m["timeout"], "must be greater than 0")
	}
	if h.QueueTimeout, ok = t.duration("queue_timeout", DefaultHookQueueTimeout); ok && h.QueueTimeout == 0 {
		t.bad("queue_timeout", t.m["queue_timeout"], "must be greater than 0")
	}
	if n, ok := t.integer("concurrency"); ok {
		if n < 1 || n > MaxHookConcurrency {
			t.bad("concurrency", n, "must be between 1 and %d", MaxHookConcurrency)
		} else {
			h.Concurrency = int(n)
		}
	}
	if n, ok := t.integer("max_attempts"); ok {
		if n < 1 || n > 1<<31-1 {
			t.bad("max_attempts", n, "must be between 1 and %d", 1<<31-1)
		} else {
			h.MaxAttempts = int(n)
		}
	}
	if h.RetryBase, ok = t.duration("retry_base", DefaultRetryBase); ok && h.RetryBase == 0 {
		t.bad("retry_base", t.m["retry_base"], "must be greater than 0")
	}
	if h.RetryMax, ok = t.duration("retry_max", DefaultRetryMax); ok && h.RetryMax == 0 {
		t.bad("retry_max", t.m["retry_max"], "must be greater than 0")
	}
	if t.ok("retry_base", "retry_max") && h.RetryBase > h.RetryMax {
		if t.has("retry_base") {
			t.bad("retry_base", t.m["retry_base"], "must not exceed %s", t.shownDuration("retry_max", DefaultRetryMax))
		} else {
			t.bad("retry_max", t.m["retry_max"], "must not be less than %s", t.shownDuration("retry_base", DefaultRetryBase))
		}
	}
	t.strList("pass_env", func(i int, n string) {
		if reason := envNameProblem(n); reason != "" {
			t.bad(fmt.Sprintf("pass_env[%d]", i), n, "%s", reason)
			return
		}
		h.PassEnv = append(h.PassEnv, n)
	})
	return h
}

func envNameProblem(n string) string {
	switch {
	case n == "":
		return "must not be empty"
	case strings.ContainsAny(n, "=\x00"):
		return `must not contain "=" or a NUL byte`
	case n == "PATH":
		return "PATH is always set by wgkeeper and cannot be passed"
	case strings.HasPrefix(n, "VPN_"):
		return "VPN_* variables are reserved for the event"
	}
	return ""
}

func parseHousekeeping(t *table) Housekeeping {
	t.unknown("schedule", "reconcile_interval", "log_retention")
	h := Housekeeping{Schedule: DefaultSchedule}
	if s, ok := t.str("schedule"); ok {
		h.Schedule = s
		if s != "" {
			if reason := scheduleProblem(s); reason != "" {
				t.bad("schedule", s, "%s", reason)
			}
		}
	}
	var ok bool
	if h.ReconcileInterval, ok = t.duration("reconcile_interval", DefaultReconcileInterval); ok &&
		h.ReconcileInterval > 0 && h.ReconcileInterval < time.Second {
		t.bad("reconcile_interval", t.m["reconcile_interval"], `must be at least 1s, or "0" (off)`)
	}
	h.LogRetention, _ = t.duration("log_retention", DefaultLogRetention)
	return h
}

func parseSessions(t *table, dir string) Sessions {
	t.unknown("script", "poll_interval", "offline_after", "on_reject")
	s := Sessions{OnReject: DefaultOnReject}
	s.Script = t.path("script", "", dir, false)
	var ok bool
	if s.PollInterval, ok = t.duration("poll_interval", DefaultPollInterval); ok && s.PollInterval < MinPollInterval {
		t.bad("poll_interval", t.m["poll_interval"], "must be at least %s", FormatDuration(MinPollInterval))
	}
	if s.OfflineAfter, ok = t.duration("offline_after", DefaultOfflineAfter); ok && s.OfflineAfter == 0 {
		t.bad("offline_after", t.m["offline_after"], "must be greater than 0")
	}
	if t.ok("poll_interval", "offline_after") && s.OfflineAfter < 2*s.PollInterval {
		if t.has("offline_after") {
			t.bad("offline_after", t.m["offline_after"], "must be at least twice %s", t.shownDuration("poll_interval", DefaultPollInterval))
		} else {
			t.bad("poll_interval", t.m["poll_interval"], "must be at most half of %s", t.shownDuration("offline_after", DefaultOfflineAfter))
		}
	}
	if v, ok := t.str("on_reject"); ok {
		s.OnReject = v
		if v != OnRejectIgnore && v != OnRejectRevoke {
			t.bad("on_reject", v, `must be "ignore" or "revoke"`)
		}
	}
	return s
}

func parseAPI(t *table, dir string) API {
	t.unknown("listen", "token_file", "read_token_file", "tls_cert", "tls_key", "insecure", "metrics_public")
	a := API{Listen: DefaultAPIListen}
	if s, ok := t.str("listen"); ok {
		a.Listen = s
	}
	a.TokenFile = t.path("token_file", DefaultAPITokenFile, dir, false)
	a.ReadTokenFile = t.path("read_token_file", "", dir, false)
	if a.ReadTokenFile != "" && a.ReadTokenFile == a.TokenFile {
		t.bad("read_token_file", t.m["read_token_file"], "is api.token_file; the read-only token needs a file of its own")
	}
	a.TLSCert = t.path("tls_cert", "", dir, false)
	a.TLSKey = t.path("tls_key", "", dir, false)
	if b, ok := t.boolean("insecure"); ok {
		a.Insecure = b
	}
	if b, ok := t.boolean("metrics_public"); ok {
		a.MetricsPublic = b
	}

	tlsOK := t.ok("tls_cert", "tls_key")
	if tlsOK && (a.TLSCert == "") != (a.TLSKey == "") {
		tlsOK = false
		if a.TLSCert == "" {
			t.bad("tls_key", t.m["tls_key"], "api.tls_cert must be set too (both or neither)")
		} else {
			t.bad("tls_cert", t.m["tls_cert"], "api.tls_key must be set too (both or neither)")
		}
	}
	if a.Listen == "" || !t.ok("listen") {
		return a
	}
	if t.ok("token_file") && a.TokenFile == "" {
		t.bad("token_file", t.m["token_file"], "must be set when api.listen is set")
	}
	if sock, isUnix := strings.CutPrefix(a.Listen, "unix:"); isUnix {
		if sock == "" {
			t.bad("listen", a.Listen, `needs a socket path after "unix:"`)
			return a
		}
		if reason := pathProblem(sock); reason != "" {
			t.bad("listen", a.Listen, "socket path %s", reason)
			return a
		}
		sock = resolve(sock, dir)
		// sockaddr_un.sun_path holds 108 bytes including the final NUL.
		if len(sock) > 107 {
			t.bad("listen", a.Listen, "socket path %q is %d bytes; the limit is 107", sock, len(sock))
			return a
		}
		a.Listen = "unix:" + sock
		return a
	}
	host, _, problem := splitHostPort(a.Listen, true)
	if problem != "" {
		t.bad("listen", a.Listen, `%s (or "unix:/path/to/socket")`, problem)
		return a
	}
	if tlsOK && a.TLSCert == "" && !a.Insecure && !isLoopback(host) {
		t.bad("listen", a.Listen, "plain HTTP on a non-loopback address exposes the API token; "+
			"set api.tls_cert and api.tls_key, or api.insecure = true")
	}
	return a
}

// splitHostPort checks "host:port". For a listen address the host may be
// empty (all addresses) and the port 0 (any free port).
func splitHostPort(s string, listen bool) (host string, port int, problem string) {
	example := `"vpn.example.org:51820"`
	if listen {
		example = `"127.0.0.1:8470"`
	}
	h, p, err := splitHP(s)
	if errors.Is(err, errNoBrackets) {
		return "", 0, "an IPv6 address needs brackets: [address]:port"
	}
	if err != nil {
		return "", 0, "must be host:port, such as " + example
	}
	n, err := strconv.Atoi(p)
	lo := 1
	if listen {
		lo = 0
	}
	if err != nil || n < lo || n > 65535 || p != strconv.Itoa(n) {
		return "", 0, fmt.Sprintf("port %q must be a number between %d and 65535", p, lo)
	}
	if h == "" {
		if listen {
			return "", n, ""
		}
		return "", 0, "must be host:port, such as " + example
	}
	if !validHost(h) {
		return "", 0, fmt.Sprintf("host %q is not an IP address or DNS name", h)
	}
	return h, n, ""
}

var errNoBrackets = errors.New("IPv6 literal without brackets")

// splitHP splits host and port, requiring brackets around IPv6 literals.
func splitHP(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("missing port")
	}
	host, port = s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return "", "", errors.New("missing ']'")
		}
		host = host[1 : len(host)-1]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return "", "", errors.New("bad IPv6 literal")
		}
		return host, port, nil
	}
	if strings.ContainsAny(host, "[]") {
		return "", "", errors.New("stray bracket")
	}
	if strings.Contains(host, ":") {
		return "", "", errNoBrackets
	}
	return host, port, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// validHost accepts an IP address without zone or a DNS name.
func validHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	return validDomain(h)
}

// validDomain accepts DNS names: labels of 1..63 letters, digits and
// hyphens, not starting or ending with a hyphen, at most 253 bytes, an
// optional final dot, and a last label that is not all digits (so that a
// mistyped IPv4 address is not taken for a name).
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c == '-' || isDigit(c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

// entryLabels names the entries of an array of tables: by name when the
// name is valid and used once, else by position ("interface #2").
func entryLabels(section string, names []string, valid func(string) bool) []string {
	count := make(map[string]int, len(names))
	for _, n := range names {
		count[n]++
	}
	labels := make([]string, len(names))
	for i, n := range names {
		if n != "" && count[n] == 1 && valid(n) {
			labels[i] = fmt.Sprintf("%s %q", section, n)
		} else {
			labels[i] = fmt.Sprintf("%s #%d", section, i+1)
		}
	}
	return labels
}

func entryNames(entries []map[string]any, key string) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i], _ = e[key].(string)
	}
	return out
}

func parseInterfaces(top *table, dir string) []Interface {
	entries := top.entries("interface")
	names := entryNames(entries, "name")
	labels := entryLabels("interface", names, func(s string) bool { return ifNameProblem(s) == "" })
	first := firstIndex(names)
	var out []Interface
	for i, m := range entries {
		t := newTable(m, "", top.ps)
		t.array, t.label = "interface", labels[i]
		t.unknown("name", "mode", "private_key_file", "listen_port", "endpoint", "orphans", "orphan_removal_limit")

		ifc := Interface{Mode: DefaultMode, Orphans: DefaultOrphans, OrphanRemovalLimit: DefaultOrphanLimit}
		if s, ok := t.str("name"); ok {
			ifc.Name = s
			if reason := ifNameProblem(s); reason != "" {
				t.bad("name", s, "%s", reason)
			} else if j := first[s]; j < i {
				t.bad("name", s, "already used by interface #%d", j+1)
			}
		} else if !t.has("name") {
			t.problem("name is required")
		}
		if s, ok := t.str("mode"); ok {
			ifc.Mode = s
			if s != ModeExisting && s != ModeKernel && s != ModeUserspace {
				t.bad("mode", s, `must be "existing", "kernel" or "userspace"`)
			}
		}
		modeOK := t.ok("mode")

		ifc.PrivateKeyFile = t.path("private_key_file", "", dir, false)
		if modeOK && ifc.Owned() && ifc.PrivateKeyFile == "" && t.ok("private_key_file") {
			t.problem("private_key_file is required when mode = %q", ifc.Mode)
		}

		if ifc.Owned() {
			ifc.ListenPort = DefaultListenPort
		}
		if n, ok := t.integer("listen_port"); ok {
			switch {
			case n >= 1 && n <= 65535:
				ifc.ListenPort = int(n)
			case n == 0 && ifc.Mode == ModeExisting:
				ifc.ListenPort = 0
			case ifc.Mode == ModeExisting || !modeOK:
				t.bad("listen_port", n, "must be between 1 and 65535, or 0 to leave the port alone")
			default:
				t.bad("listen_port", n, "must be between 1 and 65535")
			}
		}
		if s, ok := t.str("endpoint"); ok && s != "" {
			if _, _, reason := splitHostPort(s, false); reason != "" {
				t.bad("endpoint", s, "%s", reason)
			} else {
				ifc.Endpoint = s
			}
		}
		if s, ok := t.str("orphans"); ok {
			ifc.Orphans = s
			if s != OrphansRemove && s != OrphansKeep {
				t.bad("orphans", s, `must be "remove" or "keep"`)
			}
		}
		if v, ok := t.m["orphan_removal_limit"]; ok {
			var l OrphanLimit
			var err error
			switch v := v.(type) {
			case string:
				l, err = ParseOrphanLimit(v)
			case int64:
				l, err = CountLimit(v)
			default:
				err = errOrphanLimit
			}
			if err != nil {
				t.bad("orphan_removal_limit", v, "%s", err)
			} else {
				ifc.OrphanRemovalLimit = l
			}
		}
		if ifc.ListenPort != 0 && t.ok("listen_port", "mode") {
			for j, o := range out {
				if o.ListenPort != ifc.ListenPort {
					continue
				}
				if t.has("listen_port") {
					t.bad("listen_port", int64(ifc.ListenPort), "already used by %s", labels[j])
				} else {
					t.problem("listen_port (default %d): already used by %s", ifc.ListenPort, labels[j])
				}
				break
			}
		}
		out = append(out, ifc)
	}
	return out
}

// firstIndex maps each name to the position of its first entry.
func firstIndex(names []string) map[string]int {
	m := make(map[string]int, len(names))
	for i, n := range names {
		if _, ok := m[n]; !ok {
			m[n] = i
		}
	}
	return m
}

// ifNameProblem checks a Linux interface name as the kernel does
// (dev_valid_name): 1..15 bytes, not "." or "..", no '/', ':', NUL or
// white space.
func ifNameProblem(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > 15:
		return fmt.Sprintf("is %d bytes long; Linux allows at most 15", len(s))
	case s == "." || s == "..":
		return "is not a valid interface name"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '/' || c == ':' || c == 0 || c == ' ' || ('\t' <= c && c <= '\r') {
			return fmt.Sprintf("must not contain %q", rune(c))
		}
	}
	return ""
}

// profileIDProblem checks a profile id: 1..64 of [A-Za-z0-9._-].
func profileIDProblem(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if len(s) > 64 {
		return fmt.Sprintf("is %d bytes long; at most 64 are allowed", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '.' || c == '_' || c == '-' || isDigit(c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return `must contain only letters, digits, ".", "_" and "-"`
		}
	}
	return ""
}

func parseProfiles(top *table, ifaces []Interface, sessTable *table, sess Sessions) []Profile {
	entries := top.entries("profile")
	ids := entryNames(entries, "id")
	labels := entryLabels("profile", ids, func(s string) bool { return profileIDProblem(s) == "" })
	first := firstIndex(ids)
	var out []Profile
	// ranges of the profiles read so far, for the overlap check
	type placed struct {
		label, iface string
		v4, v6       netip.Prefix
	}
	var seen []placed
	for i, m := range entries {
		label := labels[i]
		t := newTable(m, "", top.ps)
		t.array, t.label = "profile", label
		t.unknown("id", "interface", "display_name", "ipv4_range", "ipv6_range", "client_allowed_ips",
			"dns", "expiry", "max_expiry", "idle_expiry", "max_configs_per_user", "persistent_keepalive", "preshared_keys")

		p := Profile{MaxConfigsPerUser: DefaultMaxConfigsPerUser}
		if s, ok := t.str("id"); ok {
			p.ID = s
			if reason := profileIDProblem(s); reason != "" {
				t.bad("id", s, "%s", reason)
			} else if j := first[s]; j < i {
				t.bad("id", s, "already used by profile #%d", j+1)
			}
		} else if !t.has("id") {
			t.problem("id is required")
		}
		if s, ok := t.str("interface"); ok {
			p.Interface = s
			found := false
			for _, ifc := range ifaces {
				found = found || ifc.Name == s
			}
			if !found {
				t.bad("interface", s, "no [[interface]] has this name")
			}
		} else if !t.has("interface") {
			t.problem("interface is required")
		}
		p.DisplayName = p.ID
		if s, ok := t.str("display_name"); ok {
			p.DisplayName = s
			if reason := displayNameProblem(s); reason != "" {
				t.bad("display_name", s, "%s", reason)
			}
		}

		p.IPv4Range = t.addrRange("ipv4_range", 4)
		p.IPv6Range = t.addrRange("ipv6_range", 6)
		if !t.has("ipv4_range") && !t.has("ipv6_range") {
			t.problem("needs ipv4_range, ipv6_range or both")
		}
		for _, o := range seen {
			if o.iface != p.Interface || p.Interface == "" {
				continue
			}
			if p.IPv4Range.IsValid() && o.v4.IsValid() && p.IPv4Range.Overlaps(o.v4) {
				t.bad("ipv4_range", p.IPv4Range.String(), "overlaps ipv4_range %q of %s on interface %q",
					o.v4.String(), o.label, p.Interface)
			}
			if p.IPv6Range.IsValid() && o.v6.IsValid() && p.IPv6Range.Overlaps(o.v6) {
				t.bad("ipv6_range", p.IPv6Range.String(), "overlaps ipv6_range %q of %s on interface %q",
					o.v6.String(), o.label, p.Interface)
			}
		}
		seen = append(seen, placed{label, p.Interface, p.IPv4Range, p.IPv6Range})

		n, present := t.strList("client_allowed_ips", func(i int, s string) {
			pfx, reason := parseAllowedIP(s)
			if reason != "" {
				t.bad(fmt.Sprintf("client_allowed_ips[%d]", i), s, "%s", reason)
				return
			}
			p.ClientAllowedIPs = append(p.ClientAllowedIPs, pfx)
		})
		if present && n == 0 {
			t.bad("client_allowed_ips", m["client_allowed_ips"], `must not be empty (the default is everything: ["0.0.0.0/0", "::/0"])`)
		} else if !t.has("client_allowed_ips") {
			for _, d := range DefaultClientAllowedIPs {
				if d.Addr().Is4() && p.IPv4Range.IsValid() || d.Addr().Is6() && p.IPv6Range.IsValid() {
					p.ClientAllowedIPs = append(p.ClientAllowedIPs, d)
				}
			}
		}
		t.strList("dns", func(i int, s string) {
			if !validDNSEntry(s) {
				t.bad(fmt.Sprintf("dns[%d]", i), s, "is not an IP address or a search domain")
				return
			}
			p.DNS = append(p.DNS, s)
		})

		var expiryOK, maxOK bool
		p.Expiry, expiryOK = t.duration("expiry", DefaultExpiry)
		defMax := DefaultMaxExpiry
		if p.Expiry == 0 {
			defMax = 0
		} else if p.Expiry > defMax {
			defMax = p.Expiry
		}
		p.MaxExpiry, maxOK = t.duration("max_expiry", defMax)
		if expiryOK && maxOK && t.has("max_expiry") && p.MaxExpiry != 0 {
			if p.Expiry == 0 {
				t.bad("expiry", t.m["expiry"], "never expiring is longer than max_expiry = %s; "+
					`set an expiry of at most max_expiry, or max_expiry = "0"`, render(t.m["max_expiry"]))
			} else if p.MaxExpiry < p.Expiry {
				t.bad("max_expiry", t.m["max_expiry"], "must not be less than %s", t.shownDuration("expiry", DefaultExpiry))
			}
		}

		var ok bool
		if p.PersistentKeepalive, ok = t.duration("persistent_keepalive", DefaultPersistentKeepalive); ok {
			k := p.PersistentKeepalive
			if k != 0 && (k%time.Second != 0 || k > 65535*time.Second) {
				t.bad("persistent_keepalive", t.m["persistent_keepalive"],
					`must be whole seconds from 1s to 65535s (18h12m15s), or "0" (off)`)
			}
		}
		if p.IdleExpiry, ok = t.duration("idle_expiry", DefaultIdleExpiry); ok && p.IdleExpiry != 0 &&
			sessTable.ok("offline_after") && p.IdleExpiry < sess.OfflineAfter {
			t.bad("idle_expiry", t.m["idle_expiry"], `must be at least %s, or "0" (off)`,
				sessTable.shownDuration("offline_after", DefaultOfflineAfter))
		}
		if n, ok := t.integer("max_configs_per_user"); ok {
			if n < 0 || n > 1<<31-1 {
				t.bad("max_configs_per_user", n, "must be 0 (no limit) or more")
			} else {
				p.MaxConfigsPerUser = int(n)
			}
		}
		if b, ok := t.boolean("preshared_keys"); ok {
			p.PresharedKeys = b
		}
		out = append(out, p)
	}
	return out
}

// addrRange reads a profile's address range of the given family (4 or 6).
func (t *table) addrRange(k string, family int) netip.Prefix {
	s, ok := t.str(k)
	if !ok {
		return netip.Prefix{}
	}
	example := `"10.42.0.0/24"`
	if family == 6 {
		example = `"fd42::/64"`
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.bad(k, s, "is not an address range such as %s", example)
		return netip.Prefix{}
	}
	a := p.Addr()
	switch {
	case family == 4 && a.Is6():
		t.bad(k, s, "is an IPv6 range; it belongs in ipv6_range")
		return netip.Prefix{}
	case family == 6 && a.Is4():
		t.bad(k, s, "is an IPv4 range; it belongs in ipv4_range")
		return netip.Prefix{}
	case family == 6 && a.Is4In6():
		t.bad(k, s, "is an IPv4-mapped range; put the IPv4 range in ipv4_range")
		return netip.Prefix{}
	case p.Masked() != p:
		t.bad(k, s, "has host bits set; it should be %q", p.Masked().String())
		return netip.Prefix{}
	case family == 4 && p.Bits() > MaxIPv4Bits:
		t.bad(k, s, "is too small: network, server, one client and broadcast need a /%d or larger range", MaxIPv4Bits)
		return netip.Prefix{}
	case family == 6 && p.Bits() > MaxIPv6Bits:
		t.bad(k, s, "is too small: network, server and clients need a /%d or larger range", MaxIPv6Bits)
		return netip.Prefix{}
	}
	return p
}

// parseAllowedIP reads a client_allowed_ips entry: a masked prefix, or a
// single address (taken as /32 or /128).
func parseAllowedIP(s string) (netip.Prefix, string) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, `is not an address range such as "0.0.0.0/0" or "10.42.0.0/16"`
		}
		return netip.PrefixFrom(a, a.BitLen()), ""
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, `is not an address range such as "0.0.0.0/0" or "10.42.0.0/16"`
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Sprintf("has host bits set; it should be %q", p.Masked().String())
	}
	return p, ""
}

// validDNSEntry accepts an IP address (no zone) or a search domain.
func validDNSEntry(s string) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	return validDomain(s)
}

func displayNameProblem(s string) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	if len(s) > 256 {
		return fmt.Sprintf("is %d bytes long; at most 256 are allowed", len(s))
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "must not contain control characters"
		}
	}
	return ""
}
