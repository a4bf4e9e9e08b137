package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store/sqlite"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// apiDaemonDir writes, in a fresh directory, the daemon's configuration for
// a new userspace interface (its name starts with prefix) with the API on a
// free loopback port and the lines apiExtra after its listen key, and the
// connect/disconnect script. It skips the test without root or
// /dev/net/tun.
func apiDaemonDir(t *testing.T, prefix, apiExtra string) (dir, cfgPath, apiAddr string) {
	t.Helper()
	wgtest.RequireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("skipped: needs /dev/net/tun for a userspace interface")
	}
	dir = t.TempDir()
	name := wgtest.UniqueName(prefix)
	port := freeUDPPort(t)
	apiAddr = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cfgPath = filepath.Join(dir, "wgkeeper.toml")
	toml := strings.Replace(fmt.Sprintf(daemonConfig, name, port, port, name),
		`listen = ""`, fmt.Sprintf("listen = %q\n", apiAddr)+apiExtra, 1)
	if err := os.WriteFile(cfgPath, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hook.sh"), []byte(daemonHook), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, cfgPath, apiAddr
}

// wgkeeper runs this binary as wgkeeper in another process.
func wgkeeper(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "WGKEEPER_TEST_AS_MAIN=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wgkeeper %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestDaemonFollowsExpiryChanges: with the real daemon running, a config
// shortened by `peer extend` in another process, and one shortened through
// the daemon's own API (PATCH), are removed at their new expiry with their
// D script; one extended past its old expiry is not. No C or D runs for
// the changes themselves.
func TestDaemonFollowsExpiryChanges(t *testing.T) {
	dir, cfgPath, apiAddr := apiDaemonDir(t, "wgx", `token_file = "api.token"`)
	d := startDaemon(t, cfgPath)
	d.waitLog(t, "API listening", 20*time.Second)
	token, err := os.ReadFile(filepath.Join(dir, "api.token"))
	if err != nil {
		t.Fatal(err)
	}

	keys := map[string]string{}
	for _, user := range []string{"alice", "bob", "carol"} {
		k, _ := wgtypes.GeneratePrivateKey()
		keys[user] = k.PublicKey().String()
		expires := "1h"
		if user == "carol" {
			expires = "3s"
		}
		wgkeeper(t, "-config", cfgPath, "peer", "add", "-user", user, "-profile", "staff", "-public-key", keys[user], "-expires", expires)
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "wgkeeper.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	expiryOf := func(user string) time.Time {
		k, _ := wgtypes.ParseKey(keys[user])
		p, err := st.GetPeer(ctx, k)
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		return p.ExpiresAt
	}
	carolWas := expiryOf("carol")

	// Carol: extended through the API well past her 3 s.
	patch := func(user, body string) {
		t.Helper()
		req, _ := http.NewRequest("PATCH", "http://"+apiAddr+"/v1/peers/"+url.PathEscape(keys[user]), bytes.NewBufferString(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := specClient(t, http.DefaultClient).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("PATCH %s %s: %d %s", user, body, resp.StatusCode, b)
		}
		var out struct {
			Peer struct {
				ExpiresAt *time.Time `json:"expires_at"`
			} `json:"peer"`
		}
		if err := json.Unmarshal(b, &out); err != nil || out.Peer.ExpiresAt == nil {
			t.Fatalf("PATCH answer %s: %v", b, err)
		}
	}
	patch("carol", `{"expires_in":"1h"}`)
	// Alice: shortened by another process; bob: through the daemon's API.
	wgkeeper(t, "-config", cfgPath, "peer", "extend", "-key", keys["alice"], "-expires", "2s")
	patch("bob", `{"expires_in":"3s"}`)
	aliceAt, bobAt := expiryOf("alice"), expiryOf("bob")

	for _, user := range []string{"alice", "bob"} {
		want := map[string]time.Time{"alice": aliceAt, "bob": bobAt}[user]
		var dAt time.Time
		for time.Now().Before(want.Add(10 * time.Second)) {
			if at, ok := eventTime(t, dir, "D", keys[user]); ok {
				dAt = at
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if dAt.IsZero() {
			t.Fatalf("%s: no D event within 10 s of the new expiry %s", user, want)
		}
		late := dAt.Sub(want)
		t.Logf("%s: D script ran %v after the changed expiry", user, late)
		if late < 0 || late > 2*time.Second {
			t.Errorf("%s: D script ran %v after the changed expiry, want within 2 s", user, late)
		}
	}
	// Carol's old expiry has passed by now: she is still there.
	if time.Now().Before(carolWas.Add(time.Second)) {
		time.Sleep(time.Until(carolWas.Add(time.Second)))
	}
	if _, ok := eventTime(t, dir, "D", keys["carol"]); ok {
		t.Error("carol expired at her old time although extended")
	}
	if at := expiryOf("carol"); at.Before(time.Now().Add(50 * time.Minute)) {
		t.Errorf("carol's expiry %s, want an hour from the PATCH", at)
	}
	// Exactly one C per config and one D per removed one: the changes ran
	// no script.
	data, _ := os.ReadFile(filepath.Join(dir, "events.log"))
	got := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			got[f[0]+" "+f[1]]++
		}
	}
	want := map[string]int{"C " + keys["alice"]: 1, "C " + keys["bob"]: 1, "C " + keys["carol"]: 1, "D " + keys["alice"]: 1, "D " + keys["bob"]: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("script runs %v, want %v", got, want)
	}
	if !strings.Contains(d.log(), "expiry changed") {
		t.Error("the daemon did not log the API's expiry change")
	}
}
