package reconcile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/store"
)

// TestUntrustedScriptPath: once a directory above the script is writable
// by everyone, a create is refused before its script runs (nothing kept,
// nothing on the device), and a D delivery counts as a failed attempt
// naming the directory; both work again once the directory is fixed.
func TestUntrustedScriptPath(t *testing.T) {
	h := newHarness(t, harnessOpts{real: true})
	alice := h.create("alice")
	runsBefore := len(h.scriptRuns())
	above := filepath.Dir(h.dir)
	fi, err := os.Stat(above)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(above, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(above, fi.Mode().Perm()) })

	_, err = h.eng.Create(h.ctx, CreateRequest{UserID: "bob", ProfileID: "staff"})
	var ue *hooks.UnsafeError
	if !errors.Is(err, ErrScriptUnsafe) || !errors.As(err, &ue) || ue.Path != above || ue.Mode != 0o777 {
		t.Fatalf("create: %v, want ErrScriptUnsafe naming %s mode 0777", err, above)
	}
	if peers, _ := h.st.ListPeers(h.ctx, store.PeerFilter{UserID: "bob"}); len(peers) != 0 {
		t.Fatalf("rows kept: %+v", peers)
	}
	if evs, _ := h.st.ListEvents(h.ctx, store.EventFilter{UserID: "bob"}); len(evs) != 0 {
		t.Fatalf("events kept: %+v", evs)
	}
	if n := len(h.read().Peers); n != 1 {
		t.Fatalf("%d peers on the device, want alice's only", n)
	}

	r, err := h.eng.Delete(h.ctx, alice.Peer.PublicKey)
	if err != nil || len(r.Events) != 1 || r.Delivery.Done != 0 {
		t.Fatalf("delete: %+v, %v", r, err)
	}
	if n := len(h.scriptRuns()); n != runsBefore {
		t.Fatalf("the script ran %d times below an untrusted directory", n-runsBefore)
	}
	ev := h.event(r.Events[0].ID)
	if ev.Status != store.StatusPending || ev.Attempts != 1 || !strings.Contains(ev.LastError, above) || !strings.Contains(ev.LastError, "mode 0777") {
		t.Fatalf("D event after the refused run: %+v", ev)
	}

	if err := os.Chmod(above, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute)
	if d, err := h.eng.Deliver(h.ctx); err != nil || d.Done != 1 {
		t.Fatalf("deliver after the fix: %+v, %v", d, err)
	}
	h.create("bob")
}
