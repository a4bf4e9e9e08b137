package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store/sqlite"
)

// status exits 0 on a healthy interface, and 1 (after printing all of
// it) when an interface drifts from its config or cannot be read.
func TestStatusExitCodes(t *testing.T) {
	c := newCLIEnv(t, "remove")
	c.ok("peer", "add", "-user", "alice", "-profile", "staff")
	if code, out, errOut := c.run("status"); code != ExitOK || errOut != "" {
		t.Fatalf("healthy: exit %d\n%s%s", code, out, errOut)
	}

	// The config names another listen port than the device has.
	data, err := os.ReadFile(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	drifting := strings.Replace(string(data), `orphans = "remove"`, fmt.Sprintf("orphans = \"remove\"\nlisten_port = %d", c.srv.Port+1), 1)
	if err := os.WriteFile(c.cfg, []byte(drifting), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := c.run("status", "-json")
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != ExitFailure ||
		!strings.Contains(errOut, c.srv.Name+": drift: listen port") || len(st.Interfaces[0].Drift) == 0 {
		t.Fatalf("drifting: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	if code, out, _ := c.run("status"); code != ExitFailure || !strings.Contains(out, "drift: listen port") || !strings.Contains(out, "alice") {
		t.Fatalf("drifting, human: exit %d\n%s", code, out)
	}
	if err := os.WriteFile(c.cfg, data, 0o600); err != nil {
		t.Fatal(err)
	}

	// The device is gone: unreadable.
	c.srv.Close()
	code, out, errOut = c.run("status")
	if code != ExitFailure || !strings.Contains(out, "device unreadable") || !strings.Contains(errOut, c.srv.Name+": device unreadable") {
		t.Fatalf("unreadable: exit %d\n%s%s", code, out, errOut)
	}
}

// A rejected create says the same in the CLI as in the API's 403: the exit
// status and the last line the script wrote to stderr.
func TestRejectionMessageMatchesAPI(t *testing.T) {
	s := newShapeEnv(t, "remove", time.Now())
	if err := os.WriteFile(filepath.Join(s.dir, "always_fail_C"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := s.run("peer", "add", "-user", "alice", "-profile", "staff")
	req, _ := http.NewRequest("POST", s.url+"/v1/peers", strings.NewReader(`{"user_id":"alice","profile_id":"staff"}`))
	req.Header.Set("Authorization", "Bearer shape-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != 403 {
		t.Fatalf("API: %d %s", resp.StatusCode, body)
	}
	const want = "rejected by connect script: exit status 4: not today"
	lines := strings.Split(strings.TrimSpace(errOut), "\n") // the log lines first
	if e.Error.Message != want || code != ExitFailure || lines[len(lines)-1] != "wgkeeper peer: "+want {
		t.Fatalf("API says %q; CLI exit %d, %q; want both %q", e.Error.Message, code, errOut, want)
	}
}

// events shows who holds a leased event and until when.
func TestEventsShowLease(t *testing.T) {
	c := newCLIEnv(t, "remove")
	out := c.ok("peer", "add", "-user", "alice", "-profile", "staff")
	k, err := wgtypes.ParseKey(privRe.FindStringSubmatch(out)[1])
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(c.dir, "wgkeeper.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	until := time.Now().Add(10 * time.Minute).UTC().Truncate(time.Second)
	const owner = "otherhost:4242:0123456789abcdef/1"
	if _, err := st.DeletePeers(context.Background(), []wgtypes.Key{k.PublicKey()}, "deleted", owner, until); err != nil {
		t.Fatal(err)
	}
	human := c.ok("events")
	if !strings.Contains(human, "LEASE") || !strings.Contains(human, owner+" until "+until.Format(time.RFC3339)+" (in ") {
		t.Fatalf("events:\n%s", human)
	}
	var evs struct {
		Events []struct {
			Event      string     `json:"event"`
			LeaseOwner *string    `json:"lease_owner"`
			LeaseUntil *time.Time `json:"lease_until"`
		} `json:"events"`
	}
	c.json(&evs, "events")
	if len(evs.Events) != 2 || evs.Events[0].LeaseOwner == nil || *evs.Events[0].LeaseOwner != owner || evs.Events[0].LeaseUntil == nil ||
		!evs.Events[0].LeaseUntil.Equal(until) || evs.Events[1].LeaseOwner != nil || evs.Events[1].LeaseUntil != nil {
		t.Fatalf("events -json: %+v", evs.Events)
	}
}

// peer add beyond max_expiry (the default 365d) says "365d".
func TestPeerAddExpiryLimitMessage(t *testing.T) {
	c := newCLIEnv(t, "remove")
	code, _, errOut := c.run("peer", "add", "-user", "alice", "-profile", "staff", "-expires", "400d")
	if code != ExitUsage || !strings.Contains(errOut, "maximum lifetime of 365d") || strings.Contains(errOut, "8760h") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
