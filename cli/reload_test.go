package cli

import (
	"strings"
	"testing"

	"github.com/wgkeeper/wgkeeper/config"
)

const reloadBase = `
database = "/var/lib/wgkeeper/wgkeeper.db"

[hooks]
script = "/bin/true"

[[interface]]
name = "wg0"
mode = "userspace"
private_key_file = "/etc/wgkeeper/wg0.key"
listen_port = 51820
endpoint = "vpn.example.org:51820"

[[interface]]
name = "wg1"
mode = "existing"

[[profile]]
id = "staff"
interface = "wg0"
ipv4_range = "10.98.0.0/24"

[[profile]]
id = "guests"
interface = "wg1"
ipv4_range = "10.99.0.0/24"
`

// What a reload refuses (the interfaces as set up at start) and what it
// takes (everything else, including an owned interface's endpoint and an
// existing interface's profile ranges).
func TestInterfacesChanged(t *testing.T) {
	parse := func(s string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(s), "/etc/wgkeeper")
		if err != nil {
			t.Fatalf("parse: %v\n%s", err, s)
		}
		return c
	}
	old := parse(reloadBase)
	for _, c := range []struct {
		name, from, to, want string
	}{
		{"nothing", "", "", ""},
		{"endpoint", "vpn.example.org:51820", "vpn2.example.org:51820", ""},
		{"existing interface's range", "10.99.0.0/24", "10.77.0.0/24", ""},
		{"port", "listen_port = 51820", "listen_port = 51821", "interface wg0: listen_port 51820 -> 51821"},
		{"mode", `mode = "userspace"`, `mode = "kernel"`, "interface wg0: mode userspace -> kernel"},
		{"key file", "wg0.key", "wg0-new.key", `interface wg0: private_key_file "/etc/wgkeeper/wg0.key" -> "/etc/wgkeeper/wg0-new.key"`},
		{"addresses", "10.98.0.0/24", "10.97.0.0/24", "interface wg0: addresses [10.98.0.1/24] -> [10.97.0.1/24]"},
		{"renamed", `name = "wg1"`, `name = "wg2"`, "interface wg1 removed; interface wg2 added"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cur := reloadBase
			if c.from != "" {
				cur = strings.Replace(cur, c.from, c.to, 1)
				if c.name == "renamed" {
					cur = strings.Replace(cur, `interface = "wg1"`, `interface = "wg2"`, 1)
				}
			}
			if got := interfacesChanged(old, parse(cur)); got != c.want {
				t.Errorf("got %q\nwant %q", got, c.want)
			}
		})
	}
}
