package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// apiClient talks to the daemon's API, one connection per request, and
// remembers the local address of the last one.
type apiClient struct {
	t     *testing.T
	base  string
	c     *http.Client
	local string
}

func newAPIClient(t *testing.T, addr string) *apiClient {
	a := &apiClient{t: t, base: "http://" + addr}
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			a.local = c.LocalAddr().String()
		}
		return c, err
	}}
	a.c = specClient(t, &http.Client{Transport: tr, Timeout: 30 * time.Second})
	return a
}

func (a *apiClient) do(method, path, token, body string) (int, []byte) {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

type auditEvent struct {
	ID     int64   `json:"id"`
	Event  string  `json:"event"`
	Reason string  `json:"reason"`
	Actor  *string `json:"actor"`
	UserID string  `json:"user_id"`
}

func actorsOf(t *testing.T, data []byte) map[string]string {
	t.Helper()
	var out struct {
		Events []auditEvent `json:"events"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("events JSON %s: %v", data, err)
	}
	m := map[string]string{}
	for _, e := range out.Events {
		a := "null"
		if e.Actor != nil {
			a = *e.Actor
		}
		m[e.UserID+" "+e.Event+" "+e.Reason] = a
	}
	return m
}

// TestAuditTrail runs the real daemon with an admin and a read-only token:
// the read token reads and cannot write; every change records its actor
// (the API client with its address, the CLI with its uid, the daemon for
// its own expiry), shown alike by `events -json` and GET /v1/events; SIGHUP
// reloads both token files.
func TestAuditTrail(t *testing.T) {
	dir, cfgPath, apiAddr := apiDaemonDir(t, "wga", "token_file = \"api.token\"\nread_token_file = \"read.token\"")
	writeToken := func(file, tok string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, file), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	admin, read := "admin-token-1", "read-token-1"
	writeToken("api.token", admin)
	writeToken("read.token", read)
	d := startDaemon(t, cfgPath)
	d.waitLog(t, "API listening", 20*time.Second)
	api := newAPIClient(t, apiAddr)
	cli := func(args ...string) string {
		t.Helper()
		return wgkeeper(t, append([]string{"-config", cfgPath}, args...)...)
	}

	// Scopes.
	if st, body := api.do("GET", "/v1/status", read, ""); st != 200 {
		t.Fatalf("read token, GET /v1/status: %d %s", st, body)
	}
	if st, body := api.do("GET", "/metrics", read, ""); st != 200 {
		t.Fatalf("read token, GET /metrics: %d %s", st, body)
	}
	if st, body := api.do("POST", "/v1/peers", read, `{"user_id":"mallory","profile_id":"staff"}`); st != 403 || !strings.Contains(string(body), `"forbidden"`) {
		t.Fatalf("read token, POST /v1/peers: %d %s; want 403 forbidden", st, body)
	}
	if st, _ := api.do("GET", "/v1/status", "nope", ""); st != 401 {
		t.Fatalf("wrong token: %d, want 401", st)
	}

	// The API: create and delete alice's, revoke bob's.
	st, body := api.do("POST", "/v1/peers", admin, `{"user_id":"alice","profile_id":"staff"}`)
	if st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	want := map[string]string{"alice C created": "api:admin@" + api.local}
	var created struct {
		Peer struct {
			PublicKey string `json:"public_key"`
		} `json:"peer"`
	}
	if err := json.Unmarshal(body, &created); err != nil {
		t.Fatal(err)
	}
	if st, body := api.do("DELETE", "/v1/peers/"+url.PathEscape(created.Peer.PublicKey), admin, ""); st != 200 {
		t.Fatalf("delete: %d %s", st, body)
	}
	want["alice D deleted"] = "api:admin@" + api.local
	if st, body := api.do("POST", "/v1/peers", admin, `{"user_id":"bob","profile_id":"staff"}`); st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	want["bob C created"] = "api:admin@" + api.local
	// An expiry change records no event; the log names its actor.
	if st, body := api.do("PATCH", "/v1/peers/"+url.PathEscape(bobKey(t, api, admin)), admin, `{"expires_in":"2d"}`); st != 200 {
		t.Fatalf("patch: %d %s", st, body)
	}
	patchedBy := "api:admin@" + api.local
	if st, body := api.do("DELETE", "/v1/users/bob/peers", admin, ""); st != 200 {
		t.Fatalf("revoke: %d %s", st, body)
	}
	want["bob D revoked"] = "api:admin@" + api.local

	// The CLI: add, remove, add, revoke; and a config the daemon expires.
	me := fmt.Sprintf("cli:%d", os.Getuid())
	k, _ := wgtypes.GeneratePrivateKey()
	cli("peer", "add", "-user", "carol", "-profile", "staff", "-public-key", k.PublicKey().String())
	cli("peer", "remove", k.PublicKey().String())
	cli("peer", "add", "-user", "dave", "-profile", "staff")
	cli("peer", "revoke", "-user", "dave")
	cli("peer", "add", "-user", "erin", "-profile", "staff", "-expires", "2s")
	for _, k := range []string{"carol C created", "carol D deleted", "dave C created", "dave D revoked", "erin C created"} {
		want[k] = me
	}
	want["erin D expired"] = "daemon"

	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := api.do("GET", "/v1/events", read, "")
		if _, ok := actorsOf(t, body)["erin D expired"]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("erin's config was not expired by the daemon: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, body = api.do("GET", "/v1/events", read, "")
	fromAPI := actorsOf(t, body)
	fromCLI := actorsOf(t, []byte(cli("events", "-json")))
	for k, v := range want {
		if fromAPI[k] != v {
			t.Errorf("GET /v1/events: %s by %q, want %q", k, fromAPI[k], v)
		}
		if fromCLI[k] != v {
			t.Errorf("events -json: %s by %q, want %q", k, fromCLI[k], v)
		}
	}
	if len(fromAPI) != len(want) {
		t.Errorf("events %v, want exactly %v", fromAPI, want)
	}
	if table := cli("events"); !strings.Contains(table, "ACTOR") || !strings.Contains(table, "daemon") || !strings.Contains(table, me) {
		t.Errorf("events table without actors:\n%s", table)
	}
	for _, parts := range [][]string{
		{`msg="config created"`, "user=alice", "actor=" + want["alice C created"]},
		{`msg="config removed"`, "user=alice", "actor=" + want["alice D deleted"]},
		{`msg="config removed"`, "user=erin", "reason=expired", "actor=daemon"},
		{`msg="expiry changed"`, "user=bob", "actor=" + patchedBy},
	} {
		if !d.eventuallyLogs(5*time.Second, parts...) {
			t.Errorf("the daemon logged no line with %q", parts)
		}
	}

	// SIGHUP re-reads both token files.
	admin2, read2 := "admin-token-2", "read-token-2"
	writeToken("api.token", admin2)
	writeToken("read.token", read2)
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(t, "config reloaded", 10*time.Second)
	for _, tt := range []struct {
		method, path, token string
		status              int
	}{
		{"GET", "/v1/status", admin, 401},
		{"GET", "/v1/status", read, 401},
		{"GET", "/v1/status", read2, 200},
		{"POST", "/v1/housekeeping", read2, 403},
		{"POST", "/v1/housekeeping", admin2, 200},
	} {
		if st, body := api.do(tt.method, tt.path, tt.token, ""); st != tt.status {
			t.Errorf("after SIGHUP: %s %s with %q: %d %s, want %d", tt.method, tt.path, tt.token, st, body, tt.status)
		}
	}
	// The daemon's output reaches the test through a pipe: a line written
	// before the answer may still be on its way when the answer arrives.
	if !d.eventuallyLogs(5*time.Second, "msg=housekeeping", "actor=api:admin@127.0.0.1:") || !logHas(d.log(), "msg=housekeeping", "actor=daemon") {
		t.Errorf("housekeeping runs are not logged with their actor")
	}
}

// bobKey returns the public key of bob's one config.
func bobKey(t *testing.T, api *apiClient, token string) string {
	t.Helper()
	st, body := api.do("GET", "/v1/peers?user_id=bob", token, "")
	var out struct {
		Peers []struct {
			PublicKey string `json:"public_key"`
		} `json:"peers"`
	}
	if err := json.Unmarshal(body, &out); st != 200 || err != nil || len(out.Peers) != 1 {
		t.Fatalf("bob's configs: %d %s %v", st, body, err)
	}
	return out.Peers[0].PublicKey
}

// logHas reports whether one line of log holds every part.
// eventuallyLogs reports whether one line of the daemon's log holds every
// part within timeout.
func (d *daemonProc) eventuallyLogs(timeout time.Duration, parts ...string) bool {
	deadline := time.Now().Add(timeout)
	for {
		if logHas(d.log(), parts...) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func logHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
