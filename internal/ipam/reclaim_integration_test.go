package ipam_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationReclaimPreviousAgentSpares: spares of a node's previous
// agent (killed before it could record or return them) are never handed
// out again by the new one; the reclaimer makes the one a real container
// holds a task address and returns the others, as it does leaked tasks;
// and it records again an address a container holds that Consul lost.
func TestIntegrationReclaimPreviousAgentSpares(t *testing.T) {
	testenv.Require(t)
	d := testenv.Docker(t)
	c := testenv.StartConsul(t)
	kv := consul.NewKV(c.Client())
	st := netspec.NewStore(kv)
	ctx := testenv.Context(t, time.Minute)
	subnet, _, prefix := testenv.Subnets(t)
	name := "ulr" + testenv.ID(t)
	testenv.MacvlanNetwork(t, d, testenv.Network{Name: name, Subnet: subnet})
	spec := netspec.Spec{Name: name, Subnet: netip.MustParsePrefix(subnet), Gateway: netip.MustParseAddr(prefix + "1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	if err := st.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	pool, _ := ipam.PoolOf(spec, false)

	// What the killed agent left: spares .20 (Docker got it: a container
	// holds it) and .21, and a task address .22 nobody holds.
	held, spare, task := netip.MustParseAddr(prefix+"20"), netip.MustParseAddr(prefix+"21"), netip.MustParseAddr(prefix+"22")
	long := time.Now().Add(-time.Hour).UTC()
	doc := ipam.BlockDoc{Node: "n1", Allocs: map[string]ipam.Alloc{
		held.String():  {Node: "n1", At: long, Kind: ipam.KindSpare, Gen: "killed"},
		spare.String(): {Node: "n1", At: long, Kind: ipam.KindSpare, Gen: "killed"},
		task.String():  {Node: "n1", At: long, Kind: ipam.KindTask},
	}}
	raw, _ := json.Marshal(doc)
	block := netip.PrefixFrom(held, 28).Masked()
	key := ipam.KVPrefix + name + "/v4/blocks/" + strings.ReplaceAll(block.String(), "/", "_")
	if res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: key, Value: raw}}); err != nil || !res.OK {
		t.Fatalf("write block: %v %v", res, err)
	}
	testenv.RunContainer(t, d, testenv.Container{Name: "ulr" + testenv.ID(t), Networks: []string{name}, IPs: map[string]string{name: held.String()}})

	// The new agent keeps spares of its own and never hands out the old ones.
	alloc := ipam.NewAllocator(kv, "n1", nil)
	keepCtx, stop := context.WithCancel(ctx)
	defer stop()
	go alloc.KeepSpares(keepCtx, 4, slog.Default())
	for range 10 {
		a, err := alloc.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
		if err != nil {
			t.Fatal(err)
		}
		if a == held || a == spare || a == task {
			t.Fatalf("the new agent handed out %s, left by the killed one", a)
		}
	}

	r := &ipam.Reclaimer{Alloc: alloc, Pools: ipam.SpecPools{Store: st}, Held: dockerhost.NewSource(d),
		Grace: 200 * time.Millisecond, Log: slog.Default()}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		if err := r.Sweep(ctx); err != nil {
			return false, err.Error()
		}
		all, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			return false, err.Error()
		}
		h, s, k := all[held], all[spare], all[task]
		return h.Kind == ipam.KindTask && h.Node == "n1" && s.Node == "" && k.Node == "",
			fmt.Sprintf("held %+v, spare %+v, task %+v: want a task, freed, freed", h, s, k)
	})

	// Consul loses the record (an older snapshot restored): the address
	// the container holds is recorded again.
	if err := kv.Delete(ctx, key); err != nil {
		t.Fatalf("delete block: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		if err := r.Sweep(ctx); err != nil {
			return false, err.Error()
		}
		all, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			return false, err.Error()
		}
		return all[held].Kind == ipam.KindTask && all[held].Node == "n1", fmt.Sprintf("held %s recorded as %+v", held, all[held])
	})
}
