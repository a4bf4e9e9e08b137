package api

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api/ui"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// evilUser is a user id the page must show as text.
const evilUser = `<script>alert("x")</script>`

// pageFixture fills the harness with one config in each state the page
// shows, and a failed event. It returns the public keys by name.
func pageFixture(t *testing.T, h *harness) map[string]string {
	t.Helper()
	keys := map[string]string{}
	alice := h.create(map[string]any{"user_id": "alice", "profile_id": "staff", "display_name": "laptop"}, 201)
	keys["alice"] = alice.Peer.PublicKey
	keys["bob"] = h.create(map[string]any{"user_id": "bob", "profile_id": "staff", "expires_in": "2h"}, 201).Peer.PublicKey
	keys["evil"] = h.create(map[string]any{"user_id": evilUser, "profile_id": "tiny"}, 201).Peer.PublicKey
	dave := h.create(map[string]any{"user_id": "dave", "profile_id": "staff"}, 201)
	keys["dave"] = dave.Peer.PublicKey
	fail := h.create(map[string]any{"user_id": "faild1", "profile_id": "staff"}, 201)
	if r := h.do("DELETE", "/v1/peers/"+url.PathEscape(fail.Peer.PublicKey), nil); r.status != 200 {
		t.Fatalf("delete faild1: %d %s", r.status, r.body)
	}
	// Pending: a connect script that (as far as the store knows) still runs.
	pend := newKey(t).PublicKey()
	if _, _, err := h.st.InsertPending(h.ctx, store.NewPeer{PublicKey: pend, Interface: h.srv.Name, ProfileID: "staff",
		UserID: "erin", IPv4Range: netip.MustParsePrefix("10.99.0.0/16"), IPv6Range: netip.MustParsePrefix("fd00:99::/64")}); err != nil {
		t.Fatal(err)
	}
	keys["erin"] = pend.String()
	// Missing: dave taken off the device by hand; an orphan added by hand.
	orphan := newKey(t).PublicKey()
	keys["orphan"] = orphan.String()
	if _, err := h.dev.Apply(h.ctx, h.srv.Name, wg.Plan{
		Add:    []wg.Wanted{{PublicKey: orphan, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.200.1/32")}}},
		Remove: []wgtypes.Key{mustKey(t, dave.Peer.PublicKey)},
	}); err != nil {
		t.Fatal(err)
	}
	// Online: a real client with alice's config.
	a4, a6 := netip.MustParseAddr(*alice.Peer.IPFour), netip.MustParseAddr(*alice.Peer.IPSix)
	h.handshake(t, mustKey(t, alice.PrivateKey), a4, a6, mustKey(t, configLine(t, alice.Config, "PresharedKey")))
	h.clock.Set(time.Now().UTC()) // handshakes are stamped with real time
	return keys
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects.
func browser(t *testing.T, base *httptest.Server) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := base.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func postForm(t *testing.T, c *http.Client, u string, v url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, v)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func sessionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == ui.CookieName {
			return c
		}
	}
	return nil
}

func TestAdminPageSession(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	base := h.http.URL
	c := browser(t, h.http)

	// Without a session: only the login.
	for _, p := range []string{"/ui/", "/ui/?q=alice"} {
		resp, _ := get(t, c, base+p)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
			t.Fatalf("GET %s without a session: %d to %q, want 303 to /ui/login", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := get(t, c, base+"/ui"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := get(t, c, base+"/ui/login")
	if resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) || !strings.Contains(body, `method="post" action="/ui/login"`) {
		t.Fatalf("login form: %d\n%s", resp.StatusCode, body)
	}
	for name, want := range map[string]string{"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "X-Frame-Options": "DENY"} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Errorf("Content-Security-Policy %q: want no scripts at all", csp)
	}

	// A wrong token: 401, the form again, no cookie.
	resp, body = postForm(t, c, base+"/ui/login", url.Values{"token": {"wrong"}})
	if resp.StatusCode != http.StatusUnauthorized || sessionCookie(resp) != nil || !strings.Contains(body, "Wrong token") {
		t.Fatalf("wrong token: %d, cookie %v\n%s", resp.StatusCode, sessionCookie(resp), body)
	}
	// The right one: a session cookie and the page.
	resp, _ = postForm(t, c, base+"/ui/login", url.Values{"token": {testToken}})
	ck := sessionCookie(resp)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" || ck == nil {
		t.Fatalf("login: %d to %q, cookie %v", resp.StatusCode, resp.Header.Get("Location"), ck)
	}
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui/" || ck.MaxAge != 12*3600 || ck.Secure || len(ck.Value) != 64 {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/, Max-Age 12h, not Secure over plain HTTP, 256 random bits", ck)
	}
	resp, body = get(t, c, base+"/ui/")
	if resp.StatusCode != 200 || !strings.Contains(body, h.srv.Name) || !strings.Contains(body, "Log out") {
		t.Fatalf("page after login: %d\n%s", resp.StatusCode, body)
	}
	if resp, _ := get(t, c, base+"/ui/login"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("login form with a session: %d, want 303 to the page", resp.StatusCode)
	}
	// The cookie opens the page, not the API.
	req, _ := http.NewRequest("GET", base+"/v1/status", nil)
	req.AddCookie(ck)
	if r, err := specClient(t, http.DefaultClient).Do(req); err != nil || r.StatusCode != 401 {
		t.Errorf("GET /v1/status with the page's cookie: %v %v, want 401", r.StatusCode, err)
	}

	// The session ends on the server after 12 h, whatever the browser keeps.
	h.clock.Advance(12*time.Hour - time.Minute)
	if resp, _ := get(t, c, base+"/ui/"); resp.StatusCode != 200 {
		t.Fatalf("page at 11h59m: %d", resp.StatusCode)
	}
	h.clock.Advance(time.Minute)
	if resp, _ := get(t, c, base+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("page at 12h: %d, want the login", resp.StatusCode)
	}

	// Logout ends the session on the server: the old cookie is dead.
	postForm(t, c, base+"/ui/login", url.Values{"token": {testToken}})
	u, _ := url.Parse(base + "/ui/")
	old := c.Jar.Cookies(u)
	resp, _ = postForm(t, c, base+"/ui/logout", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" || sessionCookie(resp) == nil || sessionCookie(resp).MaxAge >= 0 {
		t.Fatalf("logout: %d %q %v", resp.StatusCode, resp.Header.Get("Location"), sessionCookie(resp))
	}
	c.Jar.SetCookies(u, old)
	if resp, _ := get(t, c, base+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("page with the cookie of a logged-out session: %d, want the login", resp.StatusCode)
	}
	if resp, _ := get(t, c, base+"/ui/logout"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /ui/logout: %d, want 405 (logout is a POST)", resp.StatusCode)
	}

	// A new token ends the sessions the old one opened.
	postForm(t, c, base+"/ui/login", url.Values{"token": {testToken}})
	h.api.SetToken("another-token")
	if resp, _ := get(t, c, base+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("page after a token change: %d, want the login", resp.StatusCode)
	}
	if resp, _ := postForm(t, c, base+"/ui/login", url.Values{"token": {testToken}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("login with the old token: %d", resp.StatusCode)
	}
}

// Over TLS the cookie is Secure.
func TestAdminPageTLS(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	srv := httptest.NewTLSServer(h.api)
	t.Cleanup(srv.Close)
	c := browser(t, srv)
	c.Transport.(*http.Transport).TLSClientConfig.MinVersion = tls.VersionTLS12
	resp, _ := postForm(t, c, srv.URL+"/ui/login", url.Values{"token": {testToken}})
	if ck := sessionCookie(resp); ck == nil || !ck.Secure || !ck.HttpOnly {
		t.Fatalf("cookie over TLS: %+v", ck)
	}
}

// esc is a key as html/template writes it into an attribute.
func esc(key string) string { return strings.ReplaceAll(key, "+", "&#43;") }

// countingDevice counts the engine's device reads per interface.
type countingDevice struct {
	Engine
	mu sync.Mutex // guards n
	n  map[string]int
}

func (d *countingDevice) ReadDevice(ctx context.Context, name string) (*wg.Device, error) {
	d.mu.Lock()
	d.n[name]++
	d.mu.Unlock()
	return d.Engine.ReadDevice(ctx, name)
}

func TestAdminPageContent(t *testing.T) {
	h := newHarness(t, harnessOpts{ghost: true})
	keys := pageFixture(t, h)
	dev := &countingDevice{Engine: h.eng, n: map[string]int{}}
	srv, err := New(Options{Engine: dev, Token: testToken, Version: "test", Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	c := browser(t, hs)
	postForm(t, c, hs.URL+"/ui/login", url.Values{"token": {testToken}})
	clear(dev.n)
	resp, body := get(t, c, hs.URL+"/ui/")
	if resp.StatusCode != 200 {
		t.Fatalf("page: %d\n%s", resp.StatusCode, body)
	}
	if dev.n[h.srv.Name] != 1 || dev.n["wgghost0"] != 1 || len(dev.n) != 2 {
		t.Errorf("device reads for one page: %v, want one per interface", dev.n)
	}

	row := func(key string) string {
		t.Helper()
		i := strings.Index(body, `title="`+esc(key)+`"`)
		if i < 0 {
			t.Fatalf("no row for %s", key)
		}
		start := strings.LastIndex(body[:i], `<tr class="config"`)
		end := strings.Index(body[i:], "</tr>")
		return body[start : i+end]
	}
	for name, state := range map[string]string{"alice": ui.StateOnline, "bob": ui.StateNever, "evil": ui.StateNever,
		"dave": ui.StateMissing, "erin": ui.StatePending, "orphan": ui.StateOrphan} {
		if r := row(keys[name]); !strings.Contains(r, `data-state="`+state+`"`) {
			t.Errorf("%s: want state %s in\n%s", name, state, r)
		}
	}
	if r := row(keys["alice"]); !strings.Contains(r, "alice") || !strings.Contains(r, "(laptop)") || !strings.Contains(r, "10.99.0.2") ||
		!strings.Contains(r, "fd00:99::2") || !strings.Contains(r, " ago") || strings.Contains(r, "<td class=\"num\">0 B</td>") {
		t.Errorf("alice's row lacks user, name, addresses, handshake or traffic:\n%s", r)
	}
	if r := row(keys["bob"]); !strings.Contains(r, "in 1h59m") && !strings.Contains(r, "in 2h00m") {
		t.Errorf("bob's expiry:\n%s", r)
	}
	if r := row(keys["orphan"]); !strings.Contains(r, "10.99.200.1") {
		t.Errorf("orphan's row:\n%s", r)
	}
	// Escaping: the user id is text, never markup.
	if strings.Contains(body, "<script") || !strings.Contains(row(keys["evil"]), "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
		t.Errorf("user id %q not escaped:\n%s", evilUser, row(keys["evil"]))
	}
	// The unreadable interface says so; pools and the traffic picture.
	for _, want := range []string{"Device unreadable:", `aria-label="4 of 65533 addresses used"`, `aria-label="1 of 1 addresses used"`,
		`<rect class="rx"`, "<title>received ", `id="iface-wgghost0"`, `<span class="tag bad">link missing</span>`, "Drift from the config: "} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Events: the failed one first, with its last error.
	ev := body[strings.Index(body, `<section class="events">`):]
	first := ev[strings.Index(ev, `<tr class="event"`):]
	first = first[:strings.Index(first, "</tr>")]
	if !strings.Contains(first, `data-status="failed"`) || !strings.Contains(first, "faild1") || !strings.Contains(first, "exited with status 5") {
		t.Errorf("first event row is not the failed one with its error:\n%s", first)
	}
	if strings.Count(ev, `<tr class="event"`) < 6 {
		t.Errorf("events: %d rows", strings.Count(ev, `<tr class="event"`))
	}
	// Each event names its actor: the API client that made the change, or
	// unknown for an event recorded without one (erin's, put in the store
	// directly).
	if !strings.Contains(first, `<td class="actor">api:admin@127.0.0.1:`) {
		t.Errorf("the failed event's row does not name its actor (the API client):\n%s", first)
	}
	erin := ev[strings.Index(ev, `title="`+esc(keys["erin"])+`"`):]
	erin = erin[:strings.Index(erin, "</tr>")]
	if !strings.Contains(erin, `<td class="actor"><span class="muted">unknown</span></td>`) {
		t.Errorf("erin's event, recorded without an actor, does not say unknown:\n%s", erin)
	}

	// With no session poll for offline_after + poll_interval, alice's
	// session, still open in the store, is stale: she is offline.
	stale := h.cfg.Sessions.OfflineAfter + h.cfg.Sessions.PollInterval
	h.clock.Advance(stale)
	_, body = get(t, c, hs.URL+"/ui/")
	if r := row(keys["alice"]); !strings.Contains(r, `data-state="`+ui.StateOffline+`"`) {
		t.Errorf("alice %s after her last poll: want offline in\n%s", stale, r)
	}

	// The filter (GET query): by user, by address.
	_, body = get(t, c, hs.URL+"/ui/?q=ALI")
	if !strings.Contains(body, esc(keys["alice"])) || strings.Contains(body, esc(keys["bob"])) || !strings.Contains(body, "more not matching the filter") {
		t.Errorf("filter by user keeps alice only")
	}
	_, body = get(t, c, hs.URL+"/ui/?q=10.99.200.1")
	if !strings.Contains(body, esc(keys["orphan"])) || strings.Contains(body, esc(keys["alice"])) {
		t.Errorf("filter by address keeps the orphan only")
	}
	_, body = get(t, c, hs.URL+"/ui/?q="+url.QueryEscape(`"><b>`))
	if strings.Contains(body, `"><b>`) || !strings.Contains(body, `value="&#34;&gt;&lt;b&gt;"`) {
		t.Errorf("the filter is echoed unescaped")
	}
}
