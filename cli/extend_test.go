package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api"
)

func TestPeerExtend(t *testing.T) {
	c := newCLIEnv(t, "remove")
	keys := make([]string, 3)
	for i, user := range []string{"alice", "alice", "bob"} {
		k, _ := wgtypes.GeneratePrivateKey()
		keys[i] = k.PublicKey().String()
		c.ok("peer", "add", "-user", user, "-profile", "staff", "-public-key", keys[i], "-expires", "10d")
	}
	log := filepath.Join(c.dir, "events.log")
	runs, _ := os.ReadFile(log)
	expiry := func(key string) *time.Time {
		var out struct{ Peers []api.PeerJSON }
		c.json(&out, "peer", "list")
		for _, p := range out.Peers {
			if p.PublicKey == key {
				return p.ExpiresAt
			}
		}
		t.Fatalf("%s not listed", key)
		return nil
	}

	start := time.Now()
	out := c.ok("peer", "extend", "-key", keys[0], "-expires", "2h")
	if !strings.Contains(out, keys[0]+" (user alice, staff): expires ") || !strings.Contains(out, "(in 1h59m)") && !strings.Contains(out, "(in 2h00m)") {
		t.Errorf("extend -key output:\n%s", out)
	}
	if at := expiry(keys[0]); at == nil || at.Before(start.Add(2*time.Hour-time.Second)) || at.After(time.Now().Add(2*time.Hour)) {
		t.Errorf("alice's first config expires %v, want 2h from now", at)
	}
	if at := expiry(keys[2]); at == nil || at.Before(start.Add(9*24*time.Hour)) {
		t.Errorf("bob's changed too: %v", at)
	}

	later := time.Now().UTC().Add(100 * 24 * time.Hour).Truncate(time.Second)
	out = c.ok("peer", "extend", "-user", "alice", "-expires", later.Format(time.RFC3339))
	if strings.Count(out, "(user alice, staff): expires "+later.Format("2006-01-02 15:04:05 UTC")) != 2 {
		t.Errorf("extend -user output:\n%s", out)
	}
	if got, _ := os.ReadFile(log); string(got) != string(runs) {
		t.Errorf("the script ran for an expiry change:\n%s", got[len(runs):])
	}

	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-key", keys[0], "-expires", "400d"}, 2, "maximum lifetime of 365d"},
		{[]string{"-key", keys[0], "-expires", "0"}, 2, "never"},
		{[]string{"-key", keys[0], "-expires", "soon"}, 2, "-expires"},
		{[]string{"-key", keys[0]}, 2, "needs -expires"},
		{[]string{"-expires", "1d"}, 2, "needs -key or -user"},
		{[]string{"-key", keys[0], "-user", "alice", "-expires", "1d"}, 2, "needs -key or -user"},
		{[]string{"-key", "nonsense", "-expires", "1d"}, 2, "-key"},
		{[]string{"-key", newCLIKey(t), "-expires", "1d"}, 1, "no config has the public key"},
		{[]string{"-user", "carol", "-expires", "1d"}, 1, "no active config"},
	} {
		code, _, errOut := c.run(append([]string{"peer", "extend"}, tt.args...)...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("peer extend %q: exit %d %q; want %d and %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
	if at := expiry(keys[0]); at == nil || !at.Equal(later) {
		t.Errorf("refused extends changed the expiry to %v", at)
	}
}

func newCLIKey(t *testing.T) string {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}
