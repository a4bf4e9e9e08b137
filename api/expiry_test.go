package api

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/store"
)

func TestPatchExpiry(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	staff := h.create(map[string]any{"user_id": "alice", "profile_id": "staff", "expires_in": "30d"}, 201)
	tiny := h.create(map[string]any{"user_id": "bob", "profile_id": "tiny"}, 201)
	path := "/v1/peers/" + url.PathEscape(staff.Peer.PublicKey)
	runs := len(h.scriptRuns())
	now := h.clock.Now().UTC()

	// Shorten by expires_in: 200 with the config and its live state.
	r := h.do("PATCH", path, map[string]any{"expires_in": "1h"})
	if r.status != 200 {
		t.Fatalf("PATCH expires_in: %d %s", r.status, r.body)
	}
	var got PeerResponse
	r.json(t, &got)
	if got.Peer.ExpiresAt == nil || !got.Peer.ExpiresAt.Equal(now.Add(time.Hour)) || got.Peer.Live == nil || !got.Peer.Live.OnDevice {
		t.Fatalf("PATCH answer %+v, want expiry %s and live state", got.Peer, now.Add(time.Hour))
	}
	// By expires_at, with an offset.
	at := now.Add(90 * time.Minute).Truncate(time.Second)
	if r := h.do("PATCH", path, `{"expires_at":"`+at.In(time.FixedZone("x", 7200)).Format(time.RFC3339)+`"}`); r.status != 200 {
		t.Fatalf("PATCH expires_at: %d %s", r.status, r.body)
	}
	var one PeerResponse
	h.do("GET", path, nil).json(t, &one)
	if one.Peer.ExpiresAt == nil || !one.Peer.ExpiresAt.Equal(at) {
		t.Fatalf("GET after PATCH: expires_at %v, want %s", one.Peer.ExpiresAt, at)
	}
	if n := len(h.scriptRuns()); n != runs {
		t.Fatalf("%d script runs for expiry changes, want none", n-runs)
	}

	// "0" is never: only where the profile has no max_expiry.
	r = h.do("PATCH", "/v1/peers/"+url.PathEscape(tiny.Peer.PublicKey), map[string]any{"expires_in": "0"})
	r.json(t, &got)
	if r.status != 200 || got.Peer.ExpiresAt != nil {
		t.Fatalf("tiny, never: %d %s", r.status, r.body)
	}

	before := h.snapshot()
	for _, tt := range []struct {
		body   any
		status int
		code   string
		field  string
	}{
		{map[string]any{"expires_in": "0"}, 400, CodeInvalidRequest, "expires_in"},    // staff has max_expiry 365d
		{map[string]any{"expires_in": "366d"}, 400, CodeInvalidRequest, "expires_in"}, // beyond it
		{map[string]any{"expires_at": now.AddDate(1, 0, 2).Format(time.RFC3339)}, 400, CodeInvalidRequest, "expires_at"},
		{map[string]any{"expires_at": now.Add(-time.Minute).Format(time.RFC3339)}, 400, CodeInvalidRequest, "expires_at"},
		{map[string]any{"expires_in": "-1h"}, 400, CodeInvalidRequest, "expires_in"},
		{map[string]any{"expires_in": "soon"}, 400, CodeInvalidRequest, "expires_in"},
		{map[string]any{"expires_at": "tomorrow"}, 400, CodeInvalidRequest, "expires_at"},
		{map[string]any{"expires_in": "1h", "expires_at": now.Add(time.Hour).Format(time.RFC3339)}, 400, CodeInvalidRequest, "expires_in"},
		{`{"expires_at":null}`, 400, CodeInvalidRequest, "expires_at"},
		{`{"expires_in":3600}`, 400, CodeInvalidRequest, "expires_in"},
		{`{}`, 400, CodeInvalidRequest, "body"},
		{`{"expires_in":"1h","user_id":"x"}`, 400, CodeInvalidRequest, "user_id"},
		{`{"expires_in":"1h"} {}`, 400, CodeInvalidRequest, "body"},
	} {
		r := h.do("PATCH", path, tt.body)
		var e errorBody
		r.json(t, &e)
		if r.status != tt.status || e.Error == nil || e.Error.Code != tt.code || e.Error.Field != tt.field {
			t.Errorf("PATCH %v: %d %s; want %d %s on %s", tt.body, r.status, r.body, tt.status, tt.code, tt.field)
		}
	}
	if r := h.doWith("PATCH", path, nil, map[string]string{"Authorization": "Bearer " + testToken}); r.status != 415 {
		t.Errorf("PATCH without a body: %d %s, want 415", r.status, r.body)
	}
	if r := h.do("PATCH", "/v1/peers/"+url.PathEscape(newKey(t).PublicKey().String()), map[string]any{"expires_in": "1h"}); r.status != 404 || r.errCode() != CodeNotFound {
		t.Errorf("PATCH unknown key: %d %s", r.status, r.body)
	}
	if r := h.doWith("PATCH", path, map[string]any{"expires_in": "1h"}, map[string]string{"Authorization": ""}); r.status != 401 {
		t.Errorf("PATCH without the token: %d", r.status)
	}
	if after := h.snapshot(); !after.equal(before) {
		t.Fatalf("refused PATCHes changed something:\nbefore %+v\nafter  %+v", before, after)
	}

	// Once expired, the config is the expiry run's: 409, and it goes with
	// reason expired at its (changed) time.
	h.clock.Advance(91 * time.Minute)
	if r := h.do("PATCH", path, map[string]any{"expires_in": "30d"}); r.status != 409 || r.errCode() != CodeConflict {
		t.Fatalf("PATCH of an expired config: %d %s, want 409 conflict", r.status, r.body)
	}
	rm, err := h.eng.Expire(h.ctx)
	if err != nil || len(rm.Events) != 1 || rm.Events[0].PublicKey.String() != staff.Peer.PublicKey || rm.Events[0].Reason != store.ReasonExpired {
		t.Fatalf("expire: %+v, %v", rm, err)
	}
	h.assertInSync()
}

// FuzzDecodeExpiry: any body gives exactly one kind of change, within the
// limits, or an invalid_request naming a field. Never a panic.
func FuzzDecodeExpiry(f *testing.F) {
	for _, s := range []string{
		`{"expires_in":"30d"}`, `{"expires_in":"0"}`, `{"expires_in":"1d12h"}`, `{"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"expires_at":null}`, `{"expires_in":null,"expires_at":null}`, `{"expires_in":"1h","expires_at":"2030-01-01T00:00:00Z"}`,
		`{"expires_in":1}`, `{}`, `[]`, `null`, ``, `{"expires_in":"-0"}`, `{"expires_at":"0001-01-01T00:00:00Z"}`,
		`{"expires_in":"1h","expires_in":"2h"}`, `{"x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := DecodeExpiry(body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalidRequest || e.Field == "" || e.Message == "" {
				t.Fatalf("error %#v is not an invalid_request naming a field", err)
			}
			return
		}
		n := 0
		if c.Never {
			n++
		}
		if !c.ExpiresAt.IsZero() {
			n++
		}
		if c.ExpiresIn != 0 {
			n++
		}
		if n != 1 {
			t.Fatalf("accepted %+v: want exactly one kind of change", c)
		}
		if c.ExpiresIn < 0 || c.ExpiresIn > maxExpiresIn || !c.ExpiresAt.Before(maxExpiresAt) {
			t.Fatalf("accepted %+v beyond the limits", c)
		}
	})
}
