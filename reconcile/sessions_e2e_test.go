package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/testenv"
	"github.com/wgkeeper/wgkeeper/store"
)

// sessionScript records its runs in events.log like hookScript, marked
// SCRIPT=session; a file reject_C makes session connects fail (exit 5).
const sessionScript = `#!/bin/sh
d=$(dirname "$(readlink -f "$0")")
rec=$(printf -- '---\nSCRIPT=session\n'; env | LC_ALL=C sort)
printf '%s\n' "$rec" >> "$d/events.log"
if [ -f "$d/reject_$VPN_EVENT" ]; then echo "not allowed now" >&2; exit 5; fi
exit 0
`

// newSessionHarness is a harness whose config tracks sessions with a
// session script, polling every 10s and offline after a minute.
func newSessionHarness(t *testing.T, extra string) *harness {
	t.Helper()
	return newSessionHarnessWith(t, extra, "")
}

// newSessionHarnessWith adds profileExtra to the profile's keys. $IFACE
// in extra is the interface's name.
func newSessionHarnessWith(t *testing.T, extra, profileExtra string) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), ctx: context.Background()}
	h.srv = testenv.NewServer(t, true)
	h.dev = h.srv.Device
	extra = strings.ReplaceAll(extra, "$IFACE", h.srv.Name)
	if err := os.WriteFile(filepath.Join(h.dir, "session.sh"), []byte(sessionScript), 0o755); err != nil {
		t.Fatal(err)
	}
	h.open(strings.Replace(testConfig(h.srv.Name, h.srv.Port, "remove", "", 3, false),
		"preshared_keys = false", "preshared_keys = false\n"+profileExtra, 1) +
		"\n[sessions]\nscript = \"session.sh\"\npoll_interval = \"10s\"\noffline_after = \"1m\"\n" + extra)
	h.useSessionScript()
	return h
}

// useSessionScript gives the engine a runner for sessions.script.
func (h *harness) useSessionScript() {
	h.t.Helper()
	r, err := hooks.New(hooks.Config{Script: h.cfg.Sessions.Script, Timeout: h.cfg.Hooks.Timeout, Concurrency: h.cfg.Hooks.Concurrency})
	if err != nil {
		h.t.Fatal(err)
	}
	h.eng.SetSessionRunner(r)
}

// poll moves the clock by d and polls the sessions of the interface.
func (h *harness) poll(d time.Duration) SessionPoll {
	h.t.Helper()
	h.clock.Advance(d)
	sp, err := h.eng.PollSessions(h.ctx, h.srv.Name)
	if err != nil {
		h.t.Fatalf("poll sessions: %v", err)
	}
	return sp
}

func (h *harness) deliver() {
	h.t.Helper()
	if _, err := h.eng.Deliver(h.ctx); err != nil {
		h.t.Fatal(err)
	}
}

// runsBy returns the script runs of one script ("session" or "config").
func (h *harness) runsBy(script string) []map[string]string {
	var out []map[string]string
	for _, r := range h.scriptRuns() {
		if (r["SCRIPT"] == "session") == (script == "session") {
			out = append(out, r)
		}
	}
	return out
}

// A client handshakes: one session C with its endpoint; traffic; the
// client stops: one session D after offline_after with its bytes; the log
// names the endpoint. The config script sees none of it.
func TestSessionsRealClient(t *testing.T) {
	h := newSessionHarness(t, "")
	c := h.create("alice")
	cl := h.connect(c)
	ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
	defer cancel()
	for range 5 {
		if err := cl.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sp := h.poll(10 * time.Second)
	if len(sp.Changes) != 1 || sp.Changes[0].Kind != store.SessionStart || len(sp.Events) != 1 || sp.Online != 1 {
		t.Fatalf("first poll = %+v; want one start with its event", sp)
	}
	start := sp.Changes[0]
	if start.Endpoint.Addr().String() != "127.0.0.1" {
		t.Fatalf("session endpoint %v, want 127.0.0.1:port", start.Endpoint)
	}
	h.deliver()
	runs := h.runsBy("session")
	if len(runs) != 1 {
		t.Fatalf("session script runs = %d, want 1", len(runs))
	}
	r := runs[0]
	for k, want := range map[string]string{"VPN_EVENT": "C", "VPN_REASON": "handshake", "VPN_ORIGINATING_IP": "127.0.0.1",
		"VPN_CONNECTION_ID": c.Peer.PublicKey.String(), "VPN_USER_ID": "alice", "VPN_PROFILE_ID": "staff",
		"VPN_IP_FOUR": c.Peer.IPv4.String(), "VPN_INTERFACE": h.srv.Name} {
		if r[k] != want {
			t.Errorf("session C: %s = %q, want %q", k, r[k], want)
		}
	}
	if n := len(h.runsBy("config")); n != 1 {
		t.Fatalf("config script runs = %d, want only the config's C", n)
	}
	// traffic keeps the session going
	for range 3 {
		if err := cl.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if sp := h.poll(10 * time.Second); len(sp.Changes) != 0 {
			t.Fatalf("changes while talking: %+v", sp.Changes)
		}
	}
	lastActive := h.clock.Now()
	cl.Close()
	var end *store.SessionChange
	for i := 0; i < 10 && end == nil; i++ {
		sp := h.poll(10 * time.Second)
		for _, ch := range sp.Changes {
			if ch.Kind == store.SessionEnd {
				ch := ch
				end = &ch
			}
		}
		if end != nil && h.clock.Now().Sub(lastActive) < time.Minute {
			t.Fatalf("session ended %s after the client stopped, before offline_after", h.clock.Now().Sub(lastActive))
		}
	}
	if end == nil || !end.At.Equal(lastActive) {
		t.Fatalf("end = %+v, want one at the last activity %s", end, lastActive)
	}
	h.deliver()
	runs = h.runsBy("session")
	if len(runs) != 2 || runs[1]["VPN_EVENT"] != "D" || runs[1]["VPN_REASON"] != "offline" {
		t.Fatalf("session runs = %v; want C then D (offline)", runs)
	}
	in, _ := strconv.ParseInt(runs[1]["VPN_BYTES_IN"], 10, 64)
	out, _ := strconv.ParseInt(runs[1]["VPN_BYTES_OUT"], 10, 64)
	if in <= 0 || out <= 0 {
		t.Fatalf("session D bytes in %d out %d; want both > 0", in, out)
	}
	// the log: who had the address, and from where
	sess, err := h.st.ListClientSessions(h.ctx, store.ClientSessionFilter{At: start.At.Add(5 * time.Second)})
	if err != nil || len(sess) != 1 || sess[0].Endpoint() != start.Endpoint || sess[0].PublicKey != c.Peer.PublicKey {
		t.Fatalf("sessions at the start = %+v, %v", sess, err)
	}
	// nothing more while the client is gone
	for range 10 {
		if sp := h.poll(10 * time.Second); len(sp.Changes) != 0 {
			t.Fatalf("changes after the end: %+v", sp.Changes)
		}
	}
	if n := len(h.runsBy("config")); n != 1 {
		t.Fatalf("config script runs = %d, want 1", n)
	}
}

// A config revoked mid-session: the session ends (session D) and the
// config's D follows, in that order; the config's D carries the traffic.
func TestSessionsEndWithConfig(t *testing.T) {
	h := newSessionHarness(t, "")
	c := h.create("alice")
	cl := h.connect(c)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if sp := h.poll(10 * time.Second); len(sp.Events) != 1 {
		t.Fatalf("poll = %+v", sp)
	}
	h.deliver()
	if _, err := h.eng.RevokeUser(h.ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	runs := h.scriptRuns()
	var seq []string
	for _, r := range runs {
		seq = append(seq, r["SCRIPT"]+":"+r["VPN_EVENT"]+":"+r["VPN_REASON"])
	}
	if got, want := strings.Join(seq, " "), ":C:created session:C:handshake session:D:revoked :D:revoked"; got != want {
		t.Fatalf("script runs %s\nwant        %s", got, want)
	}
	cd := runs[3]
	in, _ := strconv.ParseInt(cd["VPN_BYTES_IN"], 10, 64)
	if in <= 0 {
		t.Fatalf("config D bytes in %q", cd["VPN_BYTES_IN"])
	}
	sess, err := h.st.ListClientSessions(h.ctx, store.ClientSessionFilter{})
	if err != nil || len(sess) != 1 || sess[0].EndReason != store.ReasonRevoked {
		t.Fatalf("sessions = %+v, %v", sess, err)
	}
}

// The daemon restarts mid-session and its userspace interface is
// recreated (counters and handshakes back to zero) while the client keeps
// talking: no second session C, and the config's D carries the traffic
// from before the restart.
func TestSessionsDaemonRestart(t *testing.T) {
	h := newSessionHarness(t, "")
	c := h.create("alice")
	cl := h.connect(c)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
	defer cancel()
	for range 20 {
		if err := cl.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h.poll(10 * time.Second)
	h.poll(10 * time.Second)
	acts, err := h.st.ListActivity(h.ctx, h.srv.Name)
	if err != nil {
		t.Fatal(err)
	}
	before := acts[c.Peer.PublicKey]
	if !before.SessionOpen() || before.BytesIn == 0 {
		t.Fatalf("activity before the restart = %+v", before)
	}

	// the restart: a new process (engine), the interface recreated empty
	h.srv.Restart(t)
	h.eng = h.newEngine(nil)
	h.useSessionScript()
	h.clock.Advance(5 * time.Second)
	if rep := h.eng.Reconcile(h.ctx, h.srv.Name, false); rep.Err != nil {
		t.Fatal(rep.Err)
	}
	cl.Reconnect(t)
	if err := cl.Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if sp := h.poll(10 * time.Second); len(sp.Changes) != 0 {
			t.Fatalf("changes after the restart: %+v", sp.Changes)
		}
		if err := cl.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h.deliver()
	if n := len(h.runsBy("session")); n != 1 {
		t.Fatalf("session script runs = %d; want the one C from before the restart", n)
	}
	r, err := h.eng.Delete(h.ctx, c.Peer.PublicKey)
	if err != nil || len(r.Events) != 1 {
		t.Fatalf("delete = %+v, %v", r, err)
	}
	d := r.Events[0]
	if d.BytesIn <= before.BytesIn || d.BytesOut <= before.BytesOut {
		t.Fatalf("config D bytes %d/%d; want more than the %d/%d before the restart", d.BytesIn, d.BytesOut, before.BytesIn, before.BytesOut)
	}
	runs := h.runsBy("config")
	if last := runs[len(runs)-1]; last["VPN_EVENT"] != "D" || last["VPN_BYTES_IN"] != strconv.FormatInt(d.BytesIn, 10) {
		t.Fatalf("config D run = %v; want bytes in %d", last, d.BytesIn)
	}
}

// With sessions.on_reject = "revoke", a session connect the session
// script refuses revokes the config; with "ignore" it is only recorded.
func TestSessionsOnReject(t *testing.T) {
	for _, mode := range []string{"ignore", "revoke"} {
		t.Run(mode, func(t *testing.T) {
			h := newSessionHarness(t, "on_reject = \""+mode+"\"\n")
			h.touch("reject_C", "")
			c := h.create("alice")
			cl := h.connect(c)
			defer cl.Close()
			if sp := h.poll(10 * time.Second); len(sp.Events) != 1 {
				t.Fatalf("poll = %+v", sp)
			}
			h.deliver()
			evs, err := h.st.ListEvents(h.ctx, store.EventFilter{Status: store.StatusFailed})
			if err != nil || len(evs) != 1 || evs[0].Scope != store.ScopeSession || evs[0].Attempts != 1 ||
				!strings.Contains(evs[0].LastError, "not allowed now") {
				t.Fatalf("failed events = %+v, %v; want the session C, tried once", evs, err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, err := h.st.GetPeer(h.ctx, c.Peer.PublicKey)
				gone := err != nil
				if mode == "ignore" {
					if gone {
						t.Fatal("config removed with on_reject = ignore")
					}
					break
				}
				if gone {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("config not revoked after the session script refused the connect")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if mode == "revoke" {
				// the revoke's own events are delivered by the removal
				deadline := time.Now().Add(10 * time.Second)
				for len(h.runsBy("config")) < 2 && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				runs := h.runsBy("config")
				if len(runs) != 2 || runs[1]["VPN_EVENT"] != "D" || runs[1]["VPN_REASON"] != "revoked" {
					t.Fatalf("config runs = %v; want C then D revoked", runs)
				}
				if _, ok := h.onDevice(c.Peer.PublicKey); ok {
					t.Fatal("revoked config still on the device")
				}
			}
		})
	}
}

// Idle reclaim: a config without a handshake for idle_expiry is removed
// with VPN_REASON=idle; a config whose client talks is kept; and nothing is
// judged before the daemon has watched the interface for idle_expiry.
func TestSessionsIdleReclaim(t *testing.T) {
	h := newSessionHarnessWith(t, "", "idle_expiry = \"1h\"\n")
	a := h.create("alice") // never connects
	b := h.create("bob")
	cl := h.connect(b)
	defer cl.Close()
	// step polls every 25s for d while bob's client talks, then reclaims.
	step := func(d time.Duration) Removed {
		t.Helper()
		for passed := time.Duration(0); passed < d; passed += 25 * time.Second {
			pctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
			err := cl.Ping(pctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			h.poll(min(25*time.Second, d-passed))
		}
		r, err := h.eng.ReclaimIdle(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := step(10 * time.Second); len(r.Events) != 0 {
		t.Fatalf("reclaimed at once: %+v", r.Events)
	}
	if r := step(50 * time.Minute); len(r.Events) != 0 {
		t.Fatalf("reclaimed before idle_expiry: %+v", r.Events)
	}
	r := step(15 * time.Minute)
	if len(r.Events) != 1 || r.Events[0].PublicKey != a.Peer.PublicKey || r.Events[0].Reason != store.ReasonIdle {
		t.Fatalf("reclaimed %+v; want alice's config, idle", r.Events)
	}
	runs := h.runsOf("D", a.Peer.PublicKey)
	if len(runs) != 1 || runs[0]["VPN_REASON"] != "idle" {
		t.Fatalf("config D runs %v; want one with VPN_REASON=idle", runs)
	}
	if _, err := h.st.GetPeer(h.ctx, b.Peer.PublicKey); err != nil {
		t.Fatalf("talking config reclaimed: %v", err)
	}

	// a restart: the new process has seen nothing yet
	c := h.create("carol")
	h.eng = h.newEngine(nil)
	h.useSessionScript()
	h.clock.Advance(3 * time.Hour)
	if r := step(10 * time.Second); len(r.Events) != 0 {
		t.Fatalf("reclaimed right after a restart: %+v", r.Events)
	}
	if r := step(30 * time.Minute); len(r.Events) != 0 {
		t.Fatalf("reclaimed before the restarted daemon watched for idle_expiry: %+v", r.Events)
	}
	r = step(31 * time.Minute)
	if len(r.Events) != 1 || r.Events[0].PublicKey != c.Peer.PublicKey {
		t.Fatalf("reclaimed %+v; want carol's config", r.Events)
	}
	if _, err := h.st.GetPeer(h.ctx, b.Peer.PublicKey); err != nil {
		t.Fatalf("talking config reclaimed: %v", err)
	}
}

// The activity a poll takes from memory follows the configs: a config
// created (its peer added to the device) after a poll is tracked at the
// next one, and a removed one is dropped.
func TestSessionsCacheFollowsConfigs(t *testing.T) {
	h := newSessionHarness(t, "")
	a := h.create("alice")
	if sp := h.poll(10 * time.Second); !sp.Reloaded {
		t.Fatal("first poll did not read the store")
	}
	if sp := h.poll(10 * time.Second); sp.Reloaded {
		t.Fatal("unchanged interface read from the store again")
	}
	b := h.create("bob")
	cl := h.connect(b)
	defer cl.Close()
	sp := h.poll(10 * time.Second)
	if !sp.Reloaded || len(sp.Changes) != 1 || sp.Changes[0].Key != b.Peer.PublicKey || sp.Changes[0].Kind != store.SessionStart {
		t.Fatalf("poll after a create = %+v; want bob's session start, read from the store", sp)
	}
	if _, err := h.eng.Delete(h.ctx, a.Peer.PublicKey); err != nil {
		t.Fatal(err)
	}
	if sp := h.poll(10 * time.Second); !sp.Reloaded || sp.Online != 1 {
		t.Fatalf("poll after a delete = %+v", sp)
	}
	// the safety net: read again after activityCacheAge whatever happens
	for elapsed := time.Duration(0); elapsed < activityCacheAge; elapsed += 30 * time.Second {
		pctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
		err := cl.Ping(pctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		sp = h.poll(30 * time.Second)
	}
	if !sp.Reloaded {
		t.Fatalf("no store read after %s", activityCacheAge)
	}
}
