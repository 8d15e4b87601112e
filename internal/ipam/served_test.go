package ipam

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestReleasePoolForgetsThePool: the plugin's record of every pool it
// served (what a late release of an address falls back on once its spec
// is gone) never shrank: ReleasePool, which Docker calls as it removes a
// network from the node, was answered without the plugin. It is now
// dropped by the pool's last ReleasePool: one per RequestPool, or, for a
// pool served with none (after an agent's restart Docker does not ask for
// pools again), the first, once the node holds none of its addresses
// (Docker releases them first). Through the gate, once open, too.
func TestReleasePoolForgetsThePool(t *testing.T) {
	for _, through := range []string{"plugin", "gate"} {
		t.Run(through, func(t *testing.T) {
			kv := kvtest.New()
			pl, call := pluginFor(t, kv, "n1")
			if through == "gate" {
				g := NewGate("127.0.0.1:8500", 0, nil)
				g.Open(pl)
				srv := httptest.NewServer(g.Handler())
				t.Cleanup(srv.Close)
				call = caller(t, srv.URL)
			}
			must := mustCall(t, call)
			served := func(id string) bool { _, ok := pl.served(id); return ok }
			v4 := must("IpamDriver.RequestPool", map[string]any{"Pool": "10.90.0.0/24"})["PoolID"].(string)
			if again := must("IpamDriver.RequestPool", map[string]any{"Pool": "10.90.0.0/24"})["PoolID"]; again != v4 { // a second Docker network of it
				t.Fatalf("second RequestPool of the pool: pool ID %v, want the first's %s", again, v4)
			}
			v6 := must("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v6"}) // served with no RequestPool
			must("IpamDriver.ReleasePool", map[string]any{"PoolID": v4})
			if !served(v4) {
				t.Errorf("%s forgotten at its first ReleasePool of two RequestPools", v4)
			}
			must("IpamDriver.ReleasePool", map[string]any{"PoolID": v4})
			must("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v6", "Address": v6["Address"]})
			must("IpamDriver.ReleasePool", map[string]any{"PoolID": "lan/v6"})
			must("IpamDriver.ReleasePool", map[string]any{"PoolID": "gone/v4"})
			for _, id := range []string{v4, "lan/v6"} {
				if served(id) {
					t.Errorf("%s still recorded as served after its last ReleasePool", id)
				}
			}
		})
	}
}

// requestPool asks pl for the pool of subnet, as Docker does as it makes
// a network, and returns the pool ID it answers.
func requestPool(t *testing.T, pl *Plugin, subnet string) string {
	t.Helper()
	out, err := pl.requestPool(context.Background(), poolRequest{Pool: subnet})
	if err != nil {
		t.Fatal(err)
	}
	return out.(map[string]any)["PoolID"].(string)
}

// caller calls methods of the plugin protocol served at url.
func caller(t *testing.T, url string) func(method string, req any) (int, map[string]any) {
	return func(method string, req any) (int, map[string]any) {
		t.Helper()
		code, out, err := post(url, method, req)
		if err != nil {
			t.Fatal(err)
		}
		return code, out
	}
}

// pausedPools is a PoolSource whose next PoolSeen, once paused is set,
// tells entered it has read and waits for resume before it answers: a
// request held between its reading of the specs and its record of the
// pool.
type pausedPools struct {
	PoolSource
	paused          atomic.Bool
	entered, resume chan struct{}
}

func (p *pausedPools) PoolSeen(id string) (Pool, netip.Addr, error) {
	pool, gw, err := p.PoolSource.PoolSeen(id)
	if p.paused.CompareAndSwap(true, false) {
		p.entered <- struct{}{}
		<-p.resume
	}
	return pool, gw, err
}

// TestReleaseInFlightBringsNoPoolBack: a ReleaseAddress that had read the
// specs when the pool's last ReleasePool dropped it (Docker releasing an
// address again as it removes the network) recorded the pool afresh, with
// no RequestPool left: a pool Docker had released was served again, for
// as long as the agent ran. The release is still answered; the pool stays
// dropped.
func TestReleaseInFlightBringsNoPoolBack(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, _ := pluginFor(t, kv, "n1")
	paused := &pausedPools{PoolSource: pl.Pools, entered: make(chan struct{}), resume: make(chan struct{})}
	pl.Pools = paused
	if _, err := pl.requestPool(ctx, poolRequest{Pool: "10.90.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	out, err := pl.requestAddress(ctx, addressRequest{PoolID: "lan/v4"})
	if err != nil {
		t.Fatal(err)
	}
	release := releaseRequest{PoolID: "lan/v4", Address: out.(map[string]any)["Address"].(string)}
	if _, err := pl.releaseAddress(ctx, release); err != nil {
		t.Fatal(err)
	}
	paused.paused.Store(true)
	done := make(chan error, 1)
	go func() { _, err := pl.releaseAddress(ctx, release); done <- err }() // again
	<-paused.entered
	if _, err := pl.releasePool(ctx, poolRelease{PoolID: "lan/v4"}); err != nil {
		t.Fatal(err)
	}
	close(paused.resume)
	if err := <-done; err != nil {
		t.Errorf("release again: %v, want answered", err)
	}
	if e, ok := pl.served("lan/v4"); ok {
		t.Errorf("lan/v4 recorded again, with %d RequestPools, by a release in flight at its last ReleasePool", e.requests)
	}
}

// TestPoolOfAGoneNetworkIsForgotten: a pool whose network went from the
// specs without Docker's ReleasePool (dockerd down as the network was
// removed, or the agent restarted between) stayed recorded as served for
// as long as the agent ran, for a late release to fall back on. It is now
// dropped at the plugin's next ReleasePool, of any pool, once its spec is
// gone and this node holds none of its addresses (network rm deletes
// them with the spec); while the node holds one (a spec deleted by hand,
// the blocks left), it is kept, and a late release frees it from there.
func TestPoolOfAGoneNetworkIsForgotten(t *testing.T) {
	for _, byHand := range []bool{false, true} {
		t.Run(map[bool]string{false: "network rm", true: "spec deleted by hand"}[byHand], func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			pl, _ := pluginFor(t, kv, "n1")
			st := pl.Pools.(SpecPools).Store
			id := requestPool(t, pl, "10.90.0.0/24")
			out, err := pl.requestAddress(ctx, addressRequest{PoolID: id})
			if err != nil {
				t.Fatal(err)
			}
			addr := out.(map[string]any)["Address"].(string)
			if byHand {
				err = kv.Delete(ctx, netspec.KVPrefix+lanSpec.Name+"/spec")
			} else {
				err = st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name))
			}
			if err != nil {
				t.Fatal(err)
			}
			// The agent's reconciler reads the specs at every change.
			if _, err := st.ReadListing(ctx); err != nil {
				t.Fatal(err)
			}
			// Another network's ReleasePool: the plugin's next call.
			if _, err := pl.releasePool(ctx, poolRelease{PoolID: "other/v4"}); err != nil {
				t.Fatal(err)
			}
			_, served := pl.served(id)
			if !byHand {
				if served {
					t.Errorf("%s still recorded as served, its spec and addresses gone", id)
				}
				return
			}
			if !served {
				t.Fatalf("%s forgotten while this node holds %s in it", id, addr)
			}
			if _, err := pl.releaseAddress(ctx, releaseRequest{PoolID: id, Address: addr}); err != nil {
				t.Fatalf("late release of %s: %v, want freed from the pool as served", addr, err)
			}
			all, err := Allocations(ctx, kv, PoolOf4(lanSpec))
			if err != nil {
				t.Fatal(err)
			}
			if al, ok := all[netip.MustParsePrefix(addr).Addr()]; ok {
				t.Errorf("%s still allocated (%v) after its late release", addr, al)
			}
			if _, err := pl.releasePool(ctx, poolRelease{PoolID: "other/v4"}); err != nil {
				t.Fatal(err)
			}
			if _, served := pl.served(id); served {
				t.Errorf("%s still recorded as served, its spec gone and its last address released", id)
			}
		})
	}
}

// TestReleasePoolAfterARestartKeepsAPoolInUse: a plugin restarted (with
// the agent) while dockerd holds two networks of one pool has lost their
// RequestPools: the first network's ReleasePool dropped the pool, by its
// count, while the other network's containers still held addresses of
// it; once its spec was gone (deleted by hand, the blocks left), their
// late releases were refused, and the addresses stayed allocated for
// good. The last ReleasePool by the count now drops a pool only once this
// node holds none of its addresses, read afresh from Consul.
func TestReleasePoolAfterARestartKeepsAPoolInUse(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	before, _ := pluginFor(t, kv, "n1")
	var held []string // one container in each of two Docker networks of lan/v4
	var id string
	for range 2 {
		id = requestPool(t, before, "10.90.0.0/24")
		out, err := before.requestAddress(ctx, addressRequest{PoolID: id})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, out.(map[string]any)["Address"].(string))
	}
	pl, _ := pluginFor(t, kv, "n1") // the agent restarted
	st := pl.Pools.(SpecPools).Store
	// A third network of the pool is made, and removed; so is the first,
	// its container's address released first.
	if again := requestPool(t, pl, "10.90.0.0/24"); again != id {
		t.Fatalf("RequestPool after the restart: pool ID %s, want %s as before", again, id)
	}
	if _, err := pl.releasePool(ctx, poolRelease{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := pl.releaseAddress(ctx, releaseRequest{PoolID: id, Address: held[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := pl.releasePool(ctx, poolRelease{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	if _, ok := pl.served(id); !ok {
		t.Errorf("%s forgotten while the second network's container holds %s in it", id, held[1])
	}
	// Its spec deleted by hand: the second network's container goes.
	if err := kv.Delete(ctx, netspec.KVPrefix+lanSpec.Name+"/spec"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReadListing(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pl.releaseAddress(ctx, releaseRequest{PoolID: id, Address: held[1]}); err != nil {
		t.Errorf("late release of %s: %v, want freed from the pool as served", held[1], err)
	}
	all, err := Allocations(ctx, kv, PoolOf4(lanSpec))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range held {
		if al, ok := all[netip.MustParsePrefix(a).Addr()]; ok {
			t.Errorf("%s still allocated (%v) after its release", a, al)
		}
	}
	if _, err := pl.releasePool(ctx, poolRelease{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	if _, ok := pl.served(id); ok {
		t.Errorf("%s still recorded as served after its last ReleasePool, none of its addresses held", id)
	}
}

// TestReleasePoolKeepsAPoolARequestIsTaking: an address request under way
// when the pool's last ReleasePool reads this node's addresses of it may
// hold one that Consul does not show yet (a network of the pool the
// plugin never saw requested, after a restart): the pool is kept, and
// the request's address can be released from it once the spec is gone.
func TestReleasePoolKeepsAPoolARequestIsTaking(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, _ := pluginFor(t, kv, "n1")
	paused := &pausedPools{PoolSource: pl.Pools, entered: make(chan struct{}), resume: make(chan struct{})}
	pl.Pools = paused
	id := requestPool(t, pl, "10.90.0.0/24")
	first, err := pl.requestAddress(ctx, addressRequest{PoolID: id}) // recorded
	if err != nil {
		t.Fatal(err)
	}
	paused.paused.Store(true)
	type answer struct {
		out any
		err error
	}
	done := make(chan answer, 1)
	go func() {
		out, err := pl.requestAddress(ctx, addressRequest{PoolID: id, Address: "10.90.0.200"})
		done <- answer{out, err}
	}()
	<-paused.entered
	// The first address released, then the pool: another network's.
	if _, err := pl.releaseAddress(ctx, releaseRequest{PoolID: id, Address: first.(map[string]any)["Address"].(string)}); err != nil {
		t.Fatal(err)
	}
	if _, err := pl.releasePool(ctx, poolRelease{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	close(paused.resume)
	if a := <-done; a.err != nil {
		t.Fatalf("request under way: %v", a.err)
	}
	if _, ok := pl.served(id); !ok {
		t.Errorf("%s forgotten while a request of it was under way", id)
	}
}

// TestPoolRequestedAsTheNewestListingLagsIsKept: the specs' newest
// listing is the one begun last, which may have been answered before one
// begun earlier. A RequestPool of a network made again under a removed
// one's name read the specs (begun first, answered after the network was
// made), while the agent's reconciler's listing (begun after, answered
// before) lacks it. The plugin's next ReleasePool took the pool for one
// of a gone network and dropped it, with the RequestPool's count. A
// listing that may be older than the pool's reading no longer says it
// is gone.
func TestPoolRequestedAsTheNewestListingLagsIsKept(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, _ := pluginFor(t, kv, "n1")
	st := pl.Pools.(SpecPools).Store
	if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	entered, resume := make(chan struct{}), make(chan struct{})
	kv.Hook = func(call string, keys []string) error {
		if call == "list" && keys[0] == netspec.KVPrefix && armed.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-resume
		}
		return nil
	}
	armed.Store(true)
	done := make(chan error, 1)
	var id string
	go func() {
		out, err := pl.requestPool(ctx, poolRequest{Pool: lanSpec.Subnet.String()})
		if err == nil {
			id = out.(map[string]any)["PoolID"].(string)
		}
		done <- err
	}()
	<-entered // the RequestPool's listing has begun
	// The reconciler's, begun after and answered at once, before the
	// network is made again.
	if _, err := st.ReadListing(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, lanSpec); err != nil {
		t.Fatal(err)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatalf("RequestPool of the network made again: %v", err)
	}
	if _, err := pl.releasePool(ctx, poolRelease{PoolID: "other/v4"}); err != nil {
		t.Fatal(err)
	}
	if e, ok := pl.served(id); !ok || e.requests != 1 {
		t.Errorf("%s recorded %t with %d RequestPools after another pool's ReleasePool; want kept with its 1: its network stands, made again", id, ok, e.requests)
	}
}

// TestPoolOfAnUnreadableSpecIsNotForgotten: a token that lost its read
// rights on a network's spec and pool (a policy narrowed) lists neither,
// in silence: the pool was taken for one whose network is gone, holding
// none of this node's addresses, and forgotten, so that a late release of
// the address this node holds there found no pool served. A spec missing
// from the listing is now confirmed gone by a direct read of its key,
// which the token's refusal leaves unconfirmed: the pool is kept.
func TestPoolOfAnUnreadableSpecIsNotForgotten(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, _ := pluginFor(t, kv, "n1")
	st := pl.Pools.(SpecPools).Store
	id := requestPool(t, pl, "10.90.0.0/24")
	if _, err := pl.requestAddress(ctx, addressRequest{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	kv.DenyRead(netspec.SpecKey(lanSpec.Name), NetworkPrefix(lanSpec.Name))
	if _, err := st.ReadListing(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pl.releasePool(ctx, poolRelease{PoolID: "other/v4"}); err != nil {
		t.Fatal(err)
	}
	if _, served := pl.served(id); !served {
		t.Errorf("%s forgotten when its spec and pool became unreadable: taken for a network gone", id)
	}
}
