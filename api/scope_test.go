package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
)

const readToken = "read-only-token-for-tests"

func TestScope(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if _, ok := h.api.Scope(readToken); ok {
		t.Fatal("a read token is accepted before one is set")
	}
	if err := h.api.SetTokens(testToken, readToken); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		tok   string
		scope Scope
		ok    bool
	}{
		{testToken, ScopeAdmin, true},
		{" " + testToken + "\n", ScopeAdmin, true},
		{readToken, ScopeRead, true},
		{readToken + "x", "", false},
		{testToken[:len(testToken)-1], "", false},
		{"", "", false},
	} {
		if s, ok := h.api.Scope(tt.tok); s != tt.scope || ok != tt.ok {
			t.Errorf("Scope(%q) = %q, %v; want %q, %v", tt.tok, s, ok, tt.scope, tt.ok)
		}
	}
	// Refused changes keep the tokens in use.
	for _, bad := range [][2]string{{"", "x"}, {"same", "same"}, {" same", "same\n"}} {
		if err := h.api.SetTokens(bad[0], bad[1]); err == nil {
			t.Errorf("SetTokens(%q, %q) accepted", bad[0], bad[1])
		}
	}
	h.api.SetToken(readToken) // would make both tokens one: ignored
	if s, _ := h.api.Scope(readToken); s != ScopeRead {
		t.Fatalf("after refused changes, the read token has scope %q", s)
	}
	if s, _ := h.api.Scope(testToken); s != ScopeAdmin {
		t.Fatalf("after refused changes, the admin token has scope %q", s)
	}
	// SetToken rotates the admin token and keeps the read token; SetTokens
	// with no read token removes it.
	h.api.SetToken("rotated")
	if _, ok := h.api.Scope(testToken); ok {
		t.Fatal("old admin token still valid after SetToken")
	}
	if s, _ := h.api.Scope(readToken); s != ScopeRead {
		t.Fatal("SetToken dropped the read token")
	}
	if err := h.api.SetTokens("rotated", ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.api.Scope(readToken); ok {
		t.Fatal("read token still valid after it was removed")
	}
	if _, err := New(Options{Engine: h.eng, Token: "t", ReadToken: "t"}); err == nil {
		t.Fatal("New accepted a read token equal to the admin token")
	}
}

// TestReadToken: the read token gets 200 on every GET endpoint the router
// serves and 403 forbidden on every other, changing nothing; a wrong token
// gets 401 everywhere but the open /healthz.
func TestReadToken(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if err := h.api.SetTokens(testToken, readToken); err != nil {
		t.Fatal(err)
	}
	alice := h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, 201)
	// A failed event, for the retry endpoint.
	faild := h.create(map[string]any{"user_id": "faild1", "profile_id": "staff"}, 201)
	r := h.do("DELETE", "/v1/peers/"+url.PathEscape(faild.Peer.PublicKey), nil)
	var failed EventsResponse
	h.do("GET", "/v1/events?status=failed", nil).json(t, &failed)
	if r.status != 200 || len(failed.Events) != 1 {
		t.Fatalf("setup: delete faild1: %d %s; failed events %+v", r.status, r.body, failed.Events)
	}
	failedID := failed.Events[0].ID

	fill := strings.NewReplacer("{public_key}", url.PathEscape(alice.Peer.PublicKey), "{user_id}", "alice", "{id}", strconv.FormatInt(failedID, 10))
	bodies := map[string]any{
		"POST /v1/peers":                   map[string]any{"user_id": "mallory", "profile_id": "staff"},
		"PATCH /v1/peers/{public_key}":     map[string]any{"expires_in": "1h"},
		"POST /v1/housekeeping":            map[string]any{"wait": true},
		"POST /v1/events/{id}/retry":       nil,
		"DELETE /v1/peers/{public_key}":    nil,
		"DELETE /v1/users/{user_id}/peers": nil,
	}
	// GET endpoints that need a query to answer.
	queries := map[string]string{"GET /v1/log": "?user_id=alice"}
	read := map[string]string{"Authorization": "Bearer " + readToken}
	wrong := map[string]string{"Authorization": "Bearer " + readToken + "-wrong"}
	gets, writes := 0, 0
	for _, pattern := range routePatterns() {
		method, path, _ := strings.Cut(pattern, " ")
		path = fill.Replace(path) + queries[pattern]
		if method == http.MethodGet {
			gets++
			if r := h.doWith(method, path, nil, read); r.status != 200 {
				t.Errorf("read token: %s %s: %d %s, want 200", method, path, r.status, r.body)
			}
		} else {
			writes++
			before := h.snapshot()
			r := h.doWith(method, path, bodies[pattern], read)
			if r.status != http.StatusForbidden || r.errCode() != CodeForbidden {
				t.Errorf("read token: %s %s: %d %s, want 403 %s", method, path, r.status, r.body, CodeForbidden)
			}
			if after := h.snapshot(); !after.equal(before) {
				t.Errorf("read token: %s %s changed things:\nbefore %+v\nafter  %+v", method, path, before, after)
			}
		}
		if path == "/healthz" {
			continue
		}
		if r := h.doWith(method, path, bodies[pattern], wrong); r.status != http.StatusUnauthorized || r.errCode() != CodeUnauthorized {
			t.Errorf("wrong token: %s %s: %d %s, want 401", method, path, r.status, r.body)
		}
	}
	if gets < 6 || writes < 6 {
		t.Fatalf("only %d GET and %d other routes found", gets, writes)
	}
	// The event is still failed and alice's config unchanged.
	var one PeerResponse
	h.do("GET", "/v1/peers/"+url.PathEscape(alice.Peer.PublicKey), nil).json(t, &one)
	if one.Peer.ExpiresAt == nil || !one.Peer.ExpiresAt.Equal(*alice.Peer.ExpiresAt) {
		t.Fatalf("alice's expiry changed: %v, was %v", one.Peer.ExpiresAt, alice.Peer.ExpiresAt)
	}
	var evs EventsResponse
	h.do("GET", "/v1/events?status=failed", nil).json(t, &evs)
	if len(evs.Events) != 1 || evs.Events[0].ID != failedID {
		t.Fatalf("failed events after the read token's retry: %+v", evs.Events)
	}
	// A method no route has is refused the same way.
	if r := h.doWith("PUT", "/v1/status", nil, read); r.status != http.StatusForbidden {
		t.Errorf("read token: PUT /v1/status: %d, want 403", r.status)
	}
}

// clientFrom returns an HTTP client and the local address of its
// connections (one at a time: keep-alive off, so each request dials).
func clientFrom(t *testing.T, dial func(ctx context.Context) (net.Conn, error)) (*http.Client, func() string) {
	var last string
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, err := dial(ctx)
		if err == nil {
			last = c.LocalAddr().String()
		}
		return c, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return specClient(t, &http.Client{Transport: tr, Timeout: 30 * time.Second}), func() string { return last }
}

func send(t *testing.T, c *http.Client, method, url, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// TestActorRecorded: a create, delete and revoke through the API record
// "api:admin@" and the client's address on their events, shown by
// GET /v1/events; over a unix socket the client's uid.
func TestActorRecorded(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	addr := h.http.Listener.Addr().String()
	c, local := clientFrom(t, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	})
	base := h.http.URL

	st, body := send(t, c, "POST", base+"/v1/peers", testToken, `{"user_id":"alice","profile_id":"staff"}`)
	if st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	createdBy := "api:admin@" + local()
	var cr CreateResponse
	response{body: []byte(body)}.json(t, &cr)
	st, body = send(t, c, "DELETE", base+"/v1/peers/"+url.PathEscape(cr.Peer.PublicKey), testToken, "")
	if st != 200 {
		t.Fatalf("delete: %d %s", st, body)
	}
	deletedBy := "api:admin@" + local()
	var rm RemovedResponse
	response{body: []byte(body)}.json(t, &rm)
	if len(rm.Events) != 1 || rm.Events[0].Actor == nil || *rm.Events[0].Actor != deletedBy {
		t.Fatalf("DELETE answer's event: %s; want actor %q", body, deletedBy)
	}
	h.create(map[string]any{"user_id": "bob", "profile_id": "staff"}, 201)
	st, body = send(t, c, "DELETE", base+"/v1/users/bob/peers", testToken, "")
	if st != 200 {
		t.Fatalf("revoke: %d %s", st, body)
	}
	revokedBy := "api:admin@" + local()
	if createdBy == deletedBy || deletedBy == revokedBy || !strings.HasPrefix(createdBy, "api:admin@127.0.0.1:") {
		t.Fatalf("client addresses %q %q %q: want three connections from 127.0.0.1", createdBy, deletedBy, revokedBy)
	}

	var evs EventsResponse
	h.do("GET", "/v1/events", nil).json(t, &evs)
	got := map[string]string{}
	for _, e := range evs.Events {
		a := "null"
		if e.Actor != nil {
			a = *e.Actor
		}
		got[e.UserID+" "+e.Event+" "+e.Reason] = a
	}
	want := map[string]string{
		"alice C created": createdBy,
		"alice D deleted": deletedBy,
		"bob D revoked":   revokedBy,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("GET /v1/events: %s by %q, want %q (all: %v)", k, got[k], v, got)
		}
	}

	// Over a unix socket: the uid of the client process.
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen(config.API{Listen: "unix:" + sock})
	if err != nil {
		t.Fatal(err)
	}
	go h.api.Serve(l)
	t.Cleanup(func() { h.api.Shutdown(context.Background()) })
	uc, _ := clientFrom(t, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	})
	st, body = send(t, uc, "POST", "http://wgkeeper/v1/peers", testToken, `{"user_id":"carol","profile_id":"staff"}`)
	if st != 201 {
		t.Fatalf("create over the unix socket: %d %s", st, body)
	}
	evl, err := h.st.ListEvents(h.ctx, store.EventFilter{UserID: "carol"})
	if want := fmt.Sprintf("api:admin@unix:uid=%d", os.Getuid()); err != nil || len(evl) != 1 || evl[0].Actor != want {
		t.Fatalf("carol's events %+v, %v; want one by %q", evl, err, want)
	}
}

// TestLoadReadToken: no key, no read token; a set key follows the rules
// of token_file, naming read_token_file in its errors.
func TestLoadReadToken(t *testing.T) {
	if tok, err := LoadReadToken("", nil); tok != "" || err != nil {
		t.Fatalf("no key: %q, %v; want no token", tok, err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	path := filepath.Join(t.TempDir(), "read.token")
	tok, err := LoadReadToken(path, log)
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(tok) {
		t.Fatalf("missing file: %q, %v; want a new token", tok, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created file: %v %v", fi, err)
	}
	if !strings.Contains(logs.String(), "read_token_file="+path) || strings.Contains(logs.String(), tok) {
		t.Fatalf("log: %s", logs.String())
	}
	if again, err := LoadReadToken(path, nil); err != nil || again != tok {
		t.Fatalf("second load: %q, %v", again, err)
	}
	os.Chmod(path, 0o640)
	if _, err := LoadReadToken(path, nil); err == nil || !strings.Contains(err.Error(), "api.read_token_file "+path) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("mode 0640: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("\n"), 0o600)
	if _, err := LoadReadToken(path, nil); err == nil || !strings.Contains(err.Error(), "api.read_token_file") {
		t.Fatalf("empty file: %v", err)
	}
}

// TestAdminPageReadToken: the read token logs in to the page, which only
// reads; the sessions end when a token changes, not when SetTokens is
// given the tokens in use again.
func TestAdminPageReadToken(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if err := h.api.SetTokens(testToken, readToken); err != nil {
		t.Fatal(err)
	}
	base := h.http.URL
	c := browser(t, h.http)
	if resp, _ := postForm(t, c, base+"/ui/login", url.Values{"token": {readToken}}); resp.StatusCode != http.StatusSeeOther || sessionCookie(resp) == nil {
		t.Fatalf("login with the read token: %d", resp.StatusCode)
	}
	if resp, _ := get(t, c, base+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("page with the read token's session: %d", resp.StatusCode)
	}
	if err := h.api.SetTokens(testToken, readToken); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, c, base+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("page after a reload with the same tokens: %d, want the session kept", resp.StatusCode)
	}
	if err := h.api.SetTokens(testToken, readToken+"-2"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, c, base+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("page after the read token changed: %d, want the login", resp.StatusCode)
	}
	if resp, _ := postForm(t, c, base+"/ui/login", url.Values{"token": {readToken}}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login with the old read token: %d, want 401", resp.StatusCode)
	}
}
