package api

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/store"
)

var soak = flag.Bool("soak", false, "run TestSoakConcurrentClients for 20 s instead of 5 s (CI: go test -race -run Soak ./api/ -soak)")

// soakDuration is 20 s with -soak, which CI passes; 5 s otherwise, enough
// to exercise creates, limits and deletes in every local run.
func soakDuration() time.Duration {
	if *soak {
		return 20 * time.Second
	}
	return 5 * time.Second
}

// TestSoakConcurrentClients: 16 clients create and delete configs of 6
// users in one profile (3 configs per user at most) for a bounded time
// (soakDuration). No answer is a 5xx, the per-user limit holds at every
// moment, no address is handed out twice, every 201 ran exactly one
// connect script, and store and device agree at the end.
func TestSoakConcurrentClients(t *testing.T) {
	h := newHarness(t, harnessOpts{maxPerUser: 3})
	const clients, users, limit = 16, 6, 3
	tr := &http.Transport{MaxIdleConnsPerHost: clients * 2}
	defer tr.CloseIdleConnections()
	cl := specClient(t, &http.Client{Transport: tr, Timeout: 30 * time.Second})

	send := func(method, path string, body any) (int, []byte, error) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, h.http.URL+path, rd)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := cl.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		return resp.StatusCode, data, err
	}

	var (
		stop                                 atomic.Bool
		created, retried, limited, inProg    atomic.Int64
		deleted, notFound                    atomic.Int64
		failMu                               sync.Mutex // guards failures
		failures                             []string
		wg                                   sync.WaitGroup
		monitorViolations, monitorIterations atomic.Int64
	)
	fail := func(format string, a ...any) {
		failMu.Lock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, a...))
		}
		failMu.Unlock()
		stop.Store(true)
	}

	// The monitor checks the limit while the clients run.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			peers, err := h.st.ListPeers(h.ctx, store.PeerFilter{ProfileID: "staff"})
			if err != nil {
				fail("monitor: %v", err)
				return
			}
			per := map[string]int{}
			for _, p := range peers {
				per[p.UserID]++
			}
			for u, n := range per {
				if n > limit {
					monitorViolations.Add(1)
					fail("user %s holds %d configs", u, n)
				}
			}
			monitorIterations.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}()

	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			var mine []string // keys this client created
			var lastBody map[string]any
			for !stop.Load() {
				user := fmt.Sprintf("user%d", rng.IntN(users))
				switch op := rng.IntN(10); {
				case op < 5 || len(mine) == 0:
					body := map[string]any{"user_id": user, "profile_id": "staff"}
					if rng.IntN(2) == 0 {
						body["public_key"] = newKey(t).PublicKey().String()
					}
					if op == 0 && lastBody != nil {
						body = lastBody // a portal retrying
					}
					status, data, err := send("POST", "/v1/peers", body)
					if err != nil {
						fail("create: %v", err)
						return
					}
					var e errorBody
					_ = json.Unmarshal(data, &e)
					switch {
					case status == 201:
						created.Add(1)
						var cr CreateResponse
						if err := json.Unmarshal(data, &cr); err != nil {
							fail("create answer %s: %v", data, err)
							return
						}
						mine = append(mine, cr.Peer.PublicKey)
						if _, ok := body["public_key"]; ok {
							lastBody = body
						}
					case status == 200:
						retried.Add(1)
					case status == 409 && e.Error != nil && e.Error.Code == CodeLimitReached:
						limited.Add(1)
					case status == 409 && e.Error != nil && e.Error.Code == CodeInProgress:
						inProg.Add(1)
					default:
						fail("create %v: %d %s", body, status, data)
						return
					}
				default:
					i := rng.IntN(len(mine))
					k := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					status, data, err := send("DELETE", "/v1/peers/"+escKey(k), nil)
					if err != nil {
						fail("delete: %v", err)
						return
					}
					switch status {
					case 200:
						deleted.Add(1)
					case 404:
						notFound.Add(1) // another client's retry body was ours, and it deleted first
					default:
						fail("delete %s: %d %s", k, status, data)
						return
					}
				}
			}
		}(c)
	}
	time.Sleep(soakDuration())
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("failures:\n%s", strings.Join(failures, "\n"))
	}
	t.Logf("%s: %d created, %d idempotent retries, %d limit_reached, %d in_progress, %d deleted, %d already gone; limit checked %d times",
		soakDuration(), created.Load(), retried.Load(), limited.Load(), inProg.Load(), deleted.Load(), notFound.Load(), monitorIterations.Load())
	if created.Load() == 0 || limited.Load() == 0 || deleted.Load() == 0 {
		t.Fatal("the load did not exercise creates, limits and deletes")
	}

	peers, err := h.st.ListPeers(h.ctx, store.PeerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	v4, v6, per := map[string]bool{}, map[string]bool{}, map[string]int{}
	for _, p := range peers {
		if p.State != store.StateActive {
			t.Errorf("config %s left %s", p.PublicKey, p.State)
		}
		if v4[p.IPv4.String()] || v6[p.IPv6.String()] {
			t.Errorf("address of %s handed out twice", p.PublicKey)
		}
		v4[p.IPv4.String()], v6[p.IPv6.String()] = true, true
		per[p.UserID]++
	}
	for u, n := range per {
		if n > limit {
			t.Errorf("user %s holds %d configs", u, n)
		}
	}
	h.assertInSync()
	cRuns := 0
	for _, l := range h.scriptRuns() {
		if strings.HasPrefix(l, "C ") {
			cRuns++
		}
	}
	if int64(cRuns) != created.Load() {
		t.Errorf("%d connect scripts ran for %d configs created", cRuns, created.Load())
	}
}
