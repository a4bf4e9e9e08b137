// Package ui serves wgkeeper's read-only admin page at /ui/: server-rendered
// html/template pages embedded in the binary, no JavaScript, behind a login
// form and a server-side session.
//
// It owns the login, the sessions, the templates and the drawing (pool bars,
// traffic pictures). It does not read the store or the devices: the API
// server hands it a Data function that builds a Page from what its own
// endpoints compute, and a CheckToken function that decides who may log in.
//
// Sessions: a random 256-bit id in a cookie (HttpOnly, SameSite=Strict,
// Path=/ui/, Secure when the request came over TLS), valid for a fixed time
// (12 h by default) kept on the server, ended by logout or by Reset (the
// token changed). CSRF: the only state-changing requests are the login and
// logout form POSTs; a SameSite=Strict cookie is never sent with a
// cross-site request, so a foreign page can neither use nor end a session,
// and the Content-Security-Policy limits form targets to this origin.
package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// DefaultSessionTTL is how long a login lasts.
const DefaultSessionTTL = 12 * time.Hour

// maxSessions bounds the sessions kept; the oldest goes first.
const maxSessions = 1024

// CookieName is the session cookie.
const CookieName = "wgkeeper_session"

// Options configure a Handler. CheckToken and Data are required.
type Options struct {
	// CheckToken reports whether a token typed into the login form admits
	// its holder to the page. It must compare in constant time.
	CheckToken func(token string) bool
	// Data builds the page for a filter (a user id or an address, or part
	// of one; "" for everything). It is called once per page view.
	Data func(ctx context.Context, filter string) (*Page, error)
	// Logger receives logins, failed logins and errors; nil discards.
	Logger *slog.Logger
	// Now is the clock of sessions and relative times; nil means time.Now.
	Now func() time.Time
	// SessionTTL is how long a session lasts (default 12 h).
	SessionTTL time.Duration
}

// Handler serves /ui and everything under /ui/. It is safe for concurrent
// use.
type Handler struct {
	check func(string) bool
	data  func(context.Context, string) (*Page, error)
	log   *slog.Logger
	now   func() time.Time
	ttl   time.Duration
	tmpl  *template.Template
	css   []byte
	mux   *http.ServeMux

	mu       sync.Mutex           // guards sessions
	sessions map[string]time.Time // session id → end of validity
}

// New returns a Handler. It panics when CheckToken or Data is nil or the
// embedded templates do not parse (both are programming errors).
func New(o Options) *Handler {
	if o.CheckToken == nil || o.Data == nil {
		panic("ui: CheckToken and Data are required")
	}
	h := &Handler{check: o.CheckToken, data: o.Data, log: o.Logger, now: o.Now, ttl: o.SessionTTL,
		sessions: map[string]time.Time{}, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.ttl <= 0 {
		h.ttl = DefaultSessionTTL
	}
	h.tmpl = template.Must(template.New("").Funcs(funcs).ParseFS(assets, "assets/*.html"))
	css, err := fs.ReadFile(assets, "assets/style.css")
	if err != nil {
		panic("ui: " + err.Error())
	}
	h.css = css
	h.mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	h.mux.HandleFunc("GET /ui/{$}", h.page)
	h.mux.HandleFunc("GET /ui/login", h.loginForm)
	h.mux.HandleFunc("POST /ui/login", h.login)
	h.mux.HandleFunc("POST /ui/logout", h.logout)
	h.mux.HandleFunc("GET /ui/style.css", h.style)
	h.mux.HandleFunc("/ui/logout", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "POST")
		h.render(w, http.StatusMethodNotAllowed, "message", message{Title: "Log out with the button", Text: "Logging out is a POST.", Back: true})
	})
	h.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		h.render(w, http.StatusNotFound, "message", message{Title: "Not found", Text: "There is no page at " + r.URL.Path + "."})
	})
	return h
}

// ServeHTTP answers a request under /ui.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.mux.ServeHTTP(w, r)
}

// Reset ends every session: the token that admitted them changed.
func (h *Handler) Reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.sessions)
}

// valid reports whether the request carries a live session.
func (h *Handler) valid(r *http.Request) bool {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return false
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	end, ok := h.sessions[c.Value]
	if ok && !now.Before(end) {
		delete(h.sessions, c.Value)
		return false
	}
	return ok
}

// newSession records a session and returns its id and end.
func (h *Handler) newSession() (string, time.Time, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", time.Time{}, err
	}
	id := hex.EncodeToString(b[:])
	now := h.now()
	end := now.Add(h.ttl)
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, e := range h.sessions {
		if !now.Before(e) {
			delete(h.sessions, k)
		}
	}
	for len(h.sessions) >= maxSessions {
		oldest, first := "", time.Time{}
		for k, e := range h.sessions {
			if oldest == "" || e.Before(first) {
				oldest, first = k, e
			}
		}
		delete(h.sessions, oldest)
	}
	h.sessions[id] = end
	return id, end, nil
}

func (h *Handler) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: value, Path: "/ui/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil}
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	if !h.valid(r) {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	filter := r.URL.Query().Get("q")
	if len(filter) > 256 {
		filter = filter[:256]
	}
	p, err := h.data(r.Context(), filter)
	if err != nil {
		h.log.Error("admin page", "err", err)
		h.render(w, http.StatusInternalServerError, "message", message{Title: "Error",
			Text: "The page could not be built; the server log has the details.", Back: true})
		return
	}
	p.Filter = filter
	p.Now = h.now()
	h.render(w, http.StatusOK, "page", p)
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	if h.valid(r) {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	h.render(w, http.StatusOK, "login", loginView{})
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		h.render(w, http.StatusBadRequest, "login", loginView{Error: "The form could not be read; try again."})
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" || !h.check(tok) {
		h.log.Warn("admin page: failed login", "remote", r.RemoteAddr)
		h.render(w, http.StatusUnauthorized, "login", loginView{Error: "Wrong token. Use the content of api.token_file."})
		return
	}
	id, _, err := h.newSession()
	if err != nil {
		h.log.Error("admin page: new session", "err", err)
		h.render(w, http.StatusInternalServerError, "login", loginView{Error: "No session could be started; the server log has the details."})
		return
	}
	http.SetCookie(w, h.cookie(r, id, int(h.ttl/time.Second)))
	h.log.Info("admin page: login", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil {
		h.mu.Lock()
		delete(h.sessions, c.Value)
		h.mu.Unlock()
	}
	http.SetCookie(w, h.cookie(r, "", -1))
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

func (h *Handler) style(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=3600")
	_, _ = w.Write(h.css)
}

type loginView struct{ Error string }

type message struct {
	Title, Text string
	Back        bool
}

// render executes a template fully before anything is sent, so a template
// error is a clean 500.
func (h *Handler) render(w http.ResponseWriter, status int, name string, v any) {
	var buf bytes.Buffer
	if err := h.tmpl.ExecuteTemplate(&buf, name, v); err != nil {
		h.log.Error("admin page: render", "template", name, "err", err)
		http.Error(w, "internal error; the server log has the details", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// filterURL is the page's URL for a filter.
func filterURL(q string) string {
	if q == "" {
		return "/ui/"
	}
	return "/ui/?q=" + url.QueryEscape(q)
}
