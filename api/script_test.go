package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/store"
)

// TestFullScriptQueueIsBusy: 40 creates at once against 4 script slots,
// each connect script taking 1.5s, through the real HTTP API. Every answer
// is 201 or 503 busy with a Retry-After, never a rejection; a create that
// waited for its slot longer than the script's timeout minus its run still
// succeeds (waiting does not count against the timeout); a busy create ran
// no script and kept nothing.
func TestFullScriptQueueIsBusy(t *testing.T) {
	const timeout, queue = 3 * time.Second, 5 * time.Second
	h := newHarness(t, harnessOpts{hooks: fmt.Sprintf("timeout = %q\nqueue_timeout = %q", timeout, queue), maxPerUser: 1})

	type answer struct {
		user    string
		status  int
		code    string
		retry   string
		elapsed time.Duration
		err     error
	}
	answers := make([]answer, 40)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() {
			a := &answers[i]
			a.user = "queue" + strconv.Itoa(i)
			body, _ := json.Marshal(map[string]any{"user_id": a.user, "profile_id": "staff"})
			req, _ := http.NewRequest("POST", h.http.URL+"/v1/peers", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testToken)
			begin := time.Now()
			resp, err := h.client.Do(req)
			if err != nil {
				a.err = err
				return
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			a.elapsed = time.Since(begin)
			a.status, a.retry = resp.StatusCode, resp.Header.Get("Retry-After")
			a.code = response{body: data}.errCode()
		})
	}
	wg.Wait()

	created := map[string]bool{}
	busy := 0
	var longest time.Duration
	for _, a := range answers {
		switch {
		case a.err != nil:
			t.Errorf("%s: %v", a.user, a.err)
		case a.status == 201:
			created[a.user] = true
			longest = max(longest, a.elapsed)
		case a.status == 503 && a.code == CodeBusy:
			busy++
			if n, err := strconv.Atoi(a.retry); err != nil || n < 1 {
				t.Errorf("%s: busy with Retry-After %q", a.user, a.retry)
			}
		default:
			t.Errorf("%s: %d %s after %s, want 201 or 503 busy", a.user, a.status, a.code, a.elapsed)
		}
	}
	t.Logf("%d created, %d busy; the slowest create took %s", len(created), busy, longest.Round(time.Millisecond))
	if len(created) < 4 {
		t.Errorf("only %d creates succeeded, want at least one per slot", len(created))
	}
	if longest <= timeout {
		t.Errorf("no create waited past the %s timeout (slowest %s): the test shows nothing", timeout, longest)
	}

	// A script ran for every created config, and for nothing else.
	ran := map[string]bool{}
	for _, line := range h.scriptRuns() {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "C" {
			ran[f[1]] = true
		}
	}
	for _, a := range answers {
		if ran[a.user] != created[a.user] {
			t.Errorf("%s: answered %d, connect script ran: %v", a.user, a.status, ran[a.user])
		}
	}
	peers, err := h.st.ListPeers(h.ctx, store.PeerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if !created[p.UserID] || p.State != store.StateActive {
			t.Errorf("config kept for %s (%s)", p.UserID, p.State)
		}
	}
	if len(peers) != len(created) {
		t.Errorf("%d configs stored, %d created", len(peers), len(created))
	}
	h.assertInSync()
}

// TestCreateScriptUnsafe: with a directory above the script writable by
// everyone, a create answers 503 script_unsafe naming that directory and its
// mode, runs nothing and keeps nothing; once fixed, creates work again.
func TestCreateScriptUnsafe(t *testing.T) {
	h := newHarness(t, harnessOpts{real: true})
	above := filepath.Dir(h.dir)
	fi, err := os.Stat(above)
	if err != nil {
		t.Fatal(err)
	}
	before := h.snapshot()
	if err := os.Chmod(above, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(above, fi.Mode().Perm()) })

	r := h.do("POST", "/v1/peers", map[string]any{"user_id": "alice", "profile_id": "staff"})
	var e errorBody
	r.json(t, &e)
	if r.status != 503 || e.Error == nil || e.Error.Code != CodeScriptUnsafe {
		t.Fatalf("got %d %s, want 503 script_unsafe", r.status, r.body)
	}
	for _, want := range []string{above, "mode 0777", "writable by"} {
		if !strings.Contains(e.Error.Message, want) {
			t.Errorf("message %q lacks %q", e.Error.Message, want)
		}
	}
	if after := h.snapshot(); !after.equal(before) {
		t.Fatalf("a refused create changed something:\nbefore %+v\nafter  %+v", before, after)
	}
	if len(h.read().Peers) != 0 {
		t.Fatal("peer on the device")
	}

	if err := os.Chmod(above, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, 201)
}
