package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api"
	"github.com/wgkeeper/wgkeeper/api/apitest"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// shapeEnv runs CLI commands and API requests against one database and
// one real device, with one fixed clock for both.
type shapeEnv struct {
	*cliEnv
	url string
	// client checks every request and answer against api/openapi.yaml.
	client *http.Client
}

func newShapeEnv(t *testing.T, orphans string, t0 time.Time) *shapeEnv {
	c := newCLIEnv(t, orphans)
	old := now
	now = func() time.Time { return t0 }
	t.Cleanup(func() { now = old })
	e := &env{ctx: context.Background(), stdout: io.Discard, stderr: io.Discard, configPath: c.cfg}
	p, err := e.openParts(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	srv, err := api.New(api.Options{Engine: p.engine, Token: "shape-token", Version: Version,
		Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	client := &http.Client{Transport: apitest.File(t, "../api/openapi.yaml").Transport(t, nil)}
	return &shapeEnv{cliEnv: c, url: hs.URL, client: client}
}

// cliJSON runs a command and decodes its stdout.
func (s *shapeEnv) cliJSON(args ...string) any {
	s.t.Helper()
	out := s.ok(args...)
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		s.t.Fatalf("wgkeeper %v: %v\n%s", args, err, out)
	}
	return v
}

// apiJSON makes a request and decodes its body; the status must be 2xx.
func (s *shapeEnv) apiJSON(method, path, body string) any {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer shape-token")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		s.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		s.t.Fatalf("%s %s: %v\n%s", method, path, err, data)
	}
	return v
}

// same compares a command's JSON with an endpoint's, field by field. The
// command runs before and after the request; when those two differ (a
// client's traffic moved a counter meanwhile) it tries again.
func (s *shapeEnv) same(args []string, method, path, body string) {
	s.t.Helper()
	for try := 0; ; try++ {
		before := s.cliJSON(args...)
		got := s.apiJSON(method, path, body)
		after := s.cliJSON(args...)
		if !reflect.DeepEqual(before, after) && try < 5 {
			continue
		}
		if d := jsonDiff("", before, got); len(d) > 0 {
			s.t.Errorf("wgkeeper %s differs from %s %s:\n  %s", strings.Join(args, " "), method, path, strings.Join(d, "\n  "))
		}
		return
	}
}

// jsonDiff lists the paths where two decoded JSON values differ: a key
// one side lacks, a null against a value, another value.
func jsonDiff(path string, a, b any) []string {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: CLI %v, API %v", path, a, b)}
		}
		keys := map[string]bool{}
		for k := range x {
			keys[k] = true
		}
		for k := range y {
			keys[k] = true
		}
		var names []string
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		var out []string
		for _, k := range names {
			va, ina := x[k]
			vb, inb := y[k]
			switch {
			case !ina:
				out = append(out, fmt.Sprintf("%s.%s: only in the API (%v)", path, k, vb))
			case !inb:
				out = append(out, fmt.Sprintf("%s.%s: only in the CLI (%v)", path, k, va))
			default:
				out = append(out, jsonDiff(path+"."+k, va, vb)...)
			}
		}
		return out
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return []string{fmt.Sprintf("%s: CLI %v, API %v", path, a, b)}
		}
		var out []string
		for i := range x {
			out = append(out, jsonDiff(fmt.Sprintf("%s[%d]", path, i), x[i], y[i])...)
		}
		return out
	}
	if !reflect.DeepEqual(a, b) {
		return []string{fmt.Sprintf("%s: CLI %v, API %v", path, a, b)}
	}
	return nil
}

// shape replaces every value but objects and arrays with its JSON type,
// for answers about different configs.
func shape(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = shape(e)
		}
		return out
	case []any:
		if len(x) == 0 {
			return []any{}
		}
		return []any{shape(x[0])}
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// Every -json output is its endpoint's JSON: the same keys, the same nulls,
// the same values, on one store and one device with a handshaking client,
// a config missing from the device, one with drift, a kept orphan holding
// a pool address, and C and D events.
func TestJSONMatchesAPI(t *testing.T) {
	t0 := time.Now().UTC().Truncate(time.Second).Add(time.Minute)
	s := newShapeEnv(t, "keep", t0)
	ok, _ := wgtypes.GeneratePrivateKey()
	orphan := ok.PublicKey()
	if _, err := s.dev.Apply(context.Background(), s.srv.Name, wg.Plan{Add: []wg.Wanted{{PublicKey: orphan,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32"), netip.MustParsePrefix("fd00:99::2/128")}}}}); err != nil {
		t.Fatal(err)
	}
	ak, _ := wgtypes.GeneratePrivateKey()
	alice := ak.PublicKey().String()
	s.ok("peer", "add", "-user", "alice", "-profile", "staff", "-public-key", alice, "-name", "laptop", "-originating-ip", "192.0.2.1")
	bk, _ := wgtypes.GeneratePrivateKey()
	s.ok("peer", "add", "-user", "bob", "-profile", "staff", "-public-key", bk.PublicKey().String(), "-expires", "30d", "-originating-ip", "2001:db8::1")
	cl := s.srv.NewClient(t, wgtest.WithClientKey(bk), wgtest.WithClientAddrs(netip.MustParseAddr("10.99.0.4"), netip.MustParseAddr("fd00:99::4")))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	// the daemon's session poll opens bob's session: he is online
	if _, err := s.poller(func() time.Time { return t0 }).PollSessions(ctx, s.srv.Name); err != nil {
		t.Fatal(err)
	}
	ck, _ := wgtypes.GeneratePrivateKey()
	carol := ck.PublicKey()
	s.ok("peer", "add", "-user", "carol", "-profile", "staff", "-public-key", carol.String())
	dk, _ := wgtypes.GeneratePrivateKey()
	s.ok("peer", "add", "-user", "dave", "-profile", "staff", "-public-key", dk.PublicKey().String())
	// carol leaves the device, dave drifts: status and the plan show both.
	if _, err := s.dev.Apply(context.Background(), s.srv.Name, wg.Plan{Remove: []wgtypes.Key{carol},
		Update: []wg.Change{{Wanted: wg.Wanted{PublicKey: dk.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.7.7/32")}}, AllowedIPs: true}}}); err != nil {
		t.Fatal(err)
	}
	// A removed config: a delivered D event.
	ek, _ := wgtypes.GeneratePrivateKey()
	s.ok("peer", "add", "-user", "erin", "-profile", "staff", "-public-key", ek.PublicKey().String())
	s.ok("peer", "remove", ek.PublicKey().String())

	var st api.StatusResponse
	s.json(&st, "status")
	want := map[string]string{alice: api.ConfigNever, bk.PublicKey().String(): api.ConfigOnline, carol.String(): api.ConfigMissing, dk.PublicKey().String(): api.ConfigDrift}
	for _, c := range st.Interfaces[0].Configs {
		if c.Status != want[c.PublicKey] {
			t.Errorf("status of %s (%s): %s, want %s", c.UserID, c.PublicKey, c.Status, want[c.PublicKey])
		}
	}
	if o := st.Interfaces[0].OrphanPeers; len(o) != 1 || !o[0].Kept || fmt.Sprint(o[0].Keeps) != "[10.99.0.2 fd00:99::2]" {
		t.Errorf("orphans: %+v", o)
	}

	s.same([]string{"status", "-json"}, "GET", "/v1/status", "")
	s.same([]string{"peer", "list", "-json"}, "GET", "/v1/peers", "")
	s.same([]string{"peer", "list", "-user", "alice", "-state", "active", "-json"}, "GET", "/v1/peers?user_id=alice&state=active", "")
	s.same([]string{"events", "-json"}, "GET", "/v1/events", "")
	s.same([]string{"events", "-event", "D", "-limit", "1", "-json"}, "GET", "/v1/events?event=D&limit=1", "")
	s.same([]string{"reconcile", "-dry-run", "-json"}, "GET", "/v1/plan", "")
	at := t0.Format(time.RFC3339)
	s.same([]string{"log", "-ip", "10.99.0.4", "-at", at, "-json"}, "GET", "/v1/log?ip=10.99.0.4&at="+at, "")
	s.same([]string{"log", "-user", "erin", "-json"}, "GET", "/v1/log?user_id=erin", "")
	// A retry of a create answers the existing config, from both.
	s.same([]string{"peer", "add", "-user", "alice", "-profile", "staff", "-public-key", alice, "-json"},
		"POST", "/v1/peers", fmt.Sprintf(`{"user_id":"alice","profile_id":"staff","public_key":%q}`, alice))

	// Housekeeping runs twice: the same summary but for its times (the
	// repairs done first, so that both find the same).
	s.ok("reconcile")
	hk := func(v any) any {
		m := v.(map[string]any)
		for _, k := range []string{"started_at", "duration_seconds"} {
			if _, ok := m[k]; !ok {
				t.Errorf("housekeeping lacks %s", k)
			}
			m[k] = "time"
		}
		return m
	}
	if d := jsonDiff("", hk(s.cliJSON("housekeeping", "-json")), hk(s.apiJSON("POST", "/v1/housekeeping", `{"wait":true}`))); len(d) > 0 {
		t.Errorf("housekeeping -json differs from POST /v1/housekeeping:\n  %s", strings.Join(d, "\n  "))
	}

	// New configs and removals differ in their keys and ids: compare the
	// shape.
	created := s.cliJSON("peer", "add", "-user", "frank", "-profile", "staff", "-json")
	createdAPI := s.apiJSON("POST", "/v1/peers", `{"user_id":"gina","profile_id":"staff"}`)
	if d := jsonDiff("", shape(created), shape(createdAPI)); len(d) > 0 {
		t.Errorf("peer add -json differs from POST /v1/peers:\n  %s", strings.Join(d, "\n  "))
	}
	key := func(v any) string { return v.(map[string]any)["peer"].(map[string]any)["public_key"].(string) }
	removed := s.cliJSON("peer", "remove", "-json", key(created))
	removedAPI := s.apiJSON("DELETE", "/v1/peers/"+urlKey(key(createdAPI)), "")
	if d := jsonDiff("", shape(removed), shape(removedAPI)); len(d) > 0 {
		t.Errorf("peer remove -json differs from DELETE /v1/peers/{key}:\n  %s", strings.Join(d, "\n  "))
	}
	revoked := s.cliJSON("peer", "revoke", "-user", "alice", "-json")
	revokedAPI := s.apiJSON("DELETE", "/v1/users/bob/peers", "")
	if d := jsonDiff("", shape(revoked), shape(revokedAPI)); len(d) > 0 {
		t.Errorf("peer revoke -json differs from DELETE /v1/users/{user}/peers:\n  %s", strings.Join(d, "\n  "))
	}
	// After all that, still one picture.
	s.same([]string{"status", "-json"}, "GET", "/v1/status", "")
	s.same([]string{"events", "-json"}, "GET", "/v1/events", "")
}

func urlKey(k string) string {
	return strings.NewReplacer("+", "-", "/", "_").Replace(k)
}
