package api

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
)

// faultyEngine injects what the real store cannot produce on demand: a
// panic, or a failure of one read the engine passes on.
type faultyEngine struct {
	Engine
	panic bool
	err   error
}

func (f faultyEngine) ListPeers(ctx context.Context, flt store.PeerFilter) ([]store.Peer, error) {
	if f.panic {
		panic("injected fault")
	}
	if f.err != nil {
		return nil, f.err
	}
	return f.Engine.ListPeers(ctx, flt)
}

// TestPanicAndInternalErrors: a panic in a handler and an unexpected store
// error are answered 500 internal without details, logged, and the server
// keeps serving.
func TestPanicAndInternalErrors(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for _, fe := range []faultyEngine{{Engine: h.eng, panic: true}, {Engine: h.eng, err: errors.New("disk on fire: /secret/path")}} {
		s, err := New(Options{Engine: fe, Token: testToken, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		h.http.Config.Handler = s
		r := h.do("GET", "/v1/peers", nil)
		if r.status != 500 || r.errCode() != CodeInternal || strings.Contains(string(r.body), "secret") || strings.Contains(string(r.body), "injected") {
			t.Fatalf("fault: %d %s", r.status, r.body)
		}
		if r := h.do("GET", "/v1/events", nil); r.status != 200 { // an endpoint that does not list configs
			t.Fatalf("after the fault: %d %s", r.status, r.body)
		}
	}
	if !strings.Contains(logs.String(), "injected fault") || !strings.Contains(logs.String(), "disk on fire") || !strings.Contains(logs.String(), "stack=") {
		t.Fatalf("log:\n%s", logs.String())
	}
}

// TestDeviceUnavailableReads: configs on an interface that cannot be read
// are listed without "live" and the interface named in device_errors;
// status and metrics report it; the other interface is unaffected.
func TestDeviceUnavailableReads(t *testing.T) {
	h := newHarness(t, harnessOpts{ghost: true})
	good := h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, 201)
	k := newKey(t).PublicKey()
	_, ev, err := h.st.InsertPending(h.ctx, store.NewPeer{PublicKey: k, Interface: "wgghost0", ProfileID: "ghost", UserID: "bob",
		IPv4Range: netip.MustParsePrefix("10.97.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.Activate(h.ctx, k, ev.ID); err != nil {
		t.Fatal(err)
	}

	var pr PeersResponse
	r := h.do("GET", "/v1/peers", nil)
	r.json(t, &pr)
	if r.status != 200 || len(pr.Peers) != 2 || pr.DeviceErrors["wgghost0"] == "" || len(pr.DeviceErrors) != 1 {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	for _, p := range pr.Peers {
		if (p.PublicKey == good.Peer.PublicKey) != (p.Live != nil) {
			t.Fatalf("live of %s: %+v", p.PublicKey, p.Live)
		}
	}
	var one PeerResponse
	h.do("GET", "/v1/peers/"+urlKey(k), nil).json(t, &one)
	if one.Peer.Live != nil || !strings.Contains(one.DeviceError, "wgghost0") {
		t.Fatalf("one: %+v", one)
	}
	var st StatusResponse
	h.do("GET", "/v1/status", nil).json(t, &st)
	if len(st.Interfaces) != 2 || st.Interfaces[1].DeviceError == "" || st.Interfaces[1].PeersOnDevice != nil ||
		st.Interfaces[1].ConfigsActive != 1 || st.Interfaces[0].PeersOnDevice == nil {
		t.Fatalf("status: %+v", st)
	}
	// Health: the readable interface (a userspace device with a socket and
	// no kernel link) has the key this process first saw; the ghost is
	// missing.
	fine, ghost := st.Interfaces[0], st.Interfaces[1]
	if fine.Link != "none" || fine.ExpectedPublicKey == nil || *fine.ExpectedPublicKey != h.srv.PublicKey.String() ||
		fine.PublicKeyOK == nil || !*fine.PublicKeyOK || fine.ListenPortOK != nil || len(fine.Drift) != 0 {
		t.Fatalf("health of %s: %+v", h.srv.Name, fine.Health)
	}
	if ghost.Link != "missing" || ghost.PublicKeyOK != nil || !slices.Contains(ghost.Drift, "interface missing") {
		t.Fatalf("health of the ghost: %+v", ghost.Health)
	}
	// A create on the ghost is refused before any script runs.
	r = h.do("POST", "/v1/peers", map[string]any{"user_id": "carol", "profile_id": "ghost"})
	if r.status != 503 || r.errCode() != CodeDeviceUnavailable || !strings.Contains(string(r.body), "does not exist") {
		t.Fatalf("create on a missing interface: %d %s", r.status, r.body)
	}
	mfs := h.scrape()
	if v, ok := metricValue(mfs, "wgkeeper_device_read_errors_total", map[string]string{"interface": "wgghost0"}); !ok || v < 1 {
		t.Fatalf("device read errors: %v %v", v, ok)
	}
	if _, ok := metricValue(mfs, "wgkeeper_peers_online", map[string]string{"interface": "wgghost0"}); ok {
		t.Fatal("online peers reported for an unreadable device")
	}
	if _, ok := metricValue(mfs, "wgkeeper_peers_online", map[string]string{"interface": h.srv.Name}); !ok {
		t.Fatal("online peers missing for the readable device")
	}
	// Deleting a config whose device is gone still records its D event.
	var rm RemovedResponse
	r = h.do("DELETE", "/v1/peers/"+urlKey(k), nil)
	r.json(t, &rm)
	if r.status != 200 || len(rm.Events) != 1 || rm.DeviceErrors["wgghost0"] == "" {
		t.Fatalf("delete on a missing device: %d %s", r.status, r.body)
	}
}

// TestNewRequiresToken: an empty token is refused.
func TestNewRequiresToken(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if _, err := New(Options{Engine: h.eng, Token: " \n"}); err == nil {
		t.Fatal("empty token accepted")
	}
}

// TestServeAndShutdown: Serve on a real listener answers, and Shutdown
// makes it return nil.
func TestServeAndShutdown(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	l, err := Listen(config.API{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.api.Serve(l) }()
	resp, err := specClient(t, http.DefaultClient).Get("http://" + l.Addr().String() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := h.api.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestSetToken: a rotated token replaces the old one at once.
func TestSetToken(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.api.SetToken("rotated-token\n")
	if r := h.do("GET", "/v1/status", nil); r.status != 401 {
		t.Fatalf("old token: %d", r.status)
	}
	if r := h.doWith("GET", "/v1/status", nil, map[string]string{"Authorization": "Bearer rotated-token"}); r.status != 200 {
		t.Fatalf("new token: %d %s", r.status, r.body)
	}
	h.api.SetToken("  ")
	if r := h.doWith("GET", "/v1/status", nil, map[string]string{"Authorization": "Bearer rotated-token"}); r.status != 200 {
		t.Fatalf("an empty token replaced the old one: %d", r.status)
	}
}
