package lab

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestLabsRoot: every call on Labs{Root} reads the labs under that root,
// not under DefaultStateRoot (issue 10: StateRoot was honoured by Up only).
func TestLabsRoot(t *testing.T) {
	root := t.TempDir()
	labs := At(root)
	cfg := Config{Name: "rooted", Nodes: 2, VM: true, UnderlayBin: "/bin/true"}.withDefaults()
	if err := writeRecord(root, &record{Config: cfg, Management: netip.MustParsePrefix("172.31.9.0/24")}); err != nil {
		t.Fatal(err)
	}
	got, err := labs.RecordedConfig("rooted")
	if err != nil || got.Nodes != 2 || !got.VM {
		t.Fatalf("RecordedConfig under %s = %+v, %v", root, got, err)
	}
	if _, err := RecordedConfig("rooted"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the lab is found under the default root too: %v", err)
	}
	st, err := labs.GetStatus(context.Background(), "rooted")
	if err != nil {
		t.Fatal(err)
	}
	if st.StateDir != filepath.Join(root, "rooted") || st.Kind != KindVM || len(st.Nodes) != 2 {
		t.Errorf("status: dir %s, kind %s, %d nodes", st.StateDir, st.Kind, len(st.Nodes))
	}
	if n := st.Nodes[1]; n.State != StateStopped || n.UnderlayParent != "bond0.40" || !strings.HasPrefix(n.DockerHost, "tcp://172.31.9.12:") {
		t.Errorf("node2 of a stopped VM lab: %+v", n)
	}
	if p, err := labs.LogPath("rooted", "node1", "console"); err != nil || p != filepath.Join(root, "rooted", "node1", "console.log") {
		t.Errorf("LogPath = %q, %v", p, err)
	}
	if _, err := labs.LogPath("rooted", "node1", "holder"); err == nil {
		t.Error("a VM node has a holder log")
	}
	if _, err := labs.Command(context.Background(), "rooted", "node1", "true"); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("command on a stopped VM: %v", err)
	}
	left := labs.Leftovers("rooted")
	if !slices.Contains(left, "directory "+filepath.Join(root, "rooted")) {
		t.Errorf("leftovers %v lack the lab's directory under %s", left, root)
	}
}

func TestPrepareRefusesAnotherKind(t *testing.T) {
	root := t.TempDir()
	cfg := Config{Name: "kinds", Nodes: 1, NoAgent: true}.withDefaults()
	if err := writeRecord(root, &record{Config: cfg, Management: netip.MustParsePrefix("172.31.9.0/24")}); err != nil {
		t.Fatal(err)
	}
	vm := cfg
	vm.VM, vm.UnderlayBin = true, "/bin/true"
	if _, _, err := prepare(root, vm); err == nil || !strings.Contains(err.Error(), "1 netns nodes") {
		t.Errorf("VM up over a namespace lab: %v", err)
	}
}

// TestPrepareAvoidsOtherLabsUnderlay: a new lab's management /24 is not
// taken from another lab's underlay subnet, even while that lab's bridges
// are gone (after a reboot): its next up would put the same gateway on
// two bridges.
func TestPrepareAvoidsOtherLabsUnderlay(t *testing.T) {
	root := t.TempDir()
	other := Config{Name: "b", Nodes: 1, NoAgent: true, UnderlaySubnet: "172.31.0.0/23"}.withDefaults()
	if err := writeRecord(root, &record{Config: other, Management: netip.MustParsePrefix("172.31.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	p, fresh, err := prepare(root, Config{Name: "c", Nodes: 1, NoAgent: true}.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	taken := netip.MustParsePrefix(other.UnderlaySubnet)
	if !fresh || p.mgmt.Overlaps(taken) || p.mgmt == netip.MustParsePrefix("172.31.2.0/24") {
		t.Errorf("lab c took management subnet %s (fresh %v); lab b holds %s (underlay) and 172.31.2.0/24", p.mgmt, fresh, taken)
	}
}
