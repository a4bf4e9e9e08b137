package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api/ui"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Store is what the API's views read of configs and events: the engine
// passes it on (Engine), and the CLI's commands that need no engine read
// a store directly (every backend of the store contract satisfies it).
type Store interface {
	ListPeers(ctx context.Context, f store.PeerFilter) ([]store.Peer, error)
	GetPeer(ctx context.Context, key wgtypes.Key) (store.Peer, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error)
	CountPeers(ctx context.Context) ([]store.PeerCount, error)
	CountEvents(ctx context.Context) (map[string]int, error)
	WhoHad(ctx context.Context, ip netip.Addr, at time.Time) ([]store.Session, error)
	UserSessions(ctx context.Context, user string) ([]store.Session, error)
	ListClientSessions(ctx context.Context, f store.ClientSessionFilter) ([]store.ClientSession, error)
	ListActivity(ctx context.Context, iface string) (map[wgtypes.Key]store.Activity, error)
	// Version answers when the database does (the health check).
	Version(ctx context.Context) (uint64, error)
}

// Device reads live WireGuard interfaces: the engine through ReadDevice;
// *wg.Client satisfies it too.
type Device interface {
	Read(ctx context.Context, name string) (*wg.Device, error)
}

var (
	_ Store  = store.Store(nil)
	_ Device = (*wg.Client)(nil)
)

// Options configure a Server. Engine, Store, Device and Token are required.
type Options struct {
	// Engine serves every change and every read.
	Engine Engine
	// Token is the admin bearer token: every request but /healthz (and
	// /metrics with MetricsPublic) must carry it or ReadToken.
	Token string
	// ReadToken, when not empty, is a second bearer token that may only
	// read (GET): every other method answers 403 forbidden. It must differ
	// from Token.
	ReadToken string
	// MetricsPublic serves /metrics without the token.
	MetricsPublic bool
	// Metrics is served on /metrics; nil means a new one (whose engine
	// counters then stay at zero). New attaches it to the engine's reads
	// and config.
	Metrics *Metrics
	// Version is reported by GET /v1/status.
	Version string
	// Logger receives one access line per request and every internal
	// error; nil discards.
	Logger *slog.Logger
	// Now is the clock for "online"; nil means time.Now.
	Now func() time.Time
}

// Server is the HTTP API. It is an http.Handler and safe for concurrent use.
type Server struct {
	eng           Engine
	st            Store                  // the engine's reads of the store
	dev           Device                 // the engine's reads of the devices
	tokens        atomic.Pointer[tokens] // replaced whole by SetTokens
	metricsPublic bool
	metrics       *Metrics
	version       string
	log           *slog.Logger
	now           func() time.Time
	mux           *http.ServeMux
	srv           *http.Server
	inFlight      atomic.Int64 // requests being answered, but /healthz and /metrics
	ui            *ui.Handler  // the admin page at /ui/
}

// route is one endpoint: the ServeMux pattern and its handler.
type route struct {
	pattern string
	handle  func(s *Server, w http.ResponseWriter, r *http.Request) error
}

// routes are every endpoint served; openapi.yaml documents exactly these.
var routes = []route{
	{"POST /v1/peers", (*Server).createPeer},
	{"GET /v1/peers", (*Server).listPeers},
	{"GET /v1/peers/{public_key}", (*Server).getPeer},
	{"DELETE /v1/peers/{public_key}", (*Server).deletePeer},
	{"PATCH /v1/peers/{public_key}", (*Server).patchPeer},
	{"DELETE /v1/users/{user_id}/peers", (*Server).deleteUserPeers},
	{"GET /v1/status", (*Server).status},
	{"GET /v1/events", (*Server).listEvents},
	{"GET /v1/log", (*Server).connectionLog},
	{"POST /v1/events/{id}/retry", (*Server).retryEvent},
	{"POST /v1/housekeeping", (*Server).housekeeping},
	{"GET /v1/plan", (*Server).plan},
	{"GET /healthz", (*Server).healthz},
	{"GET /metrics", (*Server).serveMetrics},
}

// New returns a Server.
func New(o Options) (*Server, error) {
	switch {
	case o.Engine == nil:
		return nil, errors.New("api: the engine is required")
	case strings.TrimSpace(o.Token) == "":
		return nil, errors.New("api: the bearer token is empty")
	}
	toks, err := newTokens(o.Token, o.ReadToken)
	if err != nil {
		return nil, err
	}
	s := &Server{
		eng:           o.Engine,
		st:            o.Engine,
		dev:           deviceOf{o.Engine},
		metricsPublic: o.MetricsPublic,
		metrics:       o.Metrics,
		version:       o.Version,
		log:           o.Logger,
		now:           o.Now,
		mux:           http.NewServeMux(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.tokens.Store(toks)
	if s.now == nil {
		s.now = time.Now
	}
	if s.metrics == nil {
		s.metrics = NewMetrics()
	}
	s.metrics.Attach(s.st, s.dev, o.Engine.Config, s.now, s.log)
	s.ui = ui.New(ui.Options{CheckToken: s.tokenOK, Data: s.pageData, Logger: s.log, Now: s.now})
	s.metrics.AttachOrphans(o.Engine.Orphans)
	// No WriteTimeout: a create waits for its connect script (bounded by
	// hooks.timeout) and a housekeeping run with "wait" for the lock.
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ConnContext:       withPeerCred,
	}
	for _, rt := range routes {
		h := rt.handle
		s.mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := h(s, w, r); err != nil {
				s.fail(w, r, err)
			}
		})
	}
	return s, nil
}

// fail answers with the API error for err; errors that are not the
// client's are logged and answered 500 without details.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if e := fromEngine(err); e != nil {
		writeError(w, e)
		return
	}
	if r.Context().Err() != nil {
		s.log.Info("API request abandoned by the client", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Error("API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, apiErr(CodeInternal, "internal error; the server log has the details"))
}

// ServeHTTP authenticates, routes and answers one request, logging it.
// A panic in a handler is logged and answered 500 internal.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.URL.Path != "/healthz" && r.URL.Path != "/metrics" {
		s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
	}
	rw := &statusWriter{ResponseWriter: w}
	var actor string // set once authenticated
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("panic in API handler", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if !rw.wrote {
				writeError(rw, apiErr(CodeInternal, "internal error; the server log has the details"))
			}
		}
		level := slog.LevelInfo
		if r.URL.Path == "/healthz" || r.URL.Path == "/metrics" {
			level = slog.LevelDebug
		}
		s.log.Log(r.Context(), level, "api request", "method", r.Method, "path", r.URL.Path, "status", rw.statusCode(),
			"bytes", rw.n, "duration", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr, "actor", actor)
	}()
	s.serve(rw, r, &actor)
}

// serve authenticates r, sets *actor to who sent it and answers it.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, actor *string) {
	if r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/") {
		s.ui.ServeHTTP(w, r) // its own login and session
		return
	}
	public := r.URL.Path == "/healthz" || (s.metricsPublic && r.URL.Path == "/metrics")
	if !public {
		scope, e := s.authenticate(r)
		if e != nil {
			writeError(w, e)
			return
		}
		*actor = actorOf(scope, r)
		r = r.WithContext(reconcile.WithActor(r.Context(), *actor))
		if scope == ScopeRead && !readOnly(r.Method) {
			writeError(w, apiErr(CodeForbidden, "the read-only token (api.read_token_file) may not %s %s; use the admin token (api.token_file)", r.Method, r.URL.Path))
			return
		}
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.noRoute(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// noRoute answers a request no pattern matched: 405 with Allow when the
// path exists for other methods, else 404, both as JSON errors.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	rec := &recorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeError(w, apiErr(CodeMethodNotAllowed, "%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow))
		return
	}
	msg := fmt.Sprintf("no endpoint at %s", r.URL.Path)
	if strings.HasPrefix(r.URL.Path, "/v1/peers/") || strings.HasPrefix(r.URL.Path, "/v1/users/") {
		msg += ` (escape "/" in a key or user id as %2F, or give the key in base64url)`
	}
	writeError(w, apiErr(CodeNotFound, "%s", msg))
}

// Serve accepts connections on l until Shutdown. It returns nil after a
// Shutdown, else the error that stopped it.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// WaitIdle waits, while the server keeps serving, until no request but
// /healthz and /metrics is being answered, or ctx ends (its error is
// returned then). A daemon that must stop because its database is gone
// calls it first: clients keep getting answers (503 unavailable, a failing
// /healthz) instead of refused connections while the requests in progress
// finish.
func (s *Server) WaitIdle(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Shutdown stops accepting connections and waits, until ctx ends, for the
// requests in progress (a create waits for its connect script). Work the
// engine started finishes even when ctx ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

// statusWriter records the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) statusCode() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.status
}

// recorder captures what the ServeMux's own 404/405 handlers would write.
type recorder struct {
	header http.Header
	status int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(b), nil
}
