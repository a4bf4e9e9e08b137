package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"
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

// decodeStrict decodes one JSON object into v: unknown fields, wrong types
// and anything after the object are errors (*Error, invalid_request).
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badField("body", "a JSON object is required")
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
