package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestTraffic(t *testing.T) {
	var i Interface
	for n := range 11 {
		i.Configs = append(i.Configs, Config{User: fmt.Sprintf("u%02d", n), RxBytes: int64(n * 100), TxBytes: int64(n * 50)})
	}
	i.Configs = append(i.Configs, Config{PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", RxBytes: 2000})
	c := i.Traffic()
	if c.TotalRx != 5500+2000 || c.TotalTx != 2750 {
		t.Errorf("totals %d/%d", c.TotalRx, c.TotalTx)
	}
	// 11 peers with traffic (u00 has none): the busiest 8 drawn.
	if len(c.Rows) != chartRows || c.More != 3 {
		t.Fatalf("%d rows, %d more; want %d and 3", len(c.Rows), c.More, chartRows)
	}
	if c.Rows[0].Label != "orphan AAAAAAAAAA…" || c.Rows[0].RxW != chartBarW || c.Rows[1].Label != "u10" {
		t.Errorf("first rows %+v %+v: want the orphan at full width, then u10", c.Rows[0], c.Rows[1])
	}
	if r := c.Rows[1]; r.RxW != chartBarW*1000/2000 || r.TxW != chartBarW*500/2000 || r.TxY != r.RxY+9 {
		t.Errorf("u10's bars %+v: want widths in proportion to the busiest counter", r)
	}
	if c.Height != 8+chartRows*chartRowH {
		t.Errorf("height %d", c.Height)
	}
	if got := (Interface{}).Traffic(); len(got.Rows) != 0 || got.Height != 8 {
		t.Errorf("no traffic: %+v", got)
	}
}

func TestPoolPct(t *testing.T) {
	for _, tt := range []struct {
		p    Pool
		want float64
	}{{Pool{Used: 1, Total: 4}, 25}, {Pool{Used: 0, Total: 0}, 0}, {Pool{Used: 9, Total: 4}, 100}} {
		if got := tt.p.Pct(); got != tt.want {
			t.Errorf("%+v: %v, want %v", tt.p, got, tt.want)
		}
	}
}

// Sessions are bounded: the oldest goes first, and every session still
// kept works.
func TestSessionLimit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := New(Options{CheckToken: func(s string) bool { return s == "t" }, Now: func() time.Time { return now },
		Data: func(context.Context, string) (*Page, error) { return &Page{}, nil }})
	var ids []string
	for range maxSessions + 5 {
		now = now.Add(time.Second)
		id, _, err := h.newSession()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if len(h.sessions) != maxSessions {
		t.Fatalf("%d sessions kept, want %d", len(h.sessions), maxSessions)
	}
	page := func(id string) int {
		r := httptest.NewRequest("GET", "/ui/", nil)
		r.AddCookie(&http.Cookie{Name: CookieName, Value: id})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if page(ids[0]) != http.StatusSeeOther || page(ids[4]) != http.StatusSeeOther || page(ids[5]) != http.StatusOK || page(ids[len(ids)-1]) != http.StatusOK {
		t.Error("the oldest sessions should be gone and the newest kept")
	}
	// Expired sessions are swept at the next login.
	now = now.Add(DefaultSessionTTL)
	if _, _, err := h.newSession(); err != nil || len(h.sessions) != 1 {
		t.Errorf("after 12 h: %d sessions, %v; want only the new one", len(h.sessions), err)
	}
}

func TestNotFoundIsHTML(t *testing.T) {
	h := New(Options{CheckToken: func(string) bool { return false }, Data: func(context.Context, string) (*Page, error) { return nil, nil }})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/ui/<b>nope", nil))
	if w.Code != 404 || strings.Contains(w.Body.String(), "<b>nope") || !strings.Contains(w.Body.String(), "&lt;b&gt;nope") {
		t.Errorf("404: %d\n%s", w.Code, w.Body)
	}
}
