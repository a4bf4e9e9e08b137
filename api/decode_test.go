package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/reconcile"
)

func TestDecodeCreate(t *testing.T) {
	k, _ := wgtypes.GeneratePrivateKey()
	pub := k.PublicKey()
	req, err := DecodeCreate([]byte(`{"user_id":"ü@example.org","profile_id":"staff","public_key":"` +
		base64.URLEncoding.EncodeToString(pub[:]) + `","display_name":"Laptop","expires_in":"1d12h","originating_ip":"::ffff:192.0.2.1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.UserID != "ü@example.org" || req.ProfileID != "staff" || req.PublicKey == nil || *req.PublicKey != pub ||
		req.DisplayName != "Laptop" || req.ExpiresIn.Hours() != 36 || req.OriginatingIP.String() != "192.0.2.1" {
		t.Fatalf("%+v", req)
	}
	// A character beyond U+FFFF as a surrogate pair, a space inside the
	// user id, and a key in another case are fine.
	req, err = DecodeCreate([]byte(`{"user_id":"alice smith \ud83d\ude00","Profile_ID":"staff","display_name":"\uD83D\uDE00"}`))
	if err != nil || req.UserID != "alice smith 😀" || req.DisplayName != "😀" || req.ProfileID != "staff" {
		t.Fatalf("%+v %v", req, err)
	}
	req, err = DecodeCreate([]byte(" {\"user_id\":\"u\",\"profile_id\":\"p\",\"expires_at\":\"2030-01-02T03:04:05+02:00\"}\n"))
	if err != nil || req.ExpiresAt.Format("2006-01-02T15:04:05Z07:00") != "2030-01-02T01:04:05Z" || req.PublicKey != nil {
		t.Fatalf("%+v %v", req, err)
	}
}

// FuzzDecodeCreate: any body either decodes into a request that passes the
// engine's own checks, or gives an invalid_request error naming a field.
// Never a panic.
func FuzzDecodeCreate(f *testing.F) {
	for _, s := range []string{
		`{"user_id":"u","profile_id":"p"}`,
		`{"user_id":"u","profile_id":"p","public_key":"bvJKHKAGpFFbCCNHCkCiJUG/sg6RL7C/WvTZlX1Fp0E="}`,
		`{"user_id":"u","profile_id":"p","public_key":"bvJKHKAGpFFbCCNHCkCiJUG_sg6RL7C_WvTZlX1Fp0E="}`,
		`{"user_id":"u","profile_id":"p","expires_at":"2030-01-01T00:00:00Z","originating_ip":"10.0.0.1"}`,
		`{"user_id":"u","profile_id":"p","expires_in":"90d","display_name":"x"}`,
		`{"user_id":"\u0000","profile_id":"p"}`,
		`{"user_id":"u","profile_id":"p"} {}`,
		`{"user_id":"u","profile_id":"p","x":1}`,
		`[1,2]`, `null`, `"s"`, `{`, ``, `{"user_id":{"a":1}}`,
		`{"user_id":"u","user_id":"v","profile_id":"p"}`,
		`{"user_id":"\ud800","profile_id":"p"}`, `{"user_id":" \u2028","profile_id":"p"}`,
		`{"user_id":"a\u202eb","profile_id":"p"}`, "{\"user_id\":\"\xff\",\"profile_id\":\"p\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeCreate(body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalidRequest || e.Field == "" || e.Message == "" {
				t.Fatalf("error %#v is not an invalid_request naming a field", err)
			}
			return
		}
		if reconcile.ValidateUserID(req.UserID) != nil || req.ProfileID == "" {
			t.Fatalf("accepted %+v", req)
		}
		spelt := bytes.Contains(body, []byte("\uFFFD")) || bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`))
		if !spelt && strings.ContainsRune(req.UserID+req.DisplayName+req.ProfileID, utf8.RuneError) {
			t.Fatalf("accepted %q as %+v: a character was replaced", body, req)
		}
		if req.PublicKey != nil && *req.PublicKey == (wgtypes.Key{}) {
			t.Fatal("accepted the zero key")
		}
		if !req.ExpiresAt.IsZero() && req.ExpiresIn != 0 {
			t.Fatal("accepted both expiries")
		}
		if req.ExpiresIn < 0 || req.ExpiresIn > maxExpiresIn || req.ExpiresAt.After(maxExpiresAt) {
			t.Fatalf("accepted expiry %v %v", req.ExpiresAt, req.ExpiresIn)
		}
		if req.OriginatingIP.IsValid() && (req.OriginatingIP.Zone() != "" || req.OriginatingIP.Is4In6()) {
			t.Fatalf("accepted originating ip %v", req.OriginatingIP)
		}
	})
}

// FuzzKeyParam: the {public_key} path parameter as the router hands it over
// after unescaping. A key that parses round-trips through both encodings.
func FuzzKeyParam(f *testing.F) {
	for _, s := range []string{
		"bvJKHKAGpFFbCCNHCkCiJUG/sg6RL7C/WvTZlX1Fp0E=", "bvJKHKAGpFFbCCNHCkCiJUG_sg6RL7C_WvTZlX1Fp0E=",
		"bvJKHKAGpFFbCCNHCkCiJUG_sg6RL7C_WvTZlX1Fp0E", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"", "=", "bvJKHKAGpFFbCCNHCkCiJUG/sg6RL7C-WvTZlX1Fp0E=", "\x00", strings.Repeat("A", 44),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKeyParam(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalidRequest || e.Field != "public_key" {
				t.Fatalf("error %#v", err)
			}
			if !utf8.ValidString(e.Message) && utf8.ValidString(s) {
				t.Fatalf("message %q", e.Message)
			}
			return
		}
		if k == (wgtypes.Key{}) {
			t.Fatal("zero key accepted")
		}
		for _, enc := range []string{k.String(), base64.URLEncoding.EncodeToString(k[:])} {
			k2, err := ParseKeyParam(enc)
			if err != nil || k2 != k {
				t.Fatalf("%q: round trip through %q gave %v %v", s, enc, k2, err)
			}
		}
		// The router's view: the escaped standard form and the base64url
		// form both reach the handler as one path segment.
		for _, p := range []string{url.PathEscape(k.String()), base64.URLEncoding.EncodeToString(k[:])} {
			mux := http.NewServeMux()
			var got string
			mux.HandleFunc("GET /v1/peers/{public_key}", func(w http.ResponseWriter, r *http.Request) { got = r.PathValue("public_key") })
			mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/peers/"+p, nil))
			if k2, err := ParseKeyParam(got); err != nil || k2 != k {
				t.Fatalf("path %q reached the handler as %q: %v", p, got, err)
			}
		}
	})
}

// FuzzJSONText: checkJSONText never panics, and what it accepts of valid
// JSON is UTF-8, decodes without U+FFFD (unless the body spelt one out),
// and has no key twice in an object, by a reference walk over the
// decoder's own tokens.
func FuzzJSONText(f *testing.F) {
	for _, s := range []string{
		`{"a":"b"}`, `{"a":1,"a":2}`, `{"a":{"b":1,"b":2}}`, `{"a":[{"k":1},{"k":2}]}`,
		`{"a":"\ud800"}`, `{"a":"\udc00"}`, `{"a":"\ud83d\ude00"}`, `{"a":"\ud83d\u0041"}`,
		"{\"a\":\"\xff\"}", `{"A":1,"a":2}`, `{"\u017f":1,"s":2}`, `["\ud800"]`, `"x`, `{"a`, `\`,
		`{"a":"\\ud800"}`, `{"a":"\ufffd"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e := checkJSONText(body)
		if e != nil {
			if e.Code != CodeInvalidRequest || e.Field == "" || !utf8.ValidString(e.Message) {
				t.Fatalf("error %#v", e)
			}
			return
		}
		if !json.Valid(body) {
			return
		}
		if !utf8.Valid(body) {
			t.Fatalf("accepted %q, not UTF-8", body)
		}
		spelt := bytes.Contains(body, []byte("\uFFFD")) || bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`))
		dec := json.NewDecoder(bytes.NewReader(body))
		type obj struct {
			keys   map[string]bool
			object bool
			key    bool
		}
		var stack []obj
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			switch v := tok.(type) {
			case json.Delim:
				switch v {
				case '{', '[':
					if len(stack) > 0 && stack[len(stack)-1].object {
						stack[len(stack)-1].key = true
					}
					stack = append(stack, obj{keys: map[string]bool{}, object: v == '{', key: v == '{'})
				default:
					stack = stack[:len(stack)-1]
					if len(stack) > 0 && stack[len(stack)-1].object {
						stack[len(stack)-1].key = true
					}
				}
				continue
			case string:
				if strings.ContainsRune(v, utf8.RuneError) && !spelt {
					t.Fatalf("accepted %q: decodes to %q", body, v)
				}
				if top := len(stack) - 1; top >= 0 && stack[top].object && stack[top].key {
					k := foldKey(v)
					if stack[top].keys[k] {
						t.Fatalf("accepted %q with the key %q twice", body, v)
					}
					stack[top].keys[k] = true
					stack[top].key = false
					continue
				}
			}
			if top := len(stack) - 1; top >= 0 && stack[top].object {
				stack[top].key = true
			}
		}
	})
}

// routePatterns returns the patterns served, "METHOD /path/{param}", in
// the order they are registered.
func routePatterns() []string {
	out := make([]string, len(routes))
	for i, r := range routes {
		out[i] = r.pattern
	}
	return out
}
