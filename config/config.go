// Package config reads wgkeeper's TOML configuration file: the types, the
// defaults of every optional key, the resolution of relative paths against the
// file's directory, and the validation that rejects a bad file with every
// problem named at once.
//
// It does not touch the system: it never checks that files named in the
// configuration exist (the hooks, store and wg packages do that when they
// start), never resolves host names and never opens the database.
package config

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults of the optional keys. A key that is absent from the file takes the
// value here; a key that is present always wins, including "" and "0" where
// they are allowed.
const (
	// DefaultDatabase is the SQLite file (key database).
	DefaultDatabase = "/var/lib/wgkeeper/wgkeeper.db"
	// DefaultLockDir holds lock and owner files when the database is
	// PostgreSQL (key lock_dir); with SQLite they live beside the file.
	DefaultLockDir = "/var/lib/wgkeeper"

	// DefaultHookTimeout bounds one run of the script (hooks.timeout).
	DefaultHookTimeout = 30 * time.Second
	// DefaultHookConcurrency is how many scripts run at once (hooks.concurrency).
	DefaultHookConcurrency = 4
	// DefaultHookQueueTimeout is how long a create waits for a free script
	// slot before it is answered "busy" (hooks.queue_timeout).
	DefaultHookQueueTimeout = 5 * time.Second
	// DefaultMaxAttempts is how often a D event is tried before it is marked
	// failed (hooks.max_attempts).
	DefaultMaxAttempts = 10
	// DefaultRetryBase is the first retry delay; it doubles per attempt
	// (hooks.retry_base).
	DefaultRetryBase = 10 * time.Second
	// DefaultRetryMax caps the retry delay (hooks.retry_max).
	DefaultRetryMax = time.Hour

	// DefaultSchedule is the daemon's housekeeping schedule, a robfig/cron
	// spec (housekeeping.schedule). "" turns the daemon's schedule off (use
	// the systemd timer instead).
	DefaultSchedule = "@every 1m"
	// DefaultReconcileInterval is how often the daemon reconciles every
	// interface (housekeeping.reconcile_interval); "0" turns it off.
	DefaultReconcileInterval = 30 * time.Second
	// DefaultLogRetention is how long done events are kept
	// (housekeeping.log_retention); "0" keeps them forever.
	DefaultLogRetention = 90 * Day

	// DefaultPollInterval is how often the daemon reads each interface to
	// track sessions (sessions.poll_interval).
	DefaultPollInterval = 10 * time.Second
	// DefaultOfflineAfter is how long a session lasts without a newer
	// handshake or received bytes (sessions.offline_after). WireGuard
	// re-handshakes every 2 minutes while traffic flows; a shorter
	// threshold flaps.
	DefaultOfflineAfter = 3 * time.Minute
	// DefaultOnReject is what a failed session connect script does
	// (sessions.on_reject).
	DefaultOnReject = OnRejectIgnore
	// DefaultIdleExpiry reclaims configs without a handshake for this long
	// ([[profile]] idle_expiry); "0" = off.
	DefaultIdleExpiry time.Duration = 0

	// DefaultAPIListen is the API's address (api.listen); "" turns the API off.
	DefaultAPIListen = "127.0.0.1:8470"
	// DefaultAPITokenFile holds the API's bearer token (api.token_file).
	DefaultAPITokenFile = "/etc/wgkeeper/api.token"

	// DefaultMode is the interface mode ([[interface]] mode).
	DefaultMode = ModeExisting
	// DefaultOrphans is what reconcile does with device peers that are not in
	// the store ([[interface]] orphans).
	DefaultOrphans = OrphansRemove
	// DefaultListenPort is the UDP port of kernel and userspace interfaces
	// ([[interface]] listen_port). For mode "existing" the default is 0:
	// wgkeeper leaves the port alone.
	DefaultListenPort = 51820

	// DefaultExpiry is a new config's lifetime ([[profile]] expiry); "0" =
	// never.
	DefaultExpiry = 90 * Day
	// DefaultMaxExpiry is the longest lifetime a request may ask for
	// ([[profile]] max_expiry) when expiry is not zero and not longer; a
	// longer expiry raises the default max_expiry to it, and expiry = "0"
	// makes it "0" (no maximum).
	DefaultMaxExpiry = 365 * Day
	// DefaultPersistentKeepalive is written into client configs
	// ([[profile]] persistent_keepalive); "0" = off.
	DefaultPersistentKeepalive = 25 * time.Second
	// DefaultMaxConfigsPerUser is the per-user limit in a profile
	// ([[profile]] max_configs_per_user); 0 = no limit.
	DefaultMaxConfigsPerUser = 0
)

// DefaultClientAllowedIPs is the default of [[profile]] client_allowed_ips:
// everything, limited to the address families the profile has ("0.0.0.0/0"
// with an ipv4_range, "::/0" with an ipv6_range).
var DefaultClientAllowedIPs = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/0"),
	netip.MustParsePrefix("::/0"),
}

// Interface modes.
const (
	ModeExisting  = "existing"  // created and owned by something else
	ModeKernel    = "kernel"    // wgkeeper creates a kernel WireGuard link
	ModeUserspace = "userspace" // wgkeeper runs an embedded wireguard-go device
)

// Orphan policies.
const (
	OrphansRemove = "remove" // reconcile removes device peers not in the store
	OrphansKeep   = "keep"   // reconcile leaves them and reports them
)

// What a session connect script's failure does (sessions.on_reject).
const (
	OnRejectIgnore = "ignore" // the failure is recorded, nothing else
	OnRejectRevoke = "revoke" // the config is revoked
)

// MinPollInterval is the shortest sessions.poll_interval.
const MinPollInterval = time.Second

// Limits on address ranges.
const (
	// MaxIPv4Bits is the longest IPv4 prefix a profile may have: a /30 holds
	// network, server, one client and broadcast.
	MaxIPv4Bits = 30
	// MaxIPv6Bits is the longest IPv6 prefix a profile may have: a /126 holds
	// the network (subnet-router anycast) address, the server and two clients.
	MaxIPv6Bits = 126
	// MaxCapacity caps Profile.Capacity: no profile holds more configs than
	// this (far beyond what one WireGuard device carries).
	MaxCapacity = 1 << 24
)

// Config is a loaded, validated configuration. Every path in it is absolute.
type Config struct {
	// Path is the absolute path of the file loaded; "" when parsed from bytes.
	Path string
	// Database is the SQLite file (absolute), or a PostgreSQL URL
	// (postgres:// or postgresql://, kept as written; see PostgreSQL).
	Database string
	// LockDir holds the lock and owner files of the processes working on
	// this host: the SQLite file's directory, or with PostgreSQL the key
	// lock_dir (default DefaultLockDir). Absolute.
	LockDir string
	// Node names this host among the nodes sharing a PostgreSQL database
	// (key node; default: the host name). Every interface this file
	// declares belongs to it.
	Node         string
	Hooks        Hooks
	Housekeeping Housekeeping
	Sessions     Sessions
	API          API
	Interfaces   []Interface
	Profiles     []Profile
}

// Hooks configures the connect/disconnect script and the delivery of events.
type Hooks struct {
	// Script is the absolute path of the script; "" = none configured. Its
	// existence and permissions are checked by the hooks package, not here.
	Script      string
	Timeout     time.Duration // > 0
	Concurrency int           // 1..MaxHookConcurrency
	// QueueTimeout bounds a create's wait for a free script slot (> 0); it
	// is not part of Timeout.
	QueueTimeout time.Duration
	MaxAttempts  int           // >= 1
	RetryBase    time.Duration // > 0, <= RetryMax
	RetryMax     time.Duration // > 0
	// PassEnv names variables copied from wgkeeper's environment into the
	// script's; never PATH or VPN_*.
	PassEnv []string
}

// MaxHookConcurrency bounds hooks.concurrency.
const MaxHookConcurrency = 1024

// Housekeeping configures the daemon's periodic jobs.
type Housekeeping struct {
	// Schedule is a robfig/cron spec (5 fields or a descriptor such as
	// "@every 1m"); "" = the daemon runs no scheduled housekeeping.
	Schedule          string
	ReconcileInterval time.Duration // 0 = off
	LogRetention      time.Duration // 0 = keep done events forever
}

// Sessions configures session tracking: connects and disconnects seen
// from the devices' handshakes and traffic.
type Sessions struct {
	// Script is the absolute path of the session script; "" = no session
	// events. Never the same events as Hooks.Script.
	Script string
	// PollInterval is how often each interface is read (>= MinPollInterval).
	PollInterval time.Duration
	// OfflineAfter ends a session without activity for this long
	// (>= 2 × PollInterval).
	OfflineAfter time.Duration
	// OnReject is OnRejectIgnore or OnRejectRevoke.
	OnReject string
}

// API configures the HTTP API.
type API struct {
	// Listen is "host:port" or "unix:/absolute/path"; "" = no API.
	Listen string
	// TokenFile holds the bearer token (absolute; required when Listen is set).
	TokenFile string
	// ReadTokenFile holds a second, read-only bearer token (absolute); ""
	// = none. It must not be TokenFile.
	ReadTokenFile string
	// TLSCert and TLSKey are both set (absolute) or both empty.
	TLSCert, TLSKey string
	// Insecure allows plain HTTP on a non-loopback TCP address.
	Insecure bool
	// MetricsPublic serves /metrics without the token.
	MetricsPublic bool
}

// UnixSocket returns the socket path when Listen is "unix:PATH".
func (a API) UnixSocket() (string, bool) {
	return strings.CutPrefix(a.Listen, "unix:")
}

// Interface is one WireGuard interface whose peers wgkeeper manages.
type Interface struct {
	// Name is the Linux interface name (1..15 bytes).
	Name string
	// Mode is ModeExisting, ModeKernel or ModeUserspace.
	Mode string
	// PrivateKeyFile is absolute; required for kernel and userspace, optional
	// for existing (then wgkeeper sets the device's key from it).
	PrivateKeyFile string
	// ListenPort is 1..65535, or 0 for an existing interface whose port
	// wgkeeper leaves alone.
	ListenPort int
	// Endpoint is "host:port" written into client configs; "" = none.
	Endpoint string
	// Orphans is OrphansRemove or OrphansKeep.
	Orphans string
	// OrphanRemovalLimit caps the orphans one reconcile removes; above
	// it none are removed and the interface is blocked.
	OrphanRemovalLimit OrphanLimit
}

// Owned reports whether wgkeeper creates and owns the interface.
func (i Interface) Owned() bool { return i.Mode == ModeKernel || i.Mode == ModeUserspace }

// Profile is a class of configs living on one interface.
type Profile struct {
	ID, Interface, DisplayName string
	// IPv4Range and IPv6Range are masked; the zero Prefix means none. At
	// least one is set.
	IPv4Range, IPv6Range netip.Prefix
	// ClientAllowedIPs is written into client configs (masked, not empty).
	ClientAllowedIPs []netip.Prefix
	// DNS holds IP addresses and search domains for client configs.
	DNS []string
	// Expiry is the default lifetime (0 = never); MaxExpiry the longest a
	// request may ask for (0 = no maximum); PersistentKeepalive is written
	// into client configs (0 = off).
	Expiry, MaxExpiry, PersistentKeepalive time.Duration
	// IdleExpiry removes an active config without a handshake for this long
	// (counted from its creation when it never had one); 0 = off. When set
	// it is at least Sessions.OfflineAfter.
	IdleExpiry time.Duration
	// MaxConfigsPerUser limits a user's configs in the profile (0 = none).
	MaxConfigsPerUser int
	// PresharedKeys generates a preshared key per config.
	PresharedKeys bool
}

// ServerAddrs returns the server's own address in each range: the range's
// first address + 1 with the range's prefix length, IPv4 first. It returns
// nil for a profile without ranges.
func (p Profile) ServerAddrs() []netip.Prefix {
	var out []netip.Prefix
	for _, r := range []netip.Prefix{p.IPv4Range, p.IPv6Range} {
		if !r.IsValid() {
			continue
		}
		out = append(out, netip.PrefixFrom(r.Masked().Addr().Next(), r.Bits()))
	}
	return out
}

// Capacity returns the number of client addresses of the profile: the
// smallest, over the families it has, of the range's size minus the network
// and server addresses (and the broadcast address for IPv4), capped at
// MaxCapacity. Host index i (0 <= i < Capacity) is range + 2 + i in each
// family. A profile without ranges has capacity 0.
func (p Profile) Capacity() int {
	n := -1
	if p.IPv4Range.IsValid() {
		n = rangeHosts(p.IPv4Range, 3)
	}
	if p.IPv6Range.IsValid() {
		if c := rangeHosts(p.IPv6Range, 2); n < 0 || c < n {
			n = c
		}
	}
	return max(n, 0)
}

// rangeHosts returns 2^(hostbits) - reserved, within [0, MaxCapacity].
func rangeHosts(r netip.Prefix, reserved int) int {
	hostBits := r.Addr().BitLen() - r.Bits()
	if hostBits >= 25 { // 2^25 - 3 > MaxCapacity
		return MaxCapacity
	}
	return min(max((1<<hostBits)-reserved, 0), MaxCapacity)
}

// HostAddrs returns the client addresses for host index i of the profile
// (range + 2 + i in each family the profile has; zero Addr for a family it
// has not). ok is false when i is outside 0..Capacity-1.
func (p Profile) HostAddrs(i int) (v4, v6 netip.Addr, ok bool) {
	if i < 0 || i >= p.Capacity() {
		return netip.Addr{}, netip.Addr{}, false
	}
	if p.IPv4Range.IsValid() {
		v4 = addOffset(p.IPv4Range.Masked().Addr(), uint64(i)+2)
	}
	if p.IPv6Range.IsValid() {
		v6 = addOffset(p.IPv6Range.Masked().Addr(), uint64(i)+2)
	}
	return v4, v6, true
}

func addOffset(a netip.Addr, off uint64) netip.Addr {
	b := a.AsSlice()
	n := new(big.Int).SetBytes(b)
	n.Add(n, new(big.Int).SetUint64(off))
	out := n.FillBytes(make([]byte, len(b)))
	r, _ := netip.AddrFromSlice(out)
	return r
}

// Interface returns the interface with the given name.
func (c *Config) Interface(name string) (Interface, bool) {
	for _, i := range c.Interfaces {
		if i.Name == name {
			return i, true
		}
	}
	return Interface{}, false
}

// Profile returns the profile with the given id.
func (c *Config) Profile(id string) (Profile, bool) {
	for _, p := range c.Profiles {
		if p.ID == id {
			return p, true
		}
	}
	return Profile{}, false
}

// ProfilesOn returns the profiles living on the named interface, in file
// order.
func (c *Config) ProfilesOn(iface string) []Profile {
	var out []Profile
	for _, p := range c.Profiles {
		if p.Interface == iface {
			out = append(out, p)
		}
	}
	return out
}

// Error is a configuration that was rejected. Problems lists every problem
// found, each one line naming the key and the offending value, in file
// section order.
type Error struct {
	// Path is the file that was rejected ("" when parsed from bytes).
	Path     string
	Problems []string
}

// Error joins the problems with newlines.
func (e *Error) Error() string { return strings.Join(e.Problems, "\n") }

// Load reads the file at path, parses it, fills in defaults, resolves
// relative paths against the file's directory and validates the result.
// A file that cannot be read gives an error wrapping the os error (so
// errors.Is(err, fs.ErrNotExist) works); a file that is not valid gives a
// *Error listing every problem. Load has no side effects.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data, filepath.Dir(abs))
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.Path = abs
		}
		return nil, err
	}
	c.Path = abs
	return c, nil
}

// Parse is Load for a file already read: data is the TOML text and dir the
// directory relative paths are resolved against (made absolute against the
// working directory when it is relative). Problems are returned as a *Error.
func Parse(data []byte, dir string) (*Config, error) {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve config directory %q: %w", dir, err)
	}
	return parse(data, absDir)
}

// IsPostgresURL reports whether a database value is a PostgreSQL URL
// (postgres:// or postgresql://, in any case); anything else is a SQLite
// path.
func IsPostgresURL(database string) bool {
	l := strings.ToLower(database)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// PostgreSQL reports whether the configured database is a PostgreSQL URL.
func (c *Config) PostgreSQL() bool { return IsPostgresURL(c.Database) }

// DatabaseName is the database for messages and logs: the SQLite path, or
// the PostgreSQL URL with its password replaced by "xxxxx".
func (c *Config) DatabaseName() string {
	if !c.PostgreSQL() {
		return c.Database
	}
	u, err := url.Parse(c.Database)
	if err != nil {
		return "(a PostgreSQL URL)"
	}
	return u.Redacted()
}

// ValidNodeName reports why name cannot be a node's name ("" when it can):
// 1 to 48 characters out of A-Z, a-z, 0-9, ".", "_" and "-".
func ValidNodeName(name string) string {
	if name == "" || len(name) > 48 {
		return "must be 1 to 48 characters long"
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return "may hold only A-Z, a-z, 0-9, \".\", \"_\" and \"-\""
		}
	}
	return ""
}

// defaultNode is the host name, or "" when it is no valid node name.
func defaultNode() string {
	h, err := os.Hostname()
	if err != nil || ValidNodeName(h) != "" {
		return ""
	}
	return h
}
