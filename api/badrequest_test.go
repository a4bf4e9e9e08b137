package api

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/store"
)

// TestBadRequests sends requests that must be refused and checks each gets
// its documented status and code, and that the store, the event log, the
// device and the script log are unchanged.
func TestBadRequests(t *testing.T) {
	h := newHarness(t, harnessOpts{ghost: true})
	owned := newKey(t).PublicKey()
	h.create(map[string]any{"user_id": "owner", "profile_id": "staff", "public_key": owned.String()}, 201)
	for i := 0; i < 3; i++ {
		h.create(map[string]any{"user_id": "full", "profile_id": "staff"}, 201)
	}
	h.create(map[string]any{"user_id": "tinyuser", "profile_id": "tiny"}, 201)
	evs, err := h.st.ListEvents(h.ctx, store.EventFilter{Kind: "C", Limit: 1})
	if err != nil || len(evs) != 1 {
		t.Fatalf("events: %v %v", evs, err)
	}
	doneC := evs[0].ID
	unknown := newKey(t).PublicKey()

	tok := "Bearer " + testToken
	jsonCT := map[string]string{"Authorization": tok, "Content-Type": "application/json"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"Authorization": tok}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	create := func(fields string) string {
		return `{"user_id":"newuser","profile_id":"staff"` + fields + `}`
	}
	past := h.clock.Now().Add(-time.Hour).Format(time.RFC3339)
	tooLate := h.clock.Now().Add(400 * 24 * time.Hour).Format(time.RFC3339)
	zero := base64.StdEncoding.EncodeToString(make([]byte, 32))
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))

	cases := []struct {
		name    string
		method  string
		path    string
		body    string
		headers map[string]string
		status  int
		code    string
		field   string
		runs    bool // the connect script runs (and refuses)
	}{
		{"no token", "POST", "/v1/peers", create(""), map[string]string{"Content-Type": "application/json"}, 401, CodeUnauthorized, "", false},
		{"wrong token", "POST", "/v1/peers", create(""), with("Authorization", "Bearer nope", "Content-Type", "application/json"), 401, CodeUnauthorized, "", false},
		{"token as basic auth", "GET", "/v1/status", "", with("Authorization", "Basic "+testToken), 401, CodeUnauthorized, "", false},
		{"token with a suffix", "GET", "/v1/peers", "", with("Authorization", tok+"x"), 401, CodeUnauthorized, "", false},
		{"delete without token", "DELETE", "/v1/peers/" + urlKey(owned), "", map[string]string{}, 401, CodeUnauthorized, "", false},
		{"unknown path without token", "GET", "/v1/secret", "", map[string]string{}, 401, CodeUnauthorized, "", false},
		{"text/plain body", "POST", "/v1/peers", create(""), with("Content-Type", "text/plain"), 415, CodeUnsupportedMediaType, "", false},
		{"no content type", "POST", "/v1/peers", create(""), with(), 415, CodeUnsupportedMediaType, "", false},
		{"form body", "POST", "/v1/peers", "user_id=a&profile_id=staff", with("Content-Type", "application/x-www-form-urlencoded"), 415, CodeUnsupportedMediaType, "", false},
		{"latin-1 charset", "POST", "/v1/peers", create(""), with("Content-Type", "application/json; charset=iso-8859-1"), 415, CodeUnsupportedMediaType, "", false},
		{"huge body", "POST", "/v1/peers", create(`,"display_name":"` + strings.Repeat("x", MaxBodyBytes) + `"`), jsonCT, 413, CodeBodyTooLarge, "", false},
		{"empty body", "POST", "/v1/peers", "", jsonCT, 400, CodeInvalidRequest, "body", false},
		{"broken JSON", "POST", "/v1/peers", `{"user_id":`, jsonCT, 400, CodeInvalidRequest, "body", false},
		{"array body", "POST", "/v1/peers", `[]`, jsonCT, 400, CodeInvalidRequest, "body", false},
		{"trailing data", "POST", "/v1/peers", create("") + `{}`, jsonCT, 400, CodeInvalidRequest, "body", false},
		{"unknown field", "POST", "/v1/peers", create(`,"admin":true`), jsonCT, 400, CodeInvalidRequest, "admin", false},
		{"user_id a number", "POST", "/v1/peers", `{"user_id":5,"profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id missing", "POST", "/v1/peers", `{"profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id empty", "POST", "/v1/peers", `{"user_id":"","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id with NUL", "POST", "/v1/peers", `{"user_id":"a\u0000b","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id with newline", "POST", "/v1/peers", `{"user_id":"a\nb","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id too long", "POST", "/v1/peers", `{"user_id":"` + strings.Repeat("u", 257) + `","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id twice", "POST", "/v1/peers", `{"user_id":"newuser","user_id":"other","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id twice, other case", "POST", "/v1/peers", `{"user_id":"newuser","profile_id":"staff","USER_ID":"other"}`, jsonCT, 400, CodeInvalidRequest, "USER_ID", false},
		{"user_id twice, one folded", "POST", "/v1/peers", `{"user_id":"newuser","profile_id":"staff","u\u017fer_id":"other"}`, jsonCT, 400, CodeInvalidRequest, "uſer_id", false},
		{"user_id lone high surrogate", "POST", "/v1/peers", `{"user_id":"\ud800","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id lone low surrogate", "POST", "/v1/peers", `{"user_id":"a\udc00b","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id high surrogate then a letter", "POST", "/v1/peers", `{"user_id":"\uD83D\u0041","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"display_name lone surrogate", "POST", "/v1/peers", create(`,"display_name":"x\udfff"`), jsonCT, 400, CodeInvalidRequest, "display_name", false},
		{"key with a lone surrogate", "POST", "/v1/peers", create(`,"\ud800":1`), jsonCT, 400, CodeInvalidRequest, "body", false},
		{"user_id not UTF-8", "POST", "/v1/peers", "{\"user_id\":\"a\xffb\",\"profile_id\":\"staff\"}", jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id an encoded surrogate", "POST", "/v1/peers", "{\"user_id\":\"a\xed\xa0\x80\",\"profile_id\":\"staff\"}", jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id only spaces", "POST", "/v1/peers", `{"user_id":"   ","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id only wide spaces", "POST", "/v1/peers", `{"user_id":"\u00a0\u3000\u200b","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id with RLO", "POST", "/v1/peers", `{"user_id":"admin\u202egpj.exe","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id with LRE", "POST", "/v1/peers", "{\"user_id\":\"a\u202ab\",\"profile_id\":\"staff\"}", jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id with an isolate", "POST", "/v1/peers", `{"user_id":"\u2066alice\u2069","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id with a line separator", "POST", "/v1/peers", `{"user_id":"a\u2028b","profile_id":"staff"}`, jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"user_id with a paragraph separator", "POST", "/v1/peers", "{\"user_id\":\"a\u2029b\",\"profile_id\":\"staff\"}", jsonCT, 400, CodeInvalidRequest, "user_id", false},
		{"profile_id missing", "POST", "/v1/peers", `{"user_id":"newuser"}`, jsonCT, 400, CodeInvalidRequest, "profile_id", false},
		{"unknown profile", "POST", "/v1/peers", `{"user_id":"newuser","profile_id":"nope"}`, jsonCT, 400, CodeInvalidRequest, "profile_id", false},
		{"key not base64", "POST", "/v1/peers", create(`,"public_key":"not a key"`), jsonCT, 400, CodeInvalidRequest, "public_key", false},
		{"key of 31 bytes", "POST", "/v1/peers", create(`,"public_key":"` + short + `"`), jsonCT, 400, CodeInvalidRequest, "public_key", false},
		{"all-zero key", "POST", "/v1/peers", create(`,"public_key":"` + zero + `"`), jsonCT, 400, CodeInvalidRequest, "public_key", false},
		{"server's own key", "POST", "/v1/peers", create(`,"public_key":"` + h.srv.PublicKey.String() + `"`), jsonCT, 400, CodeInvalidRequest, "public_key", false},
		{"key of another user", "POST", "/v1/peers", create(`,"public_key":"` + owned.String() + `"`), jsonCT, 409, CodeConflict, "", false},
		{"key a number", "POST", "/v1/peers", create(`,"public_key":42`), jsonCT, 400, CodeInvalidRequest, "public_key", false},
		{"expiry in the past", "POST", "/v1/peers", create(`,"expires_at":"` + past + `"`), jsonCT, 400, CodeInvalidRequest, "expires_at", false},
		{"expiry not RFC 3339", "POST", "/v1/peers", create(`,"expires_at":"tomorrow"`), jsonCT, 400, CodeInvalidRequest, "expires_at", false},
		{"expiry beyond max_expiry", "POST", "/v1/peers", create(`,"expires_at":"` + tooLate + `"`), jsonCT, 400, CodeInvalidRequest, "expires_at", false},
		{"expiry year 0001", "POST", "/v1/peers", create(`,"expires_at":"0001-01-01T00:00:00Z"`), jsonCT, 400, CodeInvalidRequest, "expires_at", false},
		{"expiry year 9999", "POST", "/v1/peers", create(`,"expires_at":"9999-01-01T00:00:00Z"`), jsonCT, 400, CodeInvalidRequest, "expires_at", false},
		{"negative lifetime", "POST", "/v1/peers", create(`,"expires_in":"-1h"`), jsonCT, 400, CodeInvalidRequest, "expires_in", false},
		{"zero lifetime", "POST", "/v1/peers", create(`,"expires_in":"0"`), jsonCT, 400, CodeInvalidRequest, "expires_in", false},
		{"lifetime not a duration", "POST", "/v1/peers", create(`,"expires_in":"banana"`), jsonCT, 400, CodeInvalidRequest, "expires_in", false},
		{"lifetime a number", "POST", "/v1/peers", create(`,"expires_in":3600`), jsonCT, 400, CodeInvalidRequest, "expires_in", false},
		{"lifetime beyond max_expiry", "POST", "/v1/peers", create(`,"expires_in":"400d"`), jsonCT, 400, CodeInvalidRequest, "expires_in", false},
		{"expires_at and expires_in", "POST", "/v1/peers", create(`,"expires_in":"1d","expires_at":"` + h.clock.Now().Add(time.Hour).Format(time.RFC3339) + `"`), jsonCT, 400, CodeInvalidRequest, "expires_in", false},
		{"originating_ip invalid", "POST", "/v1/peers", create(`,"originating_ip":"300.1.1.1"`), jsonCT, 400, CodeInvalidRequest, "originating_ip", false},
		{"originating_ip with zone", "POST", "/v1/peers", create(`,"originating_ip":"fe80::1%eth0"`), jsonCT, 400, CodeInvalidRequest, "originating_ip", false},
		{"display_name with control", "POST", "/v1/peers", create(`,"display_name":"a\u0007b"`), jsonCT, 400, CodeInvalidRequest, "display_name", false},
		{"display_name too long", "POST", "/v1/peers", create(`,"display_name":"` + strings.Repeat("n", 300) + `"`), jsonCT, 400, CodeInvalidRequest, "display_name", false},
		{"display_name an object", "POST", "/v1/peers", create(`,"display_name":{}`), jsonCT, 400, CodeInvalidRequest, "display_name", false},
		{"per-user limit", "POST", "/v1/peers", `{"user_id":"full","profile_id":"staff"}`, jsonCT, 409, CodeLimitReached, "", false},
		{"pool exhausted", "POST", "/v1/peers", `{"user_id":"other","profile_id":"tiny"}`, jsonCT, 409, CodePoolExhausted, "", false},
		{"script says no", "POST", "/v1/peers", `{"user_id":"reject1","profile_id":"staff"}`, jsonCT, 403, CodeRejectedByScript, "", true},
		{"script says no at length", "POST", "/v1/peers", `{"user_id":"loud1","profile_id":"staff"}`, jsonCT, 403, CodeRejectedByScript, "", true},
		{"device missing", "POST", "/v1/peers", `{"user_id":"newuser","profile_id":"ghost"}`, jsonCT, 503, CodeDeviceUnavailable, "", false},
		{"key path not a key", "GET", "/v1/peers/notakey", "", with(), 400, CodeInvalidRequest, "public_key", false},
		{"key path unknown", "GET", "/v1/peers/" + urlKey(unknown), "", with(), 404, CodeNotFound, "", false},
		{"delete unknown key", "DELETE", "/v1/peers/" + urlKey(unknown), "", with(), 404, CodeNotFound, "", false},
		{"delete bad key", "DELETE", "/v1/peers/" + strings.Repeat("A", 43), "", with(), 400, CodeInvalidRequest, "public_key", false},
		{"key with an unescaped slash", "GET", "/v1/peers/abc/def", "", with(), 404, CodeNotFound, "", false},
		{"PUT on peers", "PUT", "/v1/peers", create(""), jsonCT, 405, CodeMethodNotAllowed, "", false},
		{"PUT on a peer", "PUT", "/v1/peers/" + urlKey(owned), create(""), jsonCT, 405, CodeMethodNotAllowed, "", false},
		{"POST on status", "POST", "/v1/status", "", with(), 405, CodeMethodNotAllowed, "", false},
		{"GET on housekeeping", "GET", "/v1/housekeeping", "", with(), 405, CodeMethodNotAllowed, "", false},
		{"unknown endpoint", "GET", "/v1/nothing", "", with(), 404, CodeNotFound, "", false},
		{"revoke user with NUL", "DELETE", "/v1/users/a%00b/peers", "", with(), 400, CodeInvalidRequest, "user_id", false},
		{"revoke user with newline", "DELETE", "/v1/users/a%0Ab/peers", "", with(), 400, CodeInvalidRequest, "user_id", false},
		{"revoke user with PDF", "DELETE", "/v1/users/a%E2%80%ACb/peers", "", with(), 400, CodeInvalidRequest, "user_id", false},
		{"revoke user of spaces", "DELETE", "/v1/users/%20%20/peers", "", with(), 400, CodeInvalidRequest, "user_id", false},
		{"list peers of a user with a separator", "GET", "/v1/peers?user_id=a%E2%80%A8b", "", with(), 400, CodeInvalidRequest, "user_id", false},
		{"events of a user with an isolate", "GET", "/v1/events?user_id=%E2%81%A7x", "", with(), 400, CodeInvalidRequest, "user_id", false},
		{"events bad status", "GET", "/v1/events?status=bogus", "", with(), 400, CodeInvalidRequest, "status", false},
		{"log without ip or user", "GET", "/v1/log", "", with(), 400, CodeInvalidRequest, "ip", false},
		{"log with ip and user", "GET", "/v1/log?ip=10.0.0.1&user_id=a", "", with(), 400, CodeInvalidRequest, "ip", false},
		{"log bad ip", "GET", "/v1/log?ip=10.0.0.300", "", with(), 400, CodeInvalidRequest, "ip", false},
		{"log bad at", "GET", "/v1/log?ip=10.0.0.1&at=yesterday", "", with(), 400, CodeInvalidRequest, "at", false},
		{"log at without ip", "GET", "/v1/log?user_id=a&at=2026-01-01T00:00:00Z", "", with(), 400, CodeInvalidRequest, "at", false},
		{"events limit 0", "GET", "/v1/events?limit=0", "", with(), 400, CodeInvalidRequest, "limit", false},
		{"events limit not a number", "GET", "/v1/events?limit=abc", "", with(), 400, CodeInvalidRequest, "limit", false},
		{"events unknown parameter", "GET", "/v1/events?stauts=failed", "", with(), 400, CodeInvalidRequest, "stauts", false},
		{"events bad key", "GET", "/v1/events?public_key=xyz", "", with(), 400, CodeInvalidRequest, "public_key", false},
		{"peers bad state", "GET", "/v1/peers?state=deleted", "", with(), 400, CodeInvalidRequest, "state", false},
		{"peers repeated parameter", "GET", "/v1/peers?user_id=a&user_id=b", "", with(), 400, CodeInvalidRequest, "user_id", false},
		{"retry id not a number", "POST", "/v1/events/abc/retry", "", with(), 400, CodeInvalidRequest, "id", false},
		{"retry unknown event", "POST", "/v1/events/999999/retry", "", with(), 404, CodeNotFound, "", false},
		{"retry an event that is not failed", "POST", fmt.Sprintf("/v1/events/%d/retry", doneC), "", with(), 409, CodeConflict, "", false},
		{"housekeeping wait a string", "POST", "/v1/housekeeping", `{"wait":"yes"}`, jsonCT, 400, CodeInvalidRequest, "wait", false},
		{"housekeeping unknown field", "POST", "/v1/housekeeping", `{"force":true}`, jsonCT, 400, CodeInvalidRequest, "force", false},
		{"housekeeping wait twice", "POST", "/v1/housekeeping", `{"wait":false,"wait":true}`, jsonCT, 400, CodeInvalidRequest, "wait", false},
		{"housekeeping text body", "POST", "/v1/housekeeping", `wait`, with("Content-Type", "text/plain"), 415, CodeUnsupportedMediaType, "", false},
		{"plan with a device missing", "GET", "/v1/plan", "", with(), 503, CodeDeviceUnavailable, "", false},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.snapshot()
			var body any
			if c.body != "" {
				body = []byte(c.body)
			}
			headers := map[string]string{"Authorization": "", "Content-Type": ""}
			for k, v := range c.headers {
				headers[k] = v
			}
			r := h.doWith(c.method, c.path, body, headers)
			if r.status != c.status || r.errCode() != c.code {
				t.Fatalf("%s %s: got %d %s, want %d %s", c.method, c.path, r.status, r.body, c.status, c.code)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			t.Logf("%d %s", r.status, r.body)
			var e errorBody
			r.json(t, &e)
			if e.Error.Message == "" {
				t.Error("empty message")
			}
			if c.field != "" && (e.Error.Field != c.field || !strings.Contains(e.Error.Message, c.field)) {
				t.Errorf("field %q, message %q; want field %q named in the message", e.Error.Field, e.Error.Message, c.field)
			}
			switch c.status {
			case 401:
				if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="wgkeeper"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
			case 405:
				if r.header.Get("Allow") == "" {
					t.Error("no Allow header")
				}
			case 403:
				if e.Error.ExitStatus == nil || *e.Error.ExitStatus != 7 || !strings.Contains(e.Error.Message, "exit status 7") {
					t.Errorf("rejection: %s", r.body)
				}
				// The script's last stderr line, cut at 1 KiB and marked.
				want := "user is blocked"
				if strings.HasPrefix(c.body, `{"user_id":"loud`) {
					want = strings.Repeat("x", hooks.MaxLineLen) + " …[cut: "
				}
				if !strings.Contains(e.Error.Message, want) || len(e.Error.Message) > hooks.MaxLineLen+100 {
					t.Errorf("rejection message of %d bytes: %.100q", len(e.Error.Message), e.Error.Message)
				}
			}
			after := h.snapshot()
			if c.runs {
				if after.runs != before.runs+1 {
					t.Errorf("script runs %d -> %d, want one more", before.runs, after.runs)
				}
				after.runs = before.runs
			}
			if !before.equal(after) {
				t.Fatalf("state changed:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
	t.Logf("%d bad requests", len(cases))
}
