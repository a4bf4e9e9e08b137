package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
)

// Scope is what a bearer token may do.
type Scope string

// Scopes.
const (
	// ScopeAdmin (api.token_file) may use every endpoint.
	ScopeAdmin Scope = "admin"
	// ScopeRead (api.read_token_file) may use every GET endpoint and
	// /metrics; every other method answers 403 forbidden.
	ScopeRead Scope = "read"
)

// tokens are the hashes of the bearer tokens in use. A value is never
// changed once stored; SetTokens stores a new one.
type tokens struct {
	admin   [32]byte
	read    [32]byte // a random hash nothing matches when hasRead is 0
	hasRead int      // 1 when a read token is set
}

// newTokens hashes the admin and the (optional) read token. The admin
// token must not be empty, and the two must differ.
func newTokens(admin, read string) (*tokens, error) {
	admin, read = strings.TrimSpace(admin), strings.TrimSpace(read)
	switch {
	case admin == "":
		return nil, errors.New("api: the bearer token is empty")
	case read == admin:
		return nil, errors.New("api: the read-only token (api.read_token_file) is the admin token (api.token_file); give it a token of its own")
	}
	t := &tokens{admin: sha256.Sum256([]byte(admin))}
	if read != "" {
		t.read, t.hasRead = sha256.Sum256([]byte(read)), 1
	} else {
		// Compared all the same, so a request takes as long whether a
		// read token is set or not.
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		t.read = sha256.Sum256(b[:])
	}
	return t, nil
}

// match returns the scope of tok. Both tokens are compared every time, in
// constant time, on their hashes: neither which token matched, nor the
// length or content of either, shows in the timing.
func (t *tokens) match(tok string) (Scope, bool) {
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	admin := subtle.ConstantTimeCompare(sum[:], t.admin[:])
	read := subtle.ConstantTimeCompare(sum[:], t.read[:]) & t.hasRead
	switch {
	case admin == 1:
		return ScopeAdmin, true
	case read == 1:
		return ScopeRead, true
	}
	return "", false
}

// same reports whether t and o accept the same tokens.
func (t *tokens) same(o *tokens) bool {
	return t.admin == o.admin && t.hasRead == o.hasRead && (t.hasRead == 0 || t.read == o.read)
}

// Scope returns what token may do, and false when it is neither the admin
// nor the read token. It is what the bearer check uses, for a login form
// to reuse.
func (s *Server) Scope(token string) (Scope, bool) {
	return s.tokens.Load().match(token)
}

// tokenOK reports whether token is the admin or the read token: who may
// log in to the admin page, which only reads.
func (s *Server) tokenOK(token string) bool {
	_, ok := s.Scope(token)
	return ok
}

// setTokens stores t; when it accepts other tokens than before, the admin
// page's sessions end (they were opened with a token that may be gone).
func (s *Server) setTokens(t *tokens) {
	if old := s.tokens.Swap(t); old != nil && !old.same(t) && s.ui != nil {
		s.ui.Reset()
	}
}

// SetTokens replaces both bearer tokens at once (a reload after a token
// file was rotated); read "" removes the read token. Requests already
// authenticated are not affected; the admin page's sessions end when a
// token changed. An empty admin token, or a read token
// equal to it, is an error and changes nothing.
func (s *Server) SetTokens(admin, read string) error {
	t, err := newTokens(admin, read)
	if err != nil {
		return err
	}
	s.setTokens(t)
	return nil
}

// SetToken replaces the admin bearer token and keeps the read token, as
// SetTokens. An empty token, or one equal to the read token, is ignored
// and the old one kept.
func (s *Server) SetToken(tok string) {
	old := s.tokens.Load()
	t, err := newTokens(tok, "")
	if err != nil {
		return
	}
	t.read, t.hasRead = old.read, old.hasRead
	if t.hasRead == 1 && t.read == t.admin {
		return
	}
	s.setTokens(t)
}

// authenticate checks the bearer token and returns its scope.
func (s *Server) authenticate(r *http.Request) (Scope, *Error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", apiErr(CodeUnauthorized, "missing bearer token: send \"Authorization: Bearer <token>\" with the token from api.token_file")
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", apiErr(CodeUnauthorized, "the Authorization header must be \"Bearer <token>\"")
	}
	scope, ok := s.Scope(tok)
	if !ok {
		return "", apiErr(CodeUnauthorized, "invalid bearer token")
	}
	return scope, nil
}

// readOnly reports whether method only reads: what the read token may use.
func readOnly(method string) bool {
	return method == http.MethodGet || method == http.MethodHead
}

// actorOf names who sent r with a token of scope: "api:SCOPE@ADDRESS" for
// TCP, "api:SCOPE@unix:uid=UID" for a unix socket (the connecting
// process's uid), "api:SCOPE@unix" when that is unknown.
func actorOf(scope Scope, r *http.Request) string {
	if uid, ok := r.Context().Value(peerUIDKey{}).(uint32); ok {
		return fmt.Sprintf("api:%s@unix:uid=%d", scope, uid)
	}
	if r.RemoteAddr == "" || r.RemoteAddr == "@" {
		return "api:" + string(scope) + "@unix"
	}
	return "api:" + string(scope) + "@" + r.RemoteAddr
}

type peerUIDKey struct{}

// withPeerCred adds the uid of the process at the other end of a unix
// socket connection to its context (one getsockopt per connection).
func withPeerCred(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return ctx
	}
	return context.WithValue(ctx, peerUIDKey{}, cred.Uid)
}
