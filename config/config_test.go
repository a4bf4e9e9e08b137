package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The directory the files of the table tests are "in".
const testDir = "/etc/wgkeeper"

const (
	iface   = "[[interface]]\nname = \"wg0\"\n"
	profile = "[[profile]]\nid = \"staff\"\ninterface = \"wg0\"\nipv4_range = \"10.42.0.0/24\"\n"
)

// problemsOf parses data and returns the problems, failing the test when
// the file is accepted or the error is not a *Error.
func problemsOf(t *testing.T, data string) []string {
	t.Helper()
	c, err := Parse([]byte(data), testDir)
	if err == nil {
		t.Fatalf("accepted, want an error; got %+v", c)
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	if got := err.Error(); got != strings.Join(ce.Problems, "\n") {
		t.Errorf("Error() = %q, want the problems joined by newlines", got)
	}
	return ce.Problems
}

func diffLines(want, got []string) string {
	if reflect.DeepEqual(want, got) {
		return ""
	}
	return "want:\n\t" + strings.Join(want, "\n\t") + "\ngot:\n\t" + strings.Join(got, "\n\t")
}

func TestInvalidFiles(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"syntax error", "database = \n",
			[]string{`line 1, column 12: expected value but found '\n' instead`}},
		{"table defined twice", "[hooks]\n[hooks]\n",
			[]string{`line 2, column 2: Key 'hooks' has already been defined.`}},
		{"unknown top-level key", "databse = \"x.db\"\n",
			[]string{`unknown key "databse"`}},
		{"unknown section", "[hook]\nscript = \"x\"\n",
			[]string{`unknown key "hook"`}},
		{"unknown key in section", "[hooks]\ntimeoutt = \"5s\"\n",
			[]string{`unknown key "hooks.timeoutt"`}},
		{"unknown key in interface", "[[interface]]\nnmae = \"wg0\"\n",
			[]string{`unknown key "interface.nmae" in interface #1`, `interface #1: name is required`}},
		{"unknown key in profile", iface + profile + "ipv4_rnage = \"10.1.0.0/24\"\n",
			[]string{`unknown key "profile.ipv4_rnage" in profile "staff"`}},
		{"section is not a table", "hooks = 5\n",
			[]string{`hooks = 5: must be a table ([hooks])`}},
		{"interface is a single table", "[interface]\nname = \"wg0\"\n",
			[]string{`interface = {…}: must be an array of tables ([[interface]])`}},
		{"empty database", "database = \"\"\n",
			[]string{`database = "": must not be empty`}},
		{"database is a directory", "database = \"/var/lib/wgkeeper/\"\n",
			[]string{`database = "/var/lib/wgkeeper/": must name a file, not a directory`}},
		{"tilde path", "[hooks]\nscript = \"~/bin/hook\"\n",
			[]string{`hooks.script = "~/bin/hook": "~" is not expanded here; write the full path`}},
		{"string where integer", "[hooks]\nconcurrency = \"4\"\n",
			[]string{`hooks.concurrency = "4": must be an integer`}},
		{"integer where duration", "[hooks]\ntimeout = 30\n",
			[]string{`hooks.timeout = 30: must be a duration string such as "30s", "1h30m" or "90d"`}},
		{"duration unknown unit", "[hooks]\ntimeout = \"30x\"\n",
			[]string{`hooks.timeout = "30x": unknown unit "x" (use ns, us, ms, s, m, h or d)`}},
		{"duration negative", "[hooks]\ntimeout = \"-5s\"\n",
			[]string{`hooks.timeout = "-5s": must not be negative`}},
		{"duration garbage", "[housekeeping]\nlog_retention = \"ninety days\"\n",
			[]string{`housekeeping.log_retention = "ninety days": not a duration (examples: "30s", "1h30m", "90d", "0")`}},
		{"duration missing unit", "[housekeeping]\nlog_retention = \"90\"\n",
			[]string{`housekeeping.log_retention = "90": missing unit (use ns, us, ms, s, m, h or d)`}},
		{"duration overflow", "[housekeeping]\nlog_retention = \"106752d\"\n",
			[]string{`housekeeping.log_retention = "106752d": too large (the maximum is about 106751d)`}},
		{"zero hook timeout", "[hooks]\ntimeout = \"0\"\n",
			[]string{`hooks.timeout = "0": must be greater than 0`}},
		{"zero queue timeout", "[hooks]\nqueue_timeout = \"0\"\n",
			[]string{`hooks.queue_timeout = "0": must be greater than 0`}},
		{"negative queue timeout", "[hooks]\nqueue_timeout = \"-1s\"\n",
			[]string{`hooks.queue_timeout = "-1s": must not be negative`}},
		{"queue timeout not a duration", "[hooks]\nqueue_timeout = 5\n",
			[]string{`hooks.queue_timeout = 5: must be a duration string such as "30s", "1h30m" or "90d"`}},
		{"concurrency below 1", "[hooks]\nconcurrency = 0\n",
			[]string{`hooks.concurrency = 0: must be between 1 and 1024`}},
		{"max_attempts below 1", "[hooks]\nmax_attempts = 0\n",
			[]string{`hooks.max_attempts = 0: must be between 1 and 2147483647`}},
		{"retry_base above retry_max", "[hooks]\nretry_base = \"2h\"\nretry_max = \"1h\"\n",
			[]string{`hooks.retry_base = "2h": must not exceed hooks.retry_max = "1h"`}},
		{"retry_base above default retry_max", "[hooks]\nretry_base = \"2h\"\n",
			[]string{`hooks.retry_base = "2h": must not exceed hooks.retry_max (default "1h")`}},
		{"retry_max below default retry_base", "[hooks]\nretry_max = \"5s\"\n",
			[]string{`hooks.retry_max = "5s": must not be less than hooks.retry_base (default "10s")`}},
		{"pass_env names", "[hooks]\npass_env = [\"PATH\", \"VPN_USER_ID\", \"\", \"A=B\", 5, \"HTTPS_PROXY\"]\n",
			[]string{
				`hooks.pass_env[0] = "PATH": PATH is always set by wgkeeper and cannot be passed`,
				`hooks.pass_env[1] = "VPN_USER_ID": VPN_* variables are reserved for the event`,
				`hooks.pass_env[2] = "": must not be empty`,
				`hooks.pass_env[3] = "A=B": must not contain "=" or a NUL byte`,
				`hooks.pass_env[4] = 5: must be a string`,
			}},
		{"pass_env not an array", "[hooks]\npass_env = \"HOME\"\n",
			[]string{`hooks.pass_env = "HOME": must be an array of strings`}},
		{"cron fields", "[housekeeping]\nschedule = \"every minute\"\n",
			[]string{`housekeeping.schedule = "every minute": expected exactly 5 fields, found 2: [every minute]`}},
		{"cron descriptor", "[housekeeping]\nschedule = \"@sometimes\"\n",
			[]string{`housekeeping.schedule = "@sometimes": unrecognized descriptor: @sometimes`}},
		{"cron every too short", "[housekeeping]\nschedule = \"@every -1m\"\n",
			[]string{`housekeeping.schedule = "@every -1m": interval must be at least 1s`}},
		{"cron every with days", "[housekeeping]\nschedule = \"@every 1d\"\n",
			[]string{`housekeeping.schedule = "@every 1d": interval "1d" is not a duration such as "1m" or "1h30m"`}},
		{"cron time zone alone", "[housekeeping]\nschedule = \"CRON_TZ=UTC\"\n",
			[]string{`housekeeping.schedule = "CRON_TZ=UTC": a time zone must be followed by a space and a schedule`}},
		{"cron minute out of range", "[housekeeping]\nschedule = \"61 * * * *\"\n",
			[]string{`housekeeping.schedule = "61 * * * *": end of range (61) above maximum (59): 61`}},
		{"poll interval too short", "[sessions]\npoll_interval = \"500ms\"\n",
			[]string{`sessions.poll_interval = "500ms": must be at least 1s`}},
		{"poll interval zero", "[sessions]\npoll_interval = \"0\"\n",
			[]string{`sessions.poll_interval = "0": must be at least 1s`}},
		{"poll interval not a duration", "[sessions]\npoll_interval = 10\n",
			[]string{`sessions.poll_interval = 10: must be a duration string such as "30s", "1h30m" or "90d"`}},
		{"offline after zero", "[sessions]\noffline_after = \"0\"\n",
			[]string{`sessions.offline_after = "0": must be greater than 0`}},
		{"offline after below twice the poll", "[sessions]\npoll_interval = \"1m\"\noffline_after = \"1m59s\"\n",
			[]string{`sessions.offline_after = "1m59s": must be at least twice sessions.poll_interval = "1m"`}},
		{"offline after below twice the default poll", "[sessions]\noffline_after = \"15s\"\n",
			[]string{`sessions.offline_after = "15s": must be at least twice sessions.poll_interval (default "10s")`}},
		{"poll above half the default offline_after", "[sessions]\npoll_interval = \"2m\"\n",
			[]string{`sessions.poll_interval = "2m": must be at most half of sessions.offline_after (default "3m")`}},
		{"on_reject", "[sessions]\non_reject = \"deny\"\n",
			[]string{`sessions.on_reject = "deny": must be "ignore" or "revoke"`}},
		{"on_reject not a string", "[sessions]\non_reject = true\n",
			[]string{`sessions.on_reject = true: must be a string`}},
		{"session script a directory", "[sessions]\nscript = \"/usr/local/bin/\"\n",
			[]string{`sessions.script = "/usr/local/bin/": must name a file, not a directory`}},
		{"sessions unknown key", "[sessions]\nscript_timeout = \"1s\"\n",
			[]string{`unknown key "sessions.script_timeout"`}},
		{"sessions not a table", "sessions = 1\n",
			[]string{`sessions = 1: must be a table ([sessions])`}},
		{"idle expiry below offline_after", iface + profile + "idle_expiry = \"1m\"\n",
			[]string{`profile "staff": idle_expiry = "1m": must be at least sessions.offline_after (default "3m"), or "0" (off)`}},
		{"idle expiry below a set offline_after", "[sessions]\noffline_after = \"1h\"\n" + iface + profile + "idle_expiry = \"59m\"\n",
			[]string{`profile "staff": idle_expiry = "59m": must be at least sessions.offline_after = "1h", or "0" (off)`}},
		{"idle expiry negative", iface + profile + "idle_expiry = \"-1d\"\n",
			[]string{`profile "staff": idle_expiry = "-1d": must not be negative`}},
		{"reconcile interval too short", "[housekeeping]\nreconcile_interval = \"10ms\"\n",
			[]string{`housekeeping.reconcile_interval = "10ms": must be at least 1s, or "0" (off)`}},
		{"tls_cert without tls_key", "[api]\ntls_cert = \"cert.pem\"\n",
			[]string{`api.tls_cert = "cert.pem": api.tls_key must be set too (both or neither)`}},
		{"tls_key without tls_cert", "[api]\ntls_key = \"key.pem\"\n",
			[]string{`api.tls_key = "key.pem": api.tls_cert must be set too (both or neither)`}},
		{"listen without port", "[api]\nlisten = \"localhost\"\n",
			[]string{`api.listen = "localhost": must be host:port, such as "127.0.0.1:8470" (or "unix:/path/to/socket")`}},
		{"listen bad port", "[api]\nlisten = \"127.0.0.1:http\"\n",
			[]string{`api.listen = "127.0.0.1:http": port "http" must be a number between 0 and 65535 (or "unix:/path/to/socket")`}},
		{"listen plain http on all addresses", "[api]\nlisten = \":8470\"\n",
			[]string{`api.listen = ":8470": plain HTTP on a non-loopback address exposes the API token; set api.tls_cert and api.tls_key, or api.insecure = true`}},
		{"listen unix without path", "[api]\nlisten = \"unix:\"\n",
			[]string{`api.listen = "unix:": needs a socket path after "unix:"`}},
		{"listen unix path too long", "[api]\nlisten = \"unix:/run/" + strings.Repeat("s", 110) + "\"\n",
			[]string{`api.listen = "unix:/run/` + strings.Repeat("s", 90) + `"…: socket path "/run/` + strings.Repeat("s", 110) + `" is 115 bytes; the limit is 107`}},
		{"empty token_file", "[api]\ntoken_file = \"\"\n",
			[]string{`api.token_file = "": must be set when api.listen is set`}},
		{"read token file is the token file", "[api]\ntoken_file = \"/etc/wgk/api.token\"\nread_token_file = \"/etc/wgk/api.token\"\n",
			[]string{`api.read_token_file = "/etc/wgk/api.token": is api.token_file; the read-only token needs a file of its own`}},
		{"boolean as string", "[api]\ninsecure = \"yes\"\n",
			[]string{`api.insecure = "yes": must be true or false`}},
		{"interface name too long", "[[interface]]\nname = \"wireguard-office0\"\n",
			[]string{`interface #1: name = "wireguard-office0": is 17 bytes long; Linux allows at most 15`}},
		{"interface name with slash", "[[interface]]\nname = \"wg/0\"\n",
			[]string{`interface #1: name = "wg/0": must not contain '/'`}},
		{"interface name with space", "[[interface]]\nname = \"wg 0\"\n",
			[]string{`interface #1: name = "wg 0": must not contain ' '`}},
		{"interface name dot", "[[interface]]\nname = \".\"\n",
			[]string{`interface #1: name = ".": is not a valid interface name`}},
		{"interface name empty", "[[interface]]\nname = \"\"\n",
			[]string{`interface #1: name = "": must not be empty`}},
		{"duplicate interface", iface + iface,
			[]string{`interface #2: name = "wg0": already used by interface #1`}},
		{"mode", iface + "mode = \"kernal\"\n",
			[]string{`interface "wg0": mode = "kernal": must be "existing", "kernel" or "userspace"`}},
		{"orphans", iface + "orphans = \"delete\"\n",
			[]string{`interface "wg0": orphans = "delete": must be "remove" or "keep"`}},
		{"orphan_removal_limit percent", iface + "orphan_removal_limit = \"0%\"\n",
			[]string{`interface "wg0": orphan_removal_limit = "0%": must be a share of the device's peers such as "10%" (1% to 100%) or a number of peers from 0 to 1048576`}},
		{"orphan_removal_limit over 100%", iface + "orphan_removal_limit = \"101%\"\n",
			[]string{`interface "wg0": orphan_removal_limit = "101%": must be a share of the device's peers such as "10%" (1% to 100%) or a number of peers from 0 to 1048576`}},
		{"orphan_removal_limit negative", iface + "orphan_removal_limit = -1\n",
			[]string{`interface "wg0": orphan_removal_limit = -1: must be a share of the device's peers such as "10%" (1% to 100%) or a number of peers from 0 to 1048576`}},
		{"orphan_removal_limit fraction", iface + "orphan_removal_limit = \"2.5%\"\n",
			[]string{`interface "wg0": orphan_removal_limit = "2.5%": must be a share of the device's peers such as "10%" (1% to 100%) or a number of peers from 0 to 1048576`}},
		{"orphan_removal_limit float", iface + "orphan_removal_limit = 0.1\n",
			[]string{`interface "wg0": orphan_removal_limit = 0.1: must be a share of the device's peers such as "10%" (1% to 100%) or a number of peers from 0 to 1048576`}},
		{"kernel without private key", iface + "mode = \"kernel\"\n",
			[]string{`interface "wg0": private_key_file is required when mode = "kernel"`}},
		{"userspace with empty private key", iface + "mode = \"userspace\"\nprivate_key_file = \"\"\n",
			[]string{`interface "wg0": private_key_file is required when mode = "userspace"`}},
		{"listen port too high", iface + "listen_port = 70000\n",
			[]string{`interface "wg0": listen_port = 70000: must be between 1 and 65535, or 0 to leave the port alone`}},
		{"listen port 0 on owned interface", iface + "mode = \"kernel\"\nprivate_key_file = \"wg0.key\"\nlisten_port = 0\n",
			[]string{`interface "wg0": listen_port = 0: must be between 1 and 65535`}},
		{"two interfaces on one port", iface + "listen_port = 51820\n[[interface]]\nname = \"wg1\"\nmode = \"kernel\"\nprivate_key_file = \"wg1.key\"\n" +
			"[[interface]]\nname = \"wg2\"\nlisten_port = 51820\n",
			[]string{
				`interface "wg1": listen_port (default 51820): already used by interface "wg0"`,
				`interface "wg2": listen_port = 51820: already used by interface "wg0"`,
			}},
		{"endpoint without port", iface + "endpoint = \"vpn.example.org\"\n",
			[]string{`interface "wg0": endpoint = "vpn.example.org": must be host:port, such as "vpn.example.org:51820"`}},
		{"endpoint IPv6 without brackets", iface + "endpoint = \"2001:db8::1:51820\"\n",
			[]string{`interface "wg0": endpoint = "2001:db8::1:51820": an IPv6 address needs brackets: [address]:port`}},
		{"endpoint bad host", iface + "endpoint = \"vpn_example.org:51820\"\n",
			[]string{`interface "wg0": endpoint = "vpn_example.org:51820": host "vpn_example.org" is not an IP address or DNS name`}},
		{"endpoint port 0", iface + "endpoint = \"192.0.2.1:0\"\n",
			[]string{`interface "wg0": endpoint = "192.0.2.1:0": port "0" must be a number between 1 and 65535`}},
		{"profile without ranges", iface + "[[profile]]\nid = \"staff\"\ninterface = \"wg0\"\n",
			[]string{`profile "staff": needs ipv4_range, ipv6_range or both`}},
		{"profile without id and interface", iface + "[[profile]]\nipv4_range = \"10.42.0.0/24\"\n",
			[]string{`profile #1: id is required`, `profile #1: interface is required`}},
		{"profile on unknown interface", iface + "[[profile]]\nid = \"staff\"\ninterface = \"wg1\"\nipv6_range = \"fd42::/64\"\n",
			[]string{`profile "staff": interface = "wg1": no [[interface]] has this name`}},
		{"invalid prefix", iface + "[[profile]]\nid = \"staff\"\ninterface = \"wg0\"\nipv4_range = \"10.42.0.0/33\"\n",
			[]string{`profile "staff": ipv4_range = "10.42.0.0/33": is not an address range such as "10.42.0.0/24"`}},
		{"prefix with host bits", iface + "[[profile]]\nid = \"staff\"\ninterface = \"wg0\"\nipv4_range = \"10.42.0.5/24\"\nipv6_range = \"fd42::1/64\"\n",
			[]string{
				`profile "staff": ipv4_range = "10.42.0.5/24": has host bits set; it should be "10.42.0.0/24"`,
				`profile "staff": ipv6_range = "fd42::1/64": has host bits set; it should be "fd42::/64"`,
			}},
		{"families swapped", iface + "[[profile]]\nid = \"staff\"\ninterface = \"wg0\"\nipv4_range = \"fd42::/64\"\nipv6_range = \"10.42.0.0/24\"\n",
			[]string{
				`profile "staff": ipv4_range = "fd42::/64": is an IPv6 range; it belongs in ipv6_range`,
				`profile "staff": ipv6_range = "10.42.0.0/24": is an IPv4 range; it belongs in ipv4_range`,
			}},
		{"IPv4-mapped IPv6 range", iface + "[[profile]]\nid = \"staff\"\ninterface = \"wg0\"\nipv6_range = \"::ffff:10.42.0.0/120\"\n",
			[]string{`profile "staff": ipv6_range = "::ffff:10.42.0.0/120": is an IPv4-mapped range; put the IPv4 range in ipv4_range`}},
		{"IPv4 range too small", iface + "[[profile]]\nid = \"staff\"\ninterface = \"wg0\"\nipv4_range = \"10.42.0.0/31\"\n",
			[]string{`profile "staff": ipv4_range = "10.42.0.0/31": is too small: network, server, one client and broadcast need a /30 or larger range`}},
		{"IPv6 range too small", iface + "[[profile]]\nid = \"staff\"\ninterface = \"wg0\"\nipv6_range = \"fd42::/127\"\n",
			[]string{`profile "staff": ipv6_range = "fd42::/127": is too small: network, server and clients need a /126 or larger range`}},
		{"overlapping ranges on one interface", iface + profile + "ipv6_range = \"fd42::/64\"\n" +
			"[[profile]]\nid = \"guest\"\ninterface = \"wg0\"\nipv4_range = \"10.42.0.128/25\"\nipv6_range = \"fd42::/48\"\n",
			[]string{
				`profile "guest": ipv4_range = "10.42.0.128/25": overlaps ipv4_range "10.42.0.0/24" of profile "staff" on interface "wg0"`,
				`profile "guest": ipv6_range = "fd42::/48": overlaps ipv6_range "fd42::/64" of profile "staff" on interface "wg0"`,
			}},
		{"duplicate profile id", iface + profile + "[[profile]]\nid = \"staff\"\ninterface = \"wg0\"\nipv4_range = \"10.43.0.0/24\"\n",
			[]string{`profile #2: id = "staff": already used by profile #1`}},
		{"profile id characters", iface + "[[profile]]\nid = \"staff vpn\"\ninterface = \"wg0\"\nipv4_range = \"10.42.0.0/24\"\n",
			[]string{`profile #1: id = "staff vpn": must contain only letters, digits, ".", "_" and "-"`}},
		{"profile id too long", iface + "[[profile]]\nid = \"" + strings.Repeat("p", 65) + "\"\ninterface = \"wg0\"\nipv4_range = \"10.42.0.0/24\"\n",
			[]string{`profile #1: id = "` + strings.Repeat("p", 65) + `": is 65 bytes long; at most 64 are allowed`}},
		{"display name with control character", iface + profile + "display_name = \"Staff\\u0007\"\n",
			[]string{`profile "staff": display_name = "Staff\a": must not contain control characters`}},
		{"max_expiry below expiry", iface + profile + "expiry = \"90d\"\nmax_expiry = \"30d\"\n",
			[]string{`profile "staff": max_expiry = "30d": must not be less than profile "staff": expiry = "90d"`}},
		{"max_expiry below default expiry", iface + profile + "max_expiry = \"30d\"\n",
			[]string{`profile "staff": max_expiry = "30d": must not be less than profile "staff": expiry (default "90d")`}},
		{"never expiring with a maximum", iface + profile + "expiry = \"0\"\nmax_expiry = \"365d\"\n",
			[]string{`profile "staff": expiry = "0": never expiring is longer than max_expiry = "365d"; set an expiry of at most max_expiry, or max_expiry = "0"`}},
		{"client allowed ips", iface + profile + "client_allowed_ips = [\"10.0.0.0/8\", \"10.1.2.3/16\", \"default\", \"192.0.2.1\"]\n",
			[]string{
				`profile "staff": client_allowed_ips[1] = "10.1.2.3/16": has host bits set; it should be "10.1.0.0/16"`,
				`profile "staff": client_allowed_ips[2] = "default": is not an address range such as "0.0.0.0/0" or "10.42.0.0/16"`,
			}},
		{"client allowed ips empty", iface + profile + "client_allowed_ips = []\n",
			[]string{`profile "staff": client_allowed_ips = []: must not be empty (the default is everything: ["0.0.0.0/0", "::/0"])`}},
		{"dns entries", iface + profile + "dns = [\"10.42.0.1\", \"10.42.0.300\", \"corp.example\", \"fe80::1%wg0\", \"a b\"]\n",
			[]string{
				`profile "staff": dns[1] = "10.42.0.300": is not an IP address or a search domain`,
				`profile "staff": dns[3] = "fe80::1%wg0": is not an IP address or a search domain`,
				`profile "staff": dns[4] = "a b": is not an IP address or a search domain`,
			}},
		{"keepalive fraction", iface + profile + "persistent_keepalive = \"1.5s\"\n",
			[]string{`profile "staff": persistent_keepalive = "1.5s": must be whole seconds from 1s to 65535s (18h12m15s), or "0" (off)`}},
		{"keepalive too long", iface + profile + "persistent_keepalive = \"1d\"\n",
			[]string{`profile "staff": persistent_keepalive = "1d": must be whole seconds from 1s to 65535s (18h12m15s), or "0" (off)`}},
		{"negative per-user limit", iface + profile + "max_configs_per_user = -1\n",
			[]string{`profile "staff": max_configs_per_user = -1: must be 0 (no limit) or more`}},
		{"preshared_keys as string", iface + profile + "preshared_keys = \"yes\"\n",
			[]string{`profile "staff": preshared_keys = "yes": must be true or false`}},
		{"float where integer", iface + profile + "max_configs_per_user = 3.5\n",
			[]string{`profile "staff": max_configs_per_user = 3.5: must be an integer`}},
	}
	if len(tests) < 25 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := problemsOf(t, tt.file)
			if d := diffLines(tt.want, got); d != "" {
				t.Errorf("file:\n%s\n%s", tt.file, d)
			}
		})
	}
}

// One run reports every problem of the file, in section order.
func TestAllProblemsAtOnce(t *testing.T) {
	file := `
databse = "x.db"

[hooks]
timeout = "-1s"
concurrency = 0
retry_base = "2h"
pass_env = ["VPN_EVENT"]

[housekeeping]
schedule = "* * *"

[api]
listen = "0.0.0.0"
tls_key = "key.pem"

[[interface]]
name = "wg0"
mode = "kernel"
listen_port = 65536

[[interface]]
name = "wg0"

[[profile]]
id = "staff"
interface = "wg0"
ipv4_range = "10.42.0.1/24"

[[profile]]
id = "guest"
interface = "wg9"
ipv4_range = "10.42.0.0/31"
expiry = "90d"
max_expiry = "1d"
`
	want := []string{
		`unknown key "databse"`,
		`hooks.timeout = "-1s": must not be negative`,
		`hooks.concurrency = 0: must be between 1 and 1024`,
		`hooks.retry_base = "2h": must not exceed hooks.retry_max (default "1h")`,
		`hooks.pass_env[0] = "VPN_EVENT": VPN_* variables are reserved for the event`,
		`housekeeping.schedule = "* * *": expected exactly 5 fields, found 3: [* * *]`,
		`api.tls_key = "key.pem": api.tls_cert must be set too (both or neither)`,
		`api.listen = "0.0.0.0": must be host:port, such as "127.0.0.1:8470" (or "unix:/path/to/socket")`,
		`interface #1: private_key_file is required when mode = "kernel"`,
		`interface #1: listen_port = 65536: must be between 1 and 65535`,
		`interface #2: name = "wg0": already used by interface #1`,
		`profile "staff": ipv4_range = "10.42.0.1/24": has host bits set; it should be "10.42.0.0/24"`,
		`profile "guest": interface = "wg9": no [[interface]] has this name`,
		`profile "guest": ipv4_range = "10.42.0.0/31": is too small: network, server, one client and broadcast need a /30 or larger range`,
		`profile "guest": max_expiry = "1d": must not be less than profile "guest": expiry = "90d"`,
	}
	if d := diffLines(want, problemsOf(t, file)); d != "" {
		t.Error(d)
	}
}

func TestDefaults(t *testing.T) {
	file := iface + "[[interface]]\nname = \"wg1\"\nmode = \"kernel\"\nprivate_key_file = \"/etc/wgkeeper/wg1.key\"\n" +
		profile + "[[profile]]\nid = \"v6\"\ninterface = \"wg1\"\nipv6_range = \"fd42::/64\"\n" +
		"[[profile]]\nid = \"forever\"\ninterface = \"wg1\"\nipv4_range = \"10.43.0.0/16\"\nexpiry = \"0\"\n" +
		"[[profile]]\nid = \"long\"\ninterface = \"wg1\"\nipv4_range = \"10.44.0.0/16\"\nexpiry = \"500d\"\n"
	c, err := Parse([]byte(file), testDir)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Database: "/var/lib/wgkeeper/wgkeeper.db",
		LockDir:  "/var/lib/wgkeeper",
		Node:     defaultNode(),
		Hooks: Hooks{
			Timeout: 30 * time.Second, Concurrency: 4, QueueTimeout: 5 * time.Second, MaxAttempts: 10,
			RetryBase: 10 * time.Second, RetryMax: time.Hour,
		},
		Housekeeping: Housekeeping{Schedule: "@every 1m", ReconcileInterval: 30 * time.Second, LogRetention: 90 * Day},
		Sessions:     Sessions{PollInterval: 10 * time.Second, OfflineAfter: 3 * time.Minute, OnReject: "ignore"},
		API:          API{Listen: "127.0.0.1:8470", TokenFile: "/etc/wgkeeper/api.token"},
		Interfaces: []Interface{
			{Name: "wg0", Mode: "existing", Orphans: "remove", OrphanRemovalLimit: OrphanLimit{Percent: 10}},
			{Name: "wg1", Mode: "kernel", Orphans: "remove", OrphanRemovalLimit: OrphanLimit{Percent: 10}, PrivateKeyFile: "/etc/wgkeeper/wg1.key", ListenPort: 51820},
		},
		Profiles: []Profile{
			{
				ID: "staff", Interface: "wg0", DisplayName: "staff",
				IPv4Range:        netip.MustParsePrefix("10.42.0.0/24"),
				ClientAllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
				Expiry:           90 * Day, MaxExpiry: 365 * Day, PersistentKeepalive: 25 * time.Second,
			},
			{
				ID: "v6", Interface: "wg1", DisplayName: "v6",
				IPv6Range:        netip.MustParsePrefix("fd42::/64"),
				ClientAllowedIPs: []netip.Prefix{netip.MustParsePrefix("::/0")},
				Expiry:           90 * Day, MaxExpiry: 365 * Day, PersistentKeepalive: 25 * time.Second,
			},
			{
				ID: "forever", Interface: "wg1", DisplayName: "forever",
				IPv4Range:           netip.MustParsePrefix("10.43.0.0/16"),
				ClientAllowedIPs:    []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
				PersistentKeepalive: 25 * time.Second,
			},
			{
				ID: "long", Interface: "wg1", DisplayName: "long",
				IPv4Range:        netip.MustParsePrefix("10.44.0.0/16"),
				ClientAllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
				Expiry:           500 * Day, MaxExpiry: 500 * Day, PersistentKeepalive: 25 * time.Second,
			},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\ngot  %+v\nwant %+v", c, want)
	}

	// An empty file is valid: every default, no interfaces.
	c, err = Parse(nil, testDir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Database != DefaultDatabase || len(c.Interfaces) != 0 || c.API.Listen != DefaultAPIListen {
		t.Errorf("empty file: %+v", c)
	}
}

// Keys that are present win over the defaults, including "" and "0".
func TestExplicitValues(t *testing.T) {
	file := `
database = "data/wg.db"
[hooks]
script = "/usr/local/bin/vpn-hook"
timeout = "1m30s"
concurrency = 16
queue_timeout = "2m"
max_attempts = 3
retry_base = "1s"
retry_max = "1d"
pass_env = ["HTTPS_PROXY", "LANG"]
[housekeeping]
schedule = ""
reconcile_interval = "0"
log_retention = "1d12h"
[sessions]
script = "session-hook"
poll_interval = "1s"
offline_after = "2s"
on_reject = "revoke"
[api]
listen = "[::]:8443"
tls_cert = "/etc/ssl/wgk.pem"
tls_key = "tls/wgk.key"
metrics_public = true
[[interface]]
name = "wg0"
listen_port = 0
endpoint = "[2001:db8::1]:51820"
orphans = "keep"
orphan_removal_limit = 0
private_key_file = "wg0.key"
[[profile]]
id = "staff"
interface = "wg0"
display_name = "Staff VPN"
ipv4_range = "10.42.0.0/24"
ipv6_range = "fd42::/64"
client_allowed_ips = ["10.0.0.0/8", "fd00::1"]
dns = ["10.42.0.1", "fd42::1", "corp.example."]
expiry = "0"
max_expiry = "0"
max_configs_per_user = 3
persistent_keepalive = "0"
preshared_keys = true
idle_expiry = "30d"
`
	c, err := Parse([]byte(file), "/srv/wgk")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Database: "/srv/wgk/data/wg.db",
		LockDir:  "/srv/wgk/data",
		Node:     defaultNode(),
		Hooks: Hooks{
			Script: "/usr/local/bin/vpn-hook", Timeout: 90 * time.Second, Concurrency: 16, QueueTimeout: 2 * time.Minute, MaxAttempts: 3,
			RetryBase: time.Second, RetryMax: Day, PassEnv: []string{"HTTPS_PROXY", "LANG"},
		},
		Housekeeping: Housekeeping{LogRetention: 36 * time.Hour},
		Sessions:     Sessions{Script: "/srv/wgk/session-hook", PollInterval: time.Second, OfflineAfter: 2 * time.Second, OnReject: "revoke"},
		API: API{
			Listen: "[::]:8443", TokenFile: "/etc/wgkeeper/api.token",
			TLSCert: "/etc/ssl/wgk.pem", TLSKey: "/srv/wgk/tls/wgk.key", MetricsPublic: true,
		},
		Interfaces: []Interface{{
			Name: "wg0", Mode: "existing", PrivateKeyFile: "/srv/wgk/wg0.key",
			Endpoint: "[2001:db8::1]:51820", Orphans: "keep", OrphanRemovalLimit: OrphanLimit{Count: 0},
		}},
		Profiles: []Profile{{
			ID: "staff", Interface: "wg0", DisplayName: "Staff VPN",
			IPv4Range: netip.MustParsePrefix("10.42.0.0/24"), IPv6Range: netip.MustParsePrefix("fd42::/64"),
			ClientAllowedIPs:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::1/128")},
			DNS:               []string{"10.42.0.1", "fd42::1", "corp.example."},
			MaxConfigsPerUser: 3, PresharedKeys: true, IdleExpiry: 30 * Day,
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestDayDurationsInFile(t *testing.T) {
	file := "[housekeeping]\nlog_retention = \"1d12h\"\n" + iface + profile + "expiry = \"30d\"\nmax_expiry = \"30.5d\"\n"
	c, err := Parse([]byte(file), testDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Housekeeping.LogRetention; got != 36*time.Hour {
		t.Errorf("log_retention = %v, want 36h", got)
	}
	p, _ := c.Profile("staff")
	if p.Expiry != 30*Day || p.MaxExpiry != 30*Day+12*time.Hour {
		t.Errorf("expiry %v, max_expiry %v", p.Expiry, p.MaxExpiry)
	}
}

func TestDayDurationsRejectedMax(t *testing.T) {
	file := iface + profile + "expiry = \"30d\"\nmax_expiry = \"1.5d\"\n"
	want := []string{`profile "staff": max_expiry = "1.5d": must not be less than profile "staff": expiry = "30d"`}
	if d := diffLines(want, problemsOf(t, file)); d != "" {
		t.Error(d)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRelativePaths(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc", "wgk")
	file := `
database = "../../var/wgk.db"
[hooks]
script = "hooks/./connect"
[api]
listen = "unix:run/api.sock"
token_file = "api.token"
read_token_file = "read.token"
tls_cert = "/abs/cert.pem"
tls_key = "key.pem"
[[interface]]
name = "wg0"
mode = "userspace"
private_key_file = "keys/wg0.key"
`
	writeFile(t, filepath.Join(dir, "wgkeeper.toml"), file)

	// Loaded by a relative name from another working directory: paths still
	// resolve against the file's directory.
	t.Chdir(root)
	c, err := Load(filepath.Join("etc", "wgk", "wgkeeper.toml"))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"Path", c.Path, filepath.Join(dir, "wgkeeper.toml")},
		{"database", c.Database, filepath.Join(root, "var", "wgk.db")},
		{"hooks.script", c.Hooks.Script, filepath.Join(dir, "hooks", "connect")},
		{"api.listen", c.API.Listen, "unix:" + filepath.Join(dir, "run", "api.sock")},
		{"api.token_file", c.API.TokenFile, filepath.Join(dir, "api.token")},
		{"api.read_token_file", c.API.ReadTokenFile, filepath.Join(dir, "read.token")},
		{"api.tls_cert", c.API.TLSCert, "/abs/cert.pem"},
		{"api.tls_key", c.API.TLSKey, filepath.Join(dir, "key.pem")},
		{"private_key_file", c.Interfaces[0].PrivateKeyFile, filepath.Join(dir, "keys", "wg0.key")},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if sock, ok := c.API.UnixSocket(); !ok || sock != filepath.Join(dir, "run", "api.sock") {
		t.Errorf("UnixSocket() = %q, %v", sock, ok)
	}
	// None of those files exist: validation checks path form only.
	if _, err := os.Stat(c.Hooks.Script); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("hook script unexpectedly exists: %v", err)
	}

	// Parse with a relative directory resolves it against the working
	// directory.
	c, err = Parse([]byte(`database = "x.db"`), "sub")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "sub", "x.db"); c.Database != want || c.Path != "" {
		t.Errorf("Parse: database %q path %q, want %q and no path", c.Database, c.Path, want)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	if want := "read config: open " + filepath.Join(dir, "missing.toml") + ": no such file or directory"; err.Error() != want {
		t.Errorf("missing file: %q, want %q", err, want)
	}

	path := filepath.Join(dir, "bad.toml")
	writeFile(t, path, "[hooks]\nconcurrency = 0\n")
	_, err = Load(path)
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("bad file: %v (%T), want *Error", err, err)
	}
	if ce.Path != path || len(ce.Problems) != 1 {
		t.Errorf("bad file: %+v", ce)
	}
}

func TestExampleLoads(t *testing.T) {
	example, err := filepath.Abs(filepath.Join("..", "examples", "wgkeeper.toml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(example)
	t.Chdir(t.TempDir()) // from any working directory
	c, err := Load(example)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if c.Path != example || c.Database != filepath.Join(dir, "wgkeeper.db") ||
		c.Hooks.Script != filepath.Join(dir, "hooks", "log-event.sh") ||
		c.API.TokenFile != filepath.Join(dir, "api.token") || c.API.Listen != "127.0.0.1:8470" {
		t.Errorf("paths: %+v", c)
	}
	ifc, ok := c.Interface("wgk0")
	if !ok || ifc.Mode != ModeUserspace || ifc.PrivateKeyFile != filepath.Join(dir, "wgk0.key") ||
		ifc.ListenPort != 51820 || ifc.Endpoint != "vpn.example.org:51820" || !ifc.Owned() {
		t.Errorf("interface: %+v %v", ifc, ok)
	}
	p, ok := c.Profile("default")
	if !ok || p.Interface != "wgk0" || p.IPv4Range.String() != "10.77.0.0/24" || p.IPv6Range.String() != "fd77::/64" ||
		p.Expiry != 90*Day || p.Capacity() != 253 {
		t.Errorf("profile: %+v %v", p, ok)
	}
	if got := c.ProfilesOn("wgk0"); len(got) != 1 || got[0].ID != "default" {
		t.Errorf("ProfilesOn(wgk0) = %+v", got)
	}
}

func TestLookups(t *testing.T) {
	file := iface + "[[interface]]\nname = \"wg1\"\n" + profile +
		"[[profile]]\nid = \"b\"\ninterface = \"wg1\"\nipv4_range = \"10.42.0.0/24\"\n" + // same range, other interface: allowed
		"[[profile]]\nid = \"c\"\ninterface = \"wg0\"\nipv4_range = \"10.43.0.0/24\"\n"
	c, err := Parse([]byte(file), testDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Interface("wg2"); ok {
		t.Error("Interface(wg2) found")
	}
	if _, ok := c.Profile("nope"); ok {
		t.Error("Profile(nope) found")
	}
	if p, ok := c.Profile("b"); !ok || p.Interface != "wg1" {
		t.Errorf("Profile(b) = %+v, %v", p, ok)
	}
	var ids []string
	for _, p := range c.ProfilesOn("wg0") {
		ids = append(ids, p.ID)
	}
	if strings.Join(ids, ",") != "staff,c" {
		t.Errorf("ProfilesOn(wg0) = %v", ids)
	}
}

func TestServerAddrsAndCapacity(t *testing.T) {
	pfx := func(s string) netip.Prefix {
		if s == "" {
			return netip.Prefix{}
		}
		return netip.MustParsePrefix(s)
	}
	tests := []struct {
		v4, v6   string
		servers  []string
		capacity int
		first    [2]string // addresses of host index 0
		last     [2]string // addresses of host index capacity-1
	}{
		{"10.42.0.0/24", "fd42::/64", []string{"10.42.0.1/24", "fd42::1/64"}, 253,
			[2]string{"10.42.0.2", "fd42::2"}, [2]string{"10.42.0.254", "fd42::fe"}},
		{"10.42.0.0/30", "", []string{"10.42.0.1/30"}, 1,
			[2]string{"10.42.0.2", "invalid IP"}, [2]string{"10.42.0.2", "invalid IP"}},
		{"10.42.0.0/29", "", []string{"10.42.0.1/29"}, 5,
			[2]string{"10.42.0.2", "invalid IP"}, [2]string{"10.42.0.6", "invalid IP"}},
		{"", "fd42::/126", []string{"fd42::1/126"}, 2,
			[2]string{"invalid IP", "fd42::2"}, [2]string{"invalid IP", "fd42::3"}},
		{"", "fd42::/64", []string{"fd42::1/64"}, MaxCapacity,
			[2]string{"invalid IP", "fd42::2"}, [2]string{"invalid IP", "fd42::100:1"}},
		{"10.0.0.0/8", "", []string{"10.0.0.1/8"}, 1<<24 - 3,
			[2]string{"10.0.0.2", "invalid IP"}, [2]string{"10.255.255.254", "invalid IP"}},
		{"10.0.0.0/16", "fd00::/120", []string{"10.0.0.1/16", "fd00::1/120"}, 254,
			[2]string{"10.0.0.2", "fd00::2"}, [2]string{"10.0.0.255", "fd00::ff"}},
		{"", "", nil, 0, [2]string{}, [2]string{}},
	}
	for _, tt := range tests {
		p := Profile{IPv4Range: pfx(tt.v4), IPv6Range: pfx(tt.v6)}
		var got []string
		for _, s := range p.ServerAddrs() {
			got = append(got, s.String())
		}
		if !reflect.DeepEqual(got, tt.servers) {
			t.Errorf("%s %s: ServerAddrs = %v, want %v", tt.v4, tt.v6, got, tt.servers)
		}
		if c := p.Capacity(); c != tt.capacity {
			t.Errorf("%s %s: Capacity = %d, want %d", tt.v4, tt.v6, c, tt.capacity)
		}
		if tt.capacity == 0 {
			continue
		}
		for _, c := range []struct {
			i    int
			want [2]string
		}{{0, tt.first}, {tt.capacity - 1, tt.last}} {
			v4, v6, ok := p.HostAddrs(c.i)
			if !ok || v4.String() != c.want[0] || v6.String() != c.want[1] {
				t.Errorf("%s %s: HostAddrs(%d) = %v %v %v, want %v", tt.v4, tt.v6, c.i, v4, v6, ok, c.want)
			}
		}
		if _, _, ok := p.HostAddrs(tt.capacity); ok {
			t.Errorf("%s %s: HostAddrs(capacity) ok", tt.v4, tt.v6)
		}
		if _, _, ok := p.HostAddrs(-1); ok {
			t.Errorf("%s %s: HostAddrs(-1) ok", tt.v4, tt.v6)
		}
	}
}

func TestParseSchedule(t *testing.T) {
	for _, spec := range []string{"@every 1m", "@hourly", "*/5 * * * *", "CRON_TZ=UTC 0 3 * * *"} {
		if _, err := ParseSchedule(spec); err != nil {
			t.Errorf("ParseSchedule(%q): %v", spec, err)
		}
	}
	for spec, want := range map[string]string{
		"TZ=UTC":                         `invalid schedule "TZ=UTC": a time zone must be followed by a space and a schedule`,
		"@every 500ms":                   `invalid schedule "@every 500ms": interval must be at least 1s`,
		"0 0 0 * * * *":                  `invalid schedule "0 0 0 * * * *": expected exactly 5 fields, found 7: [0 0 0 * * * *]`,
		"CRON_TZ=Nowhere/City 0 3 * * *": `invalid schedule "CRON_TZ=Nowhere/City 0 3 * * *": provided bad location Nowhere/City: unknown time zone Nowhere/City`,
	} {
		_, err := ParseSchedule(spec)
		if err == nil || err.Error() != want {
			t.Errorf("ParseSchedule(%q) = %v, want %q", spec, err, want)
		}
	}
}
