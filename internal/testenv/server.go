package testenv

import (
	"context"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/enginetest"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// Device is what the harnesses do to a device: the engine's reads and
// writes, and RemovePeers (wg.Client and enginetest.Device have them).
type Device interface {
	Read(ctx context.Context, name string) (*wg.Device, error)
	Apply(ctx context.Context, name string, p wg.Plan) (wg.Counts, error)
	Link(ctx context.Context, name string) (wg.LinkState, error)
	SetDevice(ctx context.Context, name string, key *wgtypes.Key, port *int) error
	RemovePeers(ctx context.Context, name string, keys []wgtypes.Key) error
}

// Runner runs the hook script (hooks.Runner and enginetest.Runner do).
type Runner interface {
	RunWith(ctx context.Context, v hooks.Vars, o hooks.RunOptions) hooks.Result
}

// Server is the WireGuard interface a harness runs on and the device
// client that reaches it: a real userspace device (wgtest) and a
// wg.Client, or an interface of an in-memory device (Fake set).
type Server struct {
	Name      string
	Port      int
	PublicKey wgtypes.Key
	Device    Device
	Real      *wgtest.Server     // nil on the in-memory device
	Fake      *enginetest.Device // nil on a real device
}

// NewServer starts the interface with peers preset: a real one when real
// is set or Fakes says no (then it needs root and skips without), else an
// in-memory one. Everything is closed at the test's cleanup.
func NewServer(t testing.TB, real bool, peers ...wg.Wanted) *Server {
	t.Helper()
	if real || !Fakes() {
		wgtest.RequireRoot(t)
		srv := wgtest.NewServer(t, wgtest.WithPeers(peers...))
		dev, err := wg.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dev.Close() })
		return &Server{Name: srv.Name, Port: srv.Port, PublicKey: srv.PublicKey, Device: dev, Real: srv}
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	fake := enginetest.NewDevice()
	s := &Server{Name: wgtest.UniqueName("wgf"), Port: 51820, PublicKey: key.PublicKey(), Device: fake, Fake: fake}
	fake.AddInterface(s.Name, enginetest.Interface{PrivateKey: key, ListenPort: s.Port, Peers: peers})
	return s
}

// Runner returns the runner of cfg's [hooks]: the real script on a real
// device, else an in-memory runner calling script (nil: no script) with
// the same timeout and concurrency.
func (s *Server) Runner(t testing.TB, cfg *config.Config, script enginetest.Script) Runner {
	t.Helper()
	if s.Fake != nil {
		return enginetest.NewRunner(enginetest.RunnerConfig{Script: script, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency})
	}
	r, err := hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Close removes the interface.
func (s *Server) Close() {
	if s.Real != nil {
		s.Real.Close()
		return
	}
	s.Fake.DeleteInterface(s.Name)
}

// Restart restarts the implementation: same key and port, no peers, a new
// UAPI socket.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if s.Real != nil {
		s.Real.Restart(t)
		return
	}
	if err := s.Fake.Restart(s.Name); err != nil {
		t.Fatal(err)
	}
}

// NewClient starts a real client of the real device; the test fails on
// the in-memory one (ask for a real server).
func (s *Server) NewClient(t testing.TB, opts ...wgtest.ClientOption) *wgtest.ClientDev {
	t.Helper()
	if s.Real == nil {
		t.Fatal("a client needs a real device: ask for a real server")
	}
	return s.Real.NewClient(t, opts...)
}
