package netspec_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

func newStore(t *testing.T) *netspec.Store {
	testenv.Require(t)
	c := testenv.StartConsul(t)
	return netspec.NewStore(consul.NewKV(c.Client()))
}

func testSpec(name string) netspec.Spec {
	return netspec.Spec{
		Name: name, Subnet: netip.MustParsePrefix("10.60.0.0/24"), Gateway: netip.MustParseAddr("10.60.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 16,
	}
}

// TestIntegrationLeaseRace has 20 nodes race for the 16 ranges of a /24 on a
// real Consul: every range goes to exactly one node and the last four are
// told the ranges are exhausted.
func TestIntegrationLeaseRace(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	s := testSpec("race")
	if err := st.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[netip.Prefix][]string{}
	exhausted := 0
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("node%02d", i)
			b, _, err := st.Lease(ctx, s, node)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, netspec.ErrRangesExhausted):
				exhausted++
			case err != nil:
				t.Error(err)
			default:
				got[b] = append(got[b], node)
			}
		}()
	}
	wg.Wait()
	blocks := netspec.Blocks(s)
	if len(got) != len(blocks) || exhausted != 20-len(blocks) {
		t.Errorf("%d ranges leased and %d nodes refused, want %d and %d", len(got), exhausted, len(blocks), 20-len(blocks))
	}
	for b, nodes := range got {
		if len(nodes) != 1 {
			t.Errorf("range %s leased to %v", b, nodes)
		}
	}
	leases, err := st.Leases(ctx, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	for b, nodes := range got {
		if leases[b] != nodes[0] {
			t.Errorf("stored lease of %s is %q, want %q", b, leases[b], nodes[0])
		}
	}
	// A node asking again keeps its range; a released range is reused.
	node := got[blocks[3]][0]
	if b, _, err := st.Lease(ctx, s, node); err != nil || b != blocks[3] {
		t.Errorf("second lease for %s = %s, %v; want %s", node, b, err, blocks[3])
	}
	if released, err := st.Release(ctx, s.Name, node); err != nil || len(released) != 1 || released[0] != blocks[3] {
		t.Fatalf("release of %s: %v, %v; want %s released", node, released, err, blocks[3])
	}
	if b, _, err := st.Lease(ctx, s, "newcomer"); err != nil || b != blocks[3] {
		t.Errorf("lease after release = %s, %v; want the freed %s", b, err, blocks[3])
	}
}

func TestIntegrationStoreCreate(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if err := st.Create(ctx, testSpec("a")); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, testSpec("a")); !errors.Is(err, netspec.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	b := testSpec("b")
	b.Parent = "eth2"
	if err := st.Create(ctx, b); err == nil {
		t.Error("created b although its subnet overlaps a")
	}
	b.Subnet, b.Gateway = netip.MustParsePrefix("10.61.0.0/24"), netip.MustParseAddr("10.61.0.1")
	if err := st.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	specs, err := st.Specs(ctx)
	if err != nil || len(specs) != 2 || specs[0].Name != "a" || specs[1].Subnet != b.Subnet {
		t.Errorf("specs = %+v, %v", specs, err)
	}
	if err := st.Report(ctx, "a", netspec.NodeState{Node: "n1", State: "ready"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := st.Get(ctx, "a"); ok {
		t.Error("spec a still present after Delete")
	}
	if states, _ := st.NodeStates(ctx, "a"); len(states) != 0 {
		t.Errorf("node states of a after Delete: %v", states)
	}
}

// TestIntegrationCreateRace has 20 `network create`s race on a real Consul,
// each with its own name and parent but overlapping subnets (and two of
// them with one name): the overlap check and the name claim are one atomic
// step, so exactly one network is created and every other create is refused,
// naming the network it overlaps or the name taken.
func TestIntegrationCreateRace(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	var mu sync.Mutex
	var created []string
	var refused []error
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := testSpec(fmt.Sprintf("race%02d", min(i, 18))) // race18 twice
			s.Parent = fmt.Sprintf("eth%d", i)
			s.Subnet = netip.MustParsePrefix("10.62.0.0/24") // the same /24 …
			if i%2 == 1 {
				s.Subnet = netip.MustParsePrefix("10.62.0.0/23") // … or a /23 around it
			}
			s.Gateway = netip.MustParseAddr("10.62.0.1")
			<-start
			err := st.Create(ctx, s)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused = append(refused, err)
			} else {
				created = append(created, s.Name)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(created) != 1 || len(refused) != 19 {
		t.Fatalf("created %v and refused %d, want exactly one created", created, len(refused))
	}
	for _, err := range refused {
		if !strings.Contains(err.Error(), "overlaps network \""+created[0]+"\"") && !errors.Is(err, netspec.ErrExists) {
			t.Errorf("refused with %v, want an overlap with %s or the name taken", err, created[0])
		}
	}
	specs, err := st.Specs(ctx)
	if err != nil || len(specs) != 1 {
		t.Errorf("stored specs %+v (%v), want only %s", specs, err, created[0])
	}
}
