package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
	"github.com/wgkeeper/wgkeeper/wg"
)

// The crash tests re-run this test binary as a child that performs one
// create or delete against the parent's store and device, and SIGKILLs
// itself at a named point of the lifecycle.
const (
	envCrashOp     = "WGKEEPER_TEST_CRASH_OP"
	envCrashAt     = "WGKEEPER_TEST_CRASH_AT"
	envCrashConfig = "WGKEEPER_TEST_CRASH_CONFIG"
	envCrashKey    = "WGKEEPER_TEST_CRASH_KEY"
	envCrashUser   = "WGKEEPER_TEST_CRASH_USER"
)

func TestMain(m *testing.M) {
	if op := os.Getenv(envCrashOp); op != "" {
		if err := crashChild(op); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(3)
		}
		os.Exit(0) // the crash point was never reached
	}
	os.Exit(m.Run())
}

func crashChild(op string) error {
	ctx := context.Background()
	cfg, err := config.Load(os.Getenv(envCrashConfig))
	if err != nil {
		return err
	}
	st, err := sqlite.Open(ctx, cfg.Database, sqlite.Options{Create: true})
	if err != nil {
		return err
	}
	dev, err := wg.NewClient()
	if err != nil {
		return err
	}
	run, err := hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency})
	if err != nil {
		return err
	}
	at := os.Getenv(envCrashAt)
	e, err := New(Options{Config: cfg, Store: st, Device: dev, Runner: run, crash: func(p string) {
		if p == at {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}})
	if err != nil {
		return err
	}
	switch op {
	case "create":
		_, err = e.Create(ctx, CreateRequest{UserID: "crash", ProfileID: "staff"})
	case "delete":
		k, perr := ParseKey(os.Getenv(envCrashKey))
		if perr != nil {
			return perr
		}
		_, err = e.Delete(ctx, k)
	case "revoke":
		_, err = e.RevokeUser(ctx, os.Getenv(envCrashUser))
	default:
		err = fmt.Errorf("unknown op %q", op)
	}
	return err
}

func TestCrashRecovery(t *testing.T) {
	cases := []struct{ op, at string }{
		{"create", "create:inserted"}, // before the connect script started
		{"create", "create:started"},  // its start recorded, outcome unknown
		{"create", "create:script-ran"},
		{"create", "create:activated"},
		{"delete", "delete:stored"},
		{"delete", "delete:device"},
		{"delete", "deliver:script-ran"},
	}
	for _, tc := range cases {
		t.Run(tc.op+"@"+tc.at, func(t *testing.T) {
			h := newHarness(t, harnessOpts{real: true})
			keepA := h.create("alice")
			victim := h.create("bob")
			cl := h.connect(keepA)

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(),
				envCrashOp+"="+tc.op, envCrashAt+"="+tc.at,
				envCrashConfig+"="+h.cfg.Path, envCrashKey+"="+victim.Peer.PublicKey.String())
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child did not die at %s: %v\n%s", tc.at, err, out)
			}

			// Long after the crash: leases expired, pending rows stale.
			h.clock.Set(time.Now().UTC().Add(time.Hour))
			hsBefore, _ := h.onDevice(keepA.Peer.PublicKey)
			s, err := h.eng.Housekeeping(h.ctx, true)
			if err != nil {
				t.Fatalf("housekeeping: %v (%+v)", err, s)
			}
			h.assertInSync()

			// Every config whose C ran and that is gone has a D; nothing is
			// on the device without a C.
			present := map[string]bool{}
			peers, _ := h.st.ListPeers(h.ctx, store.PeerFilter{})
			for _, p := range peers {
				present[p.PublicKey.String()] = true
			}
			cRan := map[string]bool{}
			dRan := map[string]int{}
			for _, r := range h.scriptRuns() {
				switch r["VPN_EVENT"] {
				case "C":
					cRan[r["VPN_CONNECTION_ID"]] = true
				case "D":
					dRan[r["VPN_CONNECTION_ID"]]++
				}
			}
			for k := range cRan {
				if !present[k] && dRan[k] == 0 {
					t.Errorf("config %s: C ran, config gone, but no D ran", k)
				}
			}
			for _, p := range h.read().Peers {
				if !cRan[p.PublicKey.String()] {
					t.Errorf("peer %s on the device without a connect script run", p.PublicKey)
				}
			}
			// A create that died before its connect script started is
			// cleaned without a D: the script never saw its C. Once the
			// start is recorded the outcome is unknown: D.
			if tc.op == "create" {
				ds, err := h.st.ListEvents(h.ctx, store.EventFilter{UserID: "crash", Kind: store.KindDisconnect})
				if err != nil {
					t.Fatal(err)
				}
				cs, _ := h.st.ListEvents(h.ctx, store.EventFilter{UserID: "crash", Kind: store.KindConnect})
				switch tc.at {
				case "create:inserted":
					if len(ds) != 0 || len(cs) != 0 {
						t.Errorf("a config whose connect script never started: C events %+v, D events %+v; want none", cs, ds)
					}
				case "create:started", "create:script-ran":
					if len(ds) != 1 || ds[0].Reason != store.ReasonStale || ds[0].Status != store.StatusDone {
						t.Errorf("D events %+v, want one delivered with reason stale", ds)
					}
					if len(cs) != 1 || cs[0].LastError != store.NoteStaleConnect {
						t.Errorf("C events %+v, want one noted %q", cs, store.NoteStaleConnect)
					}
				}
			}
			if tc.op == "delete" {
				if present[victim.Peer.PublicKey.String()] {
					t.Error("deleted config came back")
				}
				if dRan[victim.Peer.PublicKey.String()] == 0 {
					t.Error("deleted config never got its D")
				}
			}
			// The untouched peer kept its session throughout.
			if p, ok := h.onDevice(keepA.Peer.PublicKey); !ok || !p.LastHandshake.Equal(hsBefore.LastHandshake) {
				t.Error("untouched peer lost or reset by recovery")
			}
			ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
			defer cancel()
			if err := cl.Ping(ctx); err != nil {
				t.Errorf("untouched client lost traffic: %v", err)
			}
		})
	}
}
