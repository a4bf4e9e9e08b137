package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api"
	"github.com/wgkeeper/wgkeeper/wg"
)

func (c *cliEnv) devicePeers() int {
	c.t.Helper()
	d, err := c.dev.Read(context.Background(), c.srv.Name)
	if err != nil {
		c.t.Fatal(err)
	}
	return len(d.Peers)
}

// A store that lacks the device's peers (a fresh database beside a full
// device): reconcile and housekeeping remove nothing and fail saying
// why; status shows the block; reconcile -force IFACE removes them.
func TestCommandsOrphanGuard(t *testing.T) {
	c := newCLIEnv(t, "remove")
	c.ok("migrate")
	var add []wg.Wanted
	for i := range 50 {
		k, _ := wgtypes.GeneratePrivateKey()
		add = append(add, wg.Wanted{PublicKey: k.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.99.0.%d/32", i+2))}})
	}
	if _, err := c.dev.Apply(context.Background(), c.srv.Name, wg.Plan{Add: add}); err != nil {
		t.Fatal(err)
	}
	iface := c.srv.Name

	// status prints everything, then exits 1 naming the block.
	var s statusJSON
	code, out, errOut := c.run("status", "-json")
	if err := json.Unmarshal([]byte(out), &s); err != nil || code != ExitFailure || !strings.Contains(errOut, iface+": blocked (50 orphans") {
		t.Fatalf("status -json: exit %d, %v\n%s", code, err, errOut)
	}
	if si := s.Interfaces[0]; !si.Blocked || si.Orphans == nil || *si.Orphans != 50 || *si.OrphanRemovalLimit != 10 {
		t.Fatalf("status -json: blocked %v, orphans %v", si.Blocked, si.Orphans)
	}
	if code, out, _ := c.run("status"); code != ExitFailure || !strings.Contains(out, "blocked: 50 orphans") || !strings.Contains(out, "reconcile -force "+iface) {
		t.Fatalf("status: exit %d\n%s", code, out)
	}

	code, out, errOut = c.run("reconcile")
	if code != ExitFailure || !strings.Contains(errOut, "orphan removal blocked") || !strings.Contains(out, "blocked: 50 orphans") {
		t.Fatalf("reconcile: exit %d\n%s\n%s", code, out, errOut)
	}
	if n := c.devicePeers(); n != 50 {
		t.Fatalf("reconcile left %d of 50 peers", n)
	}
	code, out, errOut = c.run("housekeeping")
	if code != ExitFailure || !strings.Contains(out, iface+": blocked: 50 orphans") || !strings.Contains(errOut, "orphan removal blocked") {
		t.Fatalf("housekeeping: exit %d\n%s\n%s", code, out, errOut)
	}
	if n := c.devicePeers(); n != 50 {
		t.Fatalf("housekeeping left %d of 50 peers", n)
	}
	dry := c.ok("reconcile", "-dry-run")
	if !strings.Contains(dry, "0 to remove") || strings.Count(dry, "\nx ") != 50 {
		t.Fatalf("dry run:\n%s", dry)
	}
	if code, _, errOut := c.run("reconcile", "-force"); code != ExitUsage || !strings.Contains(errOut, "-force needs the interfaces named") {
		t.Fatalf("-force without an interface: exit %d %s", code, errOut)
	}
	if code, _, _ := c.run("reconcile", "-force", "nosuch0"); code != ExitUsage {
		t.Fatalf("-force with an unknown interface: exit %d", code)
	}

	out = c.ok("reconcile", "-force", iface)
	if !strings.Contains(out, "50 to remove") || !strings.Contains(out, "forced: 50 orphans removed") {
		t.Fatalf("reconcile -force:\n%s", out)
	}
	if n := c.devicePeers(); n != 0 {
		t.Fatalf("%d peers left after reconcile -force", n)
	}
	c.ok("reconcile")
	c.ok("housekeeping")
	c.json(&s, "status")
	if s.Interfaces[0].Blocked {
		t.Fatal("still blocked")
	}
}

// orphans = "keep": a foreign peer holds 10.99.0.2; peer add hands out .3
// and status shows what the orphan keeps.
func TestCommandsKeptOrphanAddress(t *testing.T) {
	c := newCLIEnv(t, "keep")
	c.ok("migrate")
	k, _ := wgtypes.GeneratePrivateKey()
	foreign := k.PublicKey()
	if _, err := c.dev.Apply(context.Background(), c.srv.Name, wg.Plan{Add: []wg.Wanted{{PublicKey: foreign, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}}}}); err != nil {
		t.Fatal(err)
	}
	out := c.ok("peer", "add", "-user", "alice", "-profile", "staff")
	if !strings.Contains(out, "Address = 10.99.0.3/16, fd00:99::3/64") {
		t.Fatalf("peer add got another address:\n%s", out)
	}
	var s statusJSON
	c.json(&s, "status")
	var row api.OrphanPeer
	for _, p := range s.Interfaces[0].OrphanPeers {
		if p.PublicKey == foreign.String() {
			row = p
		}
	}
	if orphanState(row) != "orphan (keeps 10.99.0.2)" || !row.Kept || fmt.Sprint(row.Keeps) != "[10.99.0.2]" {
		t.Fatalf("orphan row: %+v", row)
	}
	if human := c.ok("status"); !strings.Contains(human, "orphan (keeps 10.99.0.2)") || !strings.Contains(human, "1 orphan (kept)") {
		t.Fatalf("status:\n%s", human)
	}
	if dry := c.ok("reconcile", "-dry-run"); !strings.Contains(dry, "= "+foreign.String()+" orphan kept (keeps 10.99.0.2)") {
		t.Fatalf("dry run:\n%s", dry)
	}
}
