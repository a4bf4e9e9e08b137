package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
)

// patchBody is the JSON body of PATCH /v1/peers/{public_key}. The fields
// are raw so that null can be told from absent.
type patchBody struct {
	ExpiresAt json.RawMessage `json:"expires_at"`
	ExpiresIn json.RawMessage `json:"expires_in"`
}

// DecodeExpiry parses and validates the body of PATCH
// /v1/peers/{public_key}: a JSON object with exactly one of expires_at (an
// RFC 3339 time) and expires_in (a duration such as "30d"; "0" means
// never, as in the config). null is refused rather than guessed at (it
// could mean "never" or "unchanged"). Unknown fields, wrong types and bad
// values are errors; the error is an *Error with code invalid_request
// naming the field. Whether the new expiry fits the profile is checked by
// the engine.
func DecodeExpiry(body []byte) (reconcile.ExpiryChange, error) {
	var b patchBody
	var c reconcile.ExpiryChange
	if err := decodeStrict(body, &b); err != nil {
		return c, err
	}
	at, err := rawString("expires_at", b.ExpiresAt)
	if err != nil {
		return c, err
	}
	in, err := rawString("expires_in", b.ExpiresIn)
	if err != nil {
		return c, err
	}
	switch {
	case at != nil && in != nil:
		return c, badField("expires_in", "give expires_at or expires_in, not both")
	case at == nil && in == nil:
		return c, badField("body", "give the new expiry: expires_at (RFC 3339) or expires_in (such as \"30d\"; \"0\" = never)")
	case at != nil:
		t, err := time.Parse(time.RFC3339Nano, *at)
		if err != nil {
			return c, badField("expires_at", "%q is not an RFC 3339 time such as 2030-01-02T15:04:05Z", *at)
		}
		t = t.UTC()
		if !t.Before(maxExpiresAt) {
			return c, badField("expires_at", "%s is too far in the future (the limit is %s)", t.Format(time.RFC3339), maxExpiresAt.Format(time.RFC3339))
		}
		if t.IsZero() {
			return c, badField("expires_at", "%s is not in the future", t.Format(time.RFC3339))
		}
		c.ExpiresAt = t
	default:
		d, err := config.ParseDuration(*in)
		if err != nil {
			return c, badField("expires_in", "%v", err)
		}
		switch {
		case d < 0:
			return c, badField("expires_in", "must not be negative")
		case d == 0:
			c.Never = true
		case d > maxExpiresIn:
			return c, badField("expires_in", "%s is longer than the limit of %s", *in, config.FormatDuration(maxExpiresIn))
		default:
			c.ExpiresIn = d
		}
	}
	return c, nil
}

// rawString reads an optional string field: nil when absent, an error for
// null or another type.
func rawString(field string, raw json.RawMessage) (*string, error) {
	if raw == nil {
		return nil, nil
	}
	if string(raw) == "null" {
		return nil, badField(field, "null is not a value here; leave the field out, or give \"expires_in\": \"0\" for never")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, badField(field, "must be a string")
	}
	return &s, nil
}

// patchPeer: PATCH /v1/peers/{public_key} — a new expiry; no script runs.
func (s *Server) patchPeer(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	k, err := peerKey(r)
	if err != nil {
		return err
	}
	if e := checkJSONType(r); e != nil {
		return e
	}
	body, e := readBody(r)
	if e != nil {
		return e
	}
	c, err := DecodeExpiry(body)
	if err != nil {
		return err
	}
	p, err := s.eng.SetExpiry(r.Context(), k, c)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return apiErr(CodeNotFound, "no config has the public key %s", k)
	case errors.Is(err, reconcile.ErrInProgress):
		return apiErr(CodeInProgress, "the config %s is still being created (its connect script runs); try again when it is done", k)
	case errors.Is(err, reconcile.ErrExpired):
		return apiErr(CodeConflict, "the config %s has expired and is being removed; create a new one", k)
	case err != nil:
		return err
	}
	one := []PeerJSON{peerOut(p)}
	errs := s.addLive(r.Context(), []store.Peer{p}, one)
	writeJSON(w, http.StatusOK, PeerResponse{Peer: one[0], DeviceError: errs[p.Interface]})
	return nil
}
