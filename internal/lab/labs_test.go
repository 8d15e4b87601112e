package lab

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
	if _, _, err := prepare(root, vm, noRoutes); err == nil || !strings.Contains(err.Error(), "1 netns nodes") {
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
	p, fresh, err := prepare(root, Config{Name: "c", Nodes: 1, NoAgent: true}.withDefaults(), noRoutes)
	if err != nil {
		t.Fatal(err)
	}
	taken := netip.MustParsePrefix(other.UnderlaySubnet)
	if !fresh || p.mgmt.Overlaps(taken) || p.mgmt == netip.MustParsePrefix("172.31.2.0/24") {
		t.Errorf("lab c took management subnet %s (fresh %v); lab b holds %s (underlay) and 172.31.2.0/24", p.mgmt, fresh, taken)
	}
}

// TestPrepareRefusesAnOverlappingUnderlay: a new lab whose underlay subnet
// overlaps a recorded lab's is refused, saying how to remove that lab: its
// record outlives a reboot or a killed run, and before, the error left the
// reader to find that the subnet stays taken until `lab down`.
func TestPrepareRefusesAnOverlappingUnderlay(t *testing.T) {
	root := t.TempDir()
	other := Config{Name: "old", Nodes: 1, NoAgent: true, UnderlaySubnet: "10.251.0.0/16"}.withDefaults()
	if err := writeRecord(root, &record{Config: other, Management: netip.MustParsePrefix("172.31.3.0/24")}); err != nil {
		t.Fatal(err)
	}
	_, _, err := prepare(root, Config{Name: "new", Nodes: 1, NoAgent: true, UnderlaySubnet: "10.251.0.0/16"}.withDefaults(), noRoutes)
	if err == nil || !strings.Contains(err.Error(), "lab old's underlay subnet 10.251.0.0/16") || !strings.Contains(err.Error(), "underlay lab down --name old") {
		t.Errorf("prepare = %v, want refused naming lab old and how to remove it", err)
	}
	if _, err := readRecord(root, "new"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused lab was recorded: %v", err)
	}
}

// TestRootsOf: a lab of the same name running from another state root is
// found by its holders' directories. Labs of one name share links and
// firewall rules: before, a second one came up on the first one's bridges,
// and `lab down` of either removed both's links and rules.
func TestRootsOf(t *testing.T) {
	dirs := []string{
		"/var/lib/underlay/lab/demo/node1", "/var/lib/underlay/lab/demo/node2", // this root's
		"/tmp/ci/labs/demo/node1", "/tmp/ci/labs/demo/net", // another root's demo
		"/tmp/ci/labs/other/node1",  // another lab
		"/srv/demo/node1/../node1/", // another root, unclean
		"relative/demo/node1",       // not a lab's directory
	}
	got := rootsOf(dirs, "/var/lib/underlay/lab/", "demo")
	if want := []string{"/tmp/ci/labs", "/srv"}; !slices.Equal(got, want) {
		t.Errorf("rootsOf = %q, want %q", got, want)
	}
}

// TestIntegrationPrepareRefusesANameRunningElsewhere: a new lab whose name
// a lab of another state root runs under is refused, naming that root.
// Holders count only when root's: it runs as root, with the integration
// tests.
func TestIntegrationPrepareRefusesANameRunningElsewhere(t *testing.T) {
	if os.Getenv("UNDERLAY_INTEGRATION") != "1" {
		t.Skip("integration test: run with UNDERLAY_INTEGRATION=1 (scripts/test.sh does)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("UNDERLAY_INTEGRATION=1 but not root: a holder counts only when root's")
	}
	other := t.TempDir()
	dir := filepath.Join(other, "twin", "node1")
	cmd := exec.Command("bash", "-c", "read -t 60 _", dir)
	cmd.Args[0] = holderName
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); len(cmdline(cmd.Process.Pid)) == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	cfg := Config{Name: "twin", Nodes: 1, NoAgent: true}.withDefaults()
	_, _, err = prepare(t.TempDir(), cfg, func() ([]netip.Prefix, error) { return usedPrefixes(cfg.Name) })
	if err == nil || !strings.Contains(err.Error(), other) {
		t.Fatalf("prepare = %v, want refused naming %s", err, other)
	}
}

// noRoutes is a machine with no routes but the lab's own.
func noRoutes() ([]netip.Prefix, error) { return nil, nil }

// TestPrepareRefusesARepairOntoRoutedAddresses: `lab up` on a recorded lab
// checks its subnets against the machine's routes as a new lab's are: the
// record outlives a reboot, after which the machine may route them
// elsewhere (a VPN, a LAN it joined). Before, only a new lab's were
// checked: the repair put the lab's gateway on them, and the machine's
// traffic to those real hosts went into the lab. Nothing is changed.
func TestPrepareRefusesARepairOntoRoutedAddresses(t *testing.T) {
	for _, tc := range []struct{ name, routed, want string }{
		{"underlay", "10.0.0.0/8", "10.200.0.0/16"},
		{"management", "172.31.0.0/16", "172.31.9.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			cfg := Config{Name: "old", Nodes: 1, NoAgent: true}.withDefaults()
			if err := writeRecord(root, &record{Config: cfg, Management: netip.MustParsePrefix("172.31.9.0/24")}); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(filepath.Join(root, "old", "lab.json"))
			if err != nil {
				t.Fatal(err)
			}
			grown := cfg
			grown.Nodes = 2
			routed := func() ([]netip.Prefix, error) { return []netip.Prefix{netip.MustParsePrefix(tc.routed)}, nil }
			_, _, err = prepare(root, grown, routed)
			if err == nil || !strings.Contains(err.Error(), tc.routed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("prepare = %v, want refused naming %s and %s", err, tc.want, tc.routed)
			}
			if after, _ := os.ReadFile(filepath.Join(root, "old", "lab.json")); string(after) != string(before) {
				t.Errorf("the refused up rewrote the record:\n%s", after)
			}
			if _, _, err := prepare(root, grown, noRoutes); err != nil {
				t.Errorf("repair with the subnets free: %v", err)
			}
		})
	}
}
