package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/reconcile"
)

// MaxBodyBytes bounds a request body; a longer one gets 413 body_too_large.
const MaxBodyBytes = 64 << 10

// Limits on what a create may ask for, beyond the profile's own: the store
// keeps times as int64 nanoseconds (until 2262), so a lifetime stays well
// inside that.
var (
	maxExpiresAt = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
	maxExpiresIn = 100 * 365 * config.Day
)

// createBody is the JSON body of POST /v1/peers.
type createBody struct {
	UserID        *string `json:"user_id"`
	ProfileID     *string `json:"profile_id"`
	PublicKey     *string `json:"public_key"`
	DisplayName   *string `json:"display_name"`
	ExpiresAt     *string `json:"expires_at"`
	ExpiresIn     *string `json:"expires_in"`
	OriginatingIP *string `json:"originating_ip"`
}

// DecodeCreate parses and validates the body of POST /v1/peers: a JSON
// object with user_id and profile_id (required), and public_key (standard
// base64 or base64url), display_name, expires_at (RFC 3339) or expires_in
// (a duration such as "90d" or "12h"), originating_ip (optional). Unknown
// fields, duplicate objects, trailing data, wrong types and bad values are
// errors; the error is an *Error with code invalid_request naming the field
// ("body" for the body as a whole). Whether the profile exists and the
// expiry fits it is checked by the engine.
func DecodeCreate(body []byte) (reconcile.CreateRequest, error) {
	var b createBody
	if err := decodeStrict(body, &b); err != nil {
		return reconcile.CreateRequest{}, err
	}
	var req reconcile.CreateRequest
	if b.UserID == nil {
		return req, badField("user_id", "is required")
	}
	if err := reconcile.ValidateUserID(*b.UserID); err != nil {
		return req, asAPI(err)
	}
	req.UserID = *b.UserID
	if b.ProfileID == nil || *b.ProfileID == "" {
		return req, badField("profile_id", "is required")
	}
	if len(*b.ProfileID) > 256 {
		return req, badField("profile_id", "is %d bytes long; no profile id is longer than 256", len(*b.ProfileID))
	}
	req.ProfileID = *b.ProfileID
	if b.PublicKey != nil {
		k, err := ParseKeyParam(*b.PublicKey)
		if err != nil {
			return req, err
		}
		req.PublicKey = &k
	}
	if b.DisplayName != nil {
		req.DisplayName = *b.DisplayName
	}
	if b.ExpiresAt != nil && b.ExpiresIn != nil {
		return req, badField("expires_in", "give expires_at or expires_in, not both")
	}
	if b.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *b.ExpiresAt)
		if err != nil {
			return req, badField("expires_at", "%q is not an RFC 3339 time such as 2030-01-02T15:04:05Z", *b.ExpiresAt)
		}
		t = t.UTC()
		if !t.Before(maxExpiresAt) {
			return req, badField("expires_at", "%s is too far in the future (the limit is %s)", t.Format(time.RFC3339), maxExpiresAt.Format(time.RFC3339))
		}
		if t.IsZero() { // the engine reads a zero time as "the default"
			return req, badField("expires_at", "%s is not in the future", t.Format(time.RFC3339))
		}
		req.ExpiresAt = t
	}
	if b.ExpiresIn != nil {
		d, err := config.ParseDuration(*b.ExpiresIn)
		if err != nil {
			return req, badField("expires_in", "%v", err)
		}
		if d <= 0 {
			return req, badField("expires_in", "must be positive (leave it out for the profile's default lifetime)")
		}
		if d > maxExpiresIn {
			return req, badField("expires_in", "%s is longer than the limit of %s", *b.ExpiresIn, config.FormatDuration(maxExpiresIn))
		}
		req.ExpiresIn = d
	}
	if b.OriginatingIP != nil {
		a, err := netip.ParseAddr(*b.OriginatingIP)
		if err != nil {
			return req, badField("originating_ip", "%q is not an IP address", *b.OriginatingIP)
		}
		if a.Zone() != "" {
			return req, badField("originating_ip", "%q carries a zone; give the address alone", *b.OriginatingIP)
		}
		req.OriginatingIP = a.Unmap()
	}
	return req, nil
}

// decodeStrict decodes one JSON object into v: unknown fields, wrong types,
// anything after the object, a key given twice, lone surrogate escapes and
// bytes that are not UTF-8 are errors (*Error, invalid_request).
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badField("body", "a JSON object is required")
	}
	// First what the decoder would let through silently (and name
	// wrongly: a key with a lone surrogate would be "unknown field \ufffd").
	if e := checkJSONText(body); e != nil {
		return e
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badField("body", "unexpected data after the JSON object")
	}
	return nil
}

// checkJSONText refuses what encoding/json lets through silently: a key
// given twice in one object (the last would win; keys that differ only in
// case count as one, as the decoder matches them so), a \u escape of a
// lone UTF-16 surrogate, and bytes that are not UTF-8 (both would become
// U+FFFD). The error names the top-level field the problem is in, or
// "body". It scans any input without failing on bad syntax, which the
// decoder reports.
func checkJSONText(body []byte) *Error {
	type frame struct {
		keys   map[string]bool // objects: the keys seen, case-folded
		object bool
		key    string // objects: the key whose value is being read
	}
	var stack []frame
	field := func() string {
		// Name a field only at the top level, where it is one of ours.
		if len(stack) == 1 && stack[0].object && stack[0].key != "" && safeName(stack[0].key) {
			return stack[0].key
		}
		return "body"
	}
	expectKey := false
	for i := 0; i < len(body); {
		c := body[i]
		switch c {
		case ' ', '\t', '\n', '\r', ':':
			i++
		case '{', '[':
			stack = append(stack, frame{object: c == '{', keys: map[string]bool{}})
			expectKey = c == '{'
			i++
		case '}', ']':
			if len(stack) == 0 {
				return badField("body", "invalid JSON at byte %d", i)
			}
			stack = stack[:len(stack)-1]
			expectKey = false
			i++
		case ',':
			expectKey = len(stack) > 0 && stack[len(stack)-1].object
			i++
		case '"':
			s, n, msg := jsonString(body[i:])
			if msg != "" {
				if expectKey {
					return badField("body", "a key %s", msg)
				}
				f := field()
				return badField(f, "%s (at byte %d)", msg, i)
			}
			if expectKey {
				top := &stack[len(stack)-1]
				k := foldKey(s)
				if top.keys[k] {
					if len(stack) == 1 && safeName(s) {
						return badField(s, "is given twice; send each field once")
					}
					return badField("body", "the key %q is given twice in one object", s)
				}
				top.keys[k] = true
				top.key = s
				expectKey = false
			}
			i += n
		default: // a number, true, false or null
			for i < len(body) && !strings.ContainsRune(" \t\n\r,:]}", rune(body[i])) {
				i++
			}
		}
	}
	return nil
}

// jsonString reads the JSON string at the start of b (b[0] == '"'): its
// value, its length in bytes, and a description of what is wrong with it
// ("" when nothing): a lone surrogate escape or bytes that are not UTF-8.
func jsonString(b []byte) (string, int, string) {
	var out strings.Builder
	for i := 1; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			return out.String(), i + 1, ""
		case c == '\\':
			if i+1 >= len(b) {
				return "", 0, "is not a complete JSON string"
			}
			if b[i+1] != 'u' {
				out.WriteByte(unescape(b[i+1]))
				i += 2
				continue
			}
			r, ok := hex4(b[i+2:])
			if !ok {
				return "", 0, "has a bad \\u escape"
			}
			i += 6
			switch {
			case utf16.IsSurrogate(r) && r < 0xDC00:
				lo, ok := rune(0), i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u'
				if ok {
					lo, ok = hex4(b[i+2:])
				}
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return "", 0, fmt.Sprintf("contains the lone UTF-16 surrogate \\u%04x; escape a character beyond U+FFFF as a surrogate pair, or send it as UTF-8", r)
				}
				out.WriteRune(utf16.DecodeRune(r, lo))
				i += 6
			case utf16.IsSurrogate(r):
				return "", 0, fmt.Sprintf("contains the lone UTF-16 surrogate \\u%04x; escape a character beyond U+FFFF as a surrogate pair, or send it as UTF-8", r)
			default:
				out.WriteRune(r)
			}
		case c < utf8.RuneSelf:
			out.WriteByte(c)
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return "", 0, "is not valid UTF-8"
			}
			out.WriteRune(r)
			i += n
		}
	}
	return "", 0, "is not a complete JSON string"
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

func unescape(c byte) byte {
	switch c {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return c // '"', '\\', '/'
}

// foldKey maps every character of s to the smallest of its simple case
// folds, so two keys encoding/json would match to one field map to one
// string.
func foldKey(s string) string {
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return least
	}, s)
}

// safeName reports whether a key can be echoed as a field name.
func safeName(s string) bool {
	return s != "" && len(s) <= 64 && utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

// jsonError turns a decoding error into a message naming the field.
func jsonError(err error) *Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badField("body", "must be a JSON object, not %s", typ.Value)
		}
		return badField(typ.Field, "must be %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.As(err, &syn):
		return badField("body", "invalid JSON at byte %d: %v", syn.Offset, syn)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badField("body", "the JSON object is incomplete")
	}
	msg := err.Error()
	if i := strings.Index(msg, "unknown field "); i >= 0 {
		name := strings.Trim(msg[i+len("unknown field "):], `"`)
		if name == "" || !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) || len(name) > 64 {
			return badField("body", "unknown field %q", name)
		}
		return badField(name, "unknown field (the fields are listed in the API reference)")
	}
	return badField("body", "invalid JSON: %s", strings.TrimPrefix(msg, "json: "))
}

func jsonKind(k string) string {
	switch k {
	case "ptr", "string":
		return "a string"
	case "bool":
		return "true or false"
	case "struct", "map":
		return "an object"
	}
	return "a " + k
}

// ParseKeyParam parses a public key given in a request: standard base64 (as
// wg(8) prints it) or base64url, 44 characters for 32 bytes, not all zero.
// The error is an *Error with code invalid_request and field public_key.
func ParseKeyParam(s string) (wgtypes.Key, error) {
	k, err := reconcile.ParseKey(s)
	if err != nil {
		return wgtypes.Key{}, asAPI(err)
	}
	return k, nil
}

// readBody reads a request body of at most MaxBodyBytes whose Content-Type
// is application/json. A request without a body gives nil, nil.
func readBody(r *http.Request) ([]byte, *Error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, apiErr(CodeBodyTooLarge, "the request body is %d bytes; the limit is %d", r.ContentLength, MaxBodyBytes)
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if e := checkJSONType(r); e != nil {
		return nil, e
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, badField("body", "could not be read: %v", err)
	}
	if len(b) > MaxBodyBytes {
		return nil, apiErr(CodeBodyTooLarge, "the request body is longer than the limit of %d bytes", MaxBodyBytes)
	}
	return b, nil
}

func checkJSONType(r *http.Request) *Error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return apiErr(CodeUnsupportedMediaType, "Content-Type is missing; send the body as application/json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return apiErr(CodeUnsupportedMediaType, "Content-Type %q is not supported; send the body as application/json", ct)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return apiErr(CodeUnsupportedMediaType, "charset %q is not supported; send UTF-8", cs)
	}
	return nil
}
