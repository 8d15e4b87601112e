package netspec

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// fakeManager is a swarm manager holding one swarm network; removing it
// makes every node agent report the network removed, as agents do.
type fakeManager struct {
	mu       sync.Mutex
	id       string              // the swarm network's ID; "" when none
	services map[string][]string // service → network targets
	onRemove func()
	removed  []string
}

func (m *fakeManager) SwarmNetworkID(context.Context, string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.id, nil
}

func (m *fakeManager) ServiceNetworks(context.Context) (map[string][]string, error) {
	return m.services, nil
}

func (m *fakeManager) RemoveNetwork(_ context.Context, id string) error {
	m.mu.Lock()
	m.removed, m.id = append(m.removed, id), ""
	m.mu.Unlock()
	if m.onRemove != nil {
		m.onRemove()
	}
	return nil
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	spec := Spec{Name: "web", Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"), Parent: "eth1", IPAM: PerNode, PerNodeSize: 16}
	setup := func(t *testing.T) *Store {
		st := NewStore(kvtest.New())
		if err := st.Create(ctx, spec); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"n1", "n2"} {
			if err := st.Report(ctx, "web", NodeState{ID: n, Node: n, State: StateReady}); err != nil {
				t.Fatal(err)
			}
		}
		return st
	}
	t.Run("absent", func(t *testing.T) {
		st := NewStore(kvtest.New())
		ok, err := st.Remove(ctx, &fakeManager{}, "web", Removal{Timeout: time.Second})
		if ok || err != nil {
			t.Fatalf("Remove = %v, %v; want false, nil", ok, err)
		}
	})
	t.Run("in use", func(t *testing.T) {
		st := setup(t)
		m := &fakeManager{id: "abc", services: map[string][]string{"b": {"web"}, "a": {"abc"}, "c": {"other"}}}
		_, err := st.Remove(ctx, m, "web", Removal{Timeout: time.Second})
		if err == nil || !strings.Contains(err.Error(), "used by service(s) a, b;") {
			t.Fatalf("err = %v, want one naming services a and b", err)
		}
		if s, _, _ := st.Get(ctx, "web"); s.Deleting || len(m.removed) > 0 {
			t.Errorf("refused removal changed state: deleting %v, removed %v", s.Deleting, m.removed)
		}
	})
	t.Run("removed on every node", func(t *testing.T) {
		st := setup(t)
		m := &fakeManager{id: "abc"}
		m.onRemove = func() {
			for _, n := range []string{"n1", "n2"} {
				st.Report(ctx, "web", NodeState{ID: n, Node: n, State: StateRemoved})
			}
		}
		ok, err := st.Remove(ctx, m, "web", Removal{Timeout: 5 * time.Second, Poll: time.Millisecond})
		if !ok || err != nil {
			t.Fatalf("Remove = %v, %v", ok, err)
		}
		if _, ok, _ := st.Get(ctx, "web"); ok || len(m.removed) != 1 || m.removed[0] != "abc" {
			t.Errorf("after Remove: spec present %v, swarm networks removed %v; want gone, [abc]", ok, m.removed)
		}
	})
	t.Run("with the network's trees", func(t *testing.T) {
		// Its IPAM pools go with it, once every node took its part down;
		// another network's, named alike, stay.
		kv := kvtest.New()
		st := NewStore(kv)
		if err := st.Create(ctx, spec); err != nil {
			t.Fatal(err)
		}
		st.Report(ctx, "web", NodeState{ID: "n1", Node: "n1", State: StateReady})
		for _, k := range []string{"underlay/ipam/web/v4/blocks/10.9.0.0_28", "underlay/ipam/web/v4/pressure", "underlay/ipam/web2/v4/blocks/10.8.0.0_28"} {
			kv.Put(ctx, k, []byte("{}"))
		}
		m := &fakeManager{id: "abc"}
		m.onRemove = func() {
			if pairs, _ := kv.List(ctx, "underlay/ipam/web/"); len(pairs) != 2 {
				t.Errorf("the network's pools while nodes take it down: %d keys, want them kept until every node is done", len(pairs))
			}
			st.Report(ctx, "web", NodeState{ID: "n1", Node: "n1", State: StateRemoved})
		}
		ok, err := st.Remove(ctx, m, "web", Removal{Timeout: 5 * time.Second, Poll: time.Millisecond, Trees: []string{"underlay/ipam/web/"}})
		if !ok || err != nil {
			t.Fatalf("Remove = %v, %v", ok, err)
		}
		if pairs, _ := kv.List(ctx, "underlay/ipam/"); len(pairs) != 1 || pairs[0].Key != "underlay/ipam/web2/v4/blocks/10.8.0.0_28" {
			t.Errorf("IPAM keys after removing web: %v, want only web2's", pairs)
		}
	})
	t.Run("a name that is none", func(t *testing.T) {
		st := setup(t)
		for _, name := range []string{"", "../networks", "web/"} {
			if _, err := st.Remove(ctx, &fakeManager{}, name, Removal{Timeout: time.Second, Trees: []string{"underlay/ipam/" + name + "/"}}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) {
				t.Errorf("Remove(%q) = %v, want refused naming it", name, err)
			}
		}
	})
	t.Run("recreated by a sync begun before the mark", func(t *testing.T) {
		// The leader's agent read the spec before rm marked it deleting and
		// found the swarm network gone once rm had removed it: it creates
		// it again, then its next sync reads the mark and takes its part
		// down (seen on Docker 29: "swarm network left behind").
		st := setup(t)
		m := &fakeManager{id: "abc"}
		m.onRemove = func() {
			m.onRemove = nil
			m.mu.Lock()
			m.id = "def"
			m.mu.Unlock()
			for _, n := range []string{"n1", "n2"} {
				st.Report(ctx, "web", NodeState{ID: n, Node: n, State: StateRemoved})
			}
		}
		ok, err := st.Remove(ctx, m, "web", Removal{Timeout: 5 * time.Second, Poll: time.Millisecond})
		if !ok || err != nil {
			t.Fatalf("Remove = %v, %v", ok, err)
		}
		if id, _ := m.SwarmNetworkID(ctx, "web"); id != "" || !slices.Equal(m.removed, []string{"abc", "def"}) {
			t.Errorf("after Remove: swarm network %q left, removed %v; want none left, [abc def] removed", id, m.removed)
		}
	})
	for _, bad := range []struct{ name, doc string }{
		{"undecodable", "{not json"},
		{"another network's", `{"name":"other","subnet":"10.8.0.0/24","gateway":"10.8.0.1","parent":"eth2","ipam":"per-node","per_node_size":16}`},
	} {
		// The fix agents give for a spec they refuse is rm: it takes the
		// network apart by its name, which is all teardown needs.
		t.Run("unreadable spec, "+bad.name, func(t *testing.T) {
			kv := kvtest.New()
			st := NewStore(kv)
			if err := st.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			st.Report(ctx, "web", NodeState{ID: "n1", Node: "n1", State: StateInvalid})
			kv.Put(ctx, SpecKey("web"), []byte(bad.doc))
			m := &fakeManager{}
			done := make(chan struct{})
			agentCtx, stop := context.WithCancel(ctx)
			go func() {
				defer close(done)
				// The node's agent: it takes apart what a deleting spec names.
				for agentCtx.Err() == nil {
					specs, _, _ := st.ReadSpecs(ctx)
					if len(specs) == 1 && specs[0].Deleting && CheckStored(specs)["web"] == nil {
						st.Report(ctx, "web", NodeState{ID: "n1", Node: "n1", State: StateRemoved})
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			ok, err := st.Remove(ctx, m, "web", Removal{Timeout: 5 * time.Second, Poll: time.Millisecond})
			stop()
			<-done
			if !ok || err != nil {
				t.Fatalf("Remove = %v, %v; want the unreadable spec removed", ok, err)
			}
			if _, ok, err := st.Get(ctx, "web"); ok || err != nil {
				t.Errorf("after Remove: spec present %v (%v)", ok, err)
			}
		})
	}
	t.Run("a node never takes it down", func(t *testing.T) {
		st := setup(t)
		m := &fakeManager{id: "abc", onRemove: func() { st.Report(ctx, "web", NodeState{ID: "n1", Node: "n1", State: StateRemoved}) }}
		_, err := st.Remove(ctx, m, "web", Removal{Timeout: 20 * time.Millisecond, Poll: time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "node(s) n2 did not take it down") {
			t.Fatalf("err = %v, want one naming n2", err)
		}
		if s, ok, _ := st.Get(ctx, "web"); !ok || !s.Deleting {
			t.Errorf("spec after a timeout: present %v, deleting %v; want kept, marked deleting", ok, s.Deleting)
		}
	})
	t.Run("a node reports its removal failed", func(t *testing.T) {
		// The node's agent runs and says why it cannot take its part
		// down: rm's error says it too, beside the nodes that said
		// nothing.
		st := setup(t)
		why := "removal failed: network web: remove config-only network: configuration network \"web-config\" is in use"
		m := &fakeManager{id: "abc", onRemove: func() { st.Report(ctx, "web", NodeState{ID: "n1", Node: "n1", State: StateError, Error: why}) }}
		_, err := st.Remove(ctx, m, "web", Removal{Timeout: 20 * time.Millisecond, Poll: time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "node(s) n1, n2 did not take it down") || !strings.Contains(err.Error(), "n1 reports: "+why) {
			t.Fatalf("err = %v, want one naming n1 and n2, and what n1 reports", err)
		}
	})
}

type errLister struct{ nets []DockerNetwork }

func (l errLister) NetworksNamed(context.Context, string) ([]DockerNetwork, error) {
	if l.nets == nil {
		return nil, errors.New("no docker")
	}
	return l.nets, nil
}

func TestCheckNameFree(t *testing.T) {
	ctx := context.Background()
	if err := CheckNameFree(ctx, errLister{}, "web"); err != nil {
		t.Errorf("no Docker: %v, want nil", err)
	}
	nets := []DockerNetwork{
		{ID: "0123456789abcdef", Name: "web-config", Driver: "macvlan", Labels: map[string]string{LabelManaged: "true"}},
		{ID: "fedcba9876543210", Name: "webby", Driver: "bridge"},
	}
	if err := CheckNameFree(ctx, errLister{nets}, "web"); err != nil {
		t.Errorf("managed and other names only: %v, want nil", err)
	}
	nets = append(nets, DockerNetwork{ID: "aaaaaaaaaaaaaaaa", Name: "web", Driver: "bridge"})
	if err := CheckNameFree(ctx, errLister{nets}, "web"); err == nil || !strings.Contains(err.Error(), "aaaaaaaaaaaa (driver bridge)") {
		t.Errorf("unmanaged network of that name: %v, want an error naming it", err)
	}
}

// TestMarkDeletingKeepsWhatCanBeRead: a spec the agents refuse as
// unreadable for a field no underlay writes is marked deleting with what
// can be read of it: its parent names the VLAN the agents made for it
// (before the field was refused) and remove on rm.
func TestMarkDeletingKeepsWhatCanBeRead(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := NewStore(kv)
	kv.Put(ctx, SpecKey("web"), []byte(`{"name":"web","subnet":"10.9.0.0/24","gateway":"10.9.0.1","parent":"eth1.40","ipam":"cluster","mtu":9000}`))
	if err := st.MarkDeleting(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	s, ok, err := st.Get(ctx, "web")
	if err != nil || !ok || !s.Deleting || s.Parent != "eth1.40" || s.IPAM != Cluster {
		t.Errorf("after MarkDeleting: %+v, %v, %v; want it deleting, parent eth1.40, cluster IPAM", s, ok, err)
	}
	// One naming another network keeps only its name.
	kv.Put(ctx, SpecKey("alias"), []byte(`{"name":"other","parent":"eth2"}`))
	if err := st.MarkDeleting(ctx, "alias"); err != nil {
		t.Fatal(err)
	}
	if s, ok, err := st.Get(ctx, "alias"); err != nil || !ok || !s.Deleting || s.Parent != "" {
		t.Errorf("alias after MarkDeleting: %+v, %v, %v; want it deleting, with nothing but its name", s, ok, err)
	}
}

// TestRemoveWaitsForReportsItCannotRead: Consul leaves out of a listing,
// in silence, the keys the token may not read. network rm, its token
// unable to read a node's report, counted that node as having taken the
// network down, and deleted the spec while the node's part stayed up. A
// node known by its facts or its lease whose report is not listed is
// read directly: one that cannot be read holds the removal, named.
func TestRemoveWaitsForReportsItCannotRead(t *testing.T) {
	ctx := context.Background()
	spec := Spec{Name: "web", Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"), Parent: "eth1", IPAM: PerNode, PerNodeSize: 16}
	for _, known := range []string{"facts", "lease"} {
		t.Run("known by its "+known, func(t *testing.T) {
			kv := kvtest.New()
			st := NewStore(kv)
			if err := st.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"n1", "n2"} {
				if known == "facts" {
					if err := st.PublishNode(ctx, NodeFacts{ID: n, Node: n, Holder: Holder{Instance: n}}); err != nil {
						t.Fatal(err)
					}
				} else if _, _, err := st.Lease(ctx, spec, n); err != nil {
					t.Fatal(err)
				}
				if err := st.Report(ctx, "web", NodeState{ID: n, Node: n, State: StateReady}); err != nil {
					t.Fatal(err)
				}
			}
			kv.DenyRead(nodesPrefix("web") + "n2")
			m := &fakeManager{id: "abc"}
			m.onRemove = func() { st.Report(ctx, "web", NodeState{ID: "n1", Node: "n1", State: StateRemoved}) }
			_, err := st.Remove(ctx, m, "web", Removal{Timeout: 50 * time.Millisecond, Poll: time.Millisecond})
			if err == nil || !strings.Contains(err.Error(), "n2") {
				t.Errorf("Remove with n2's report unreadable = %v, want it held, naming n2", err)
			}
			if _, ok, _ := st.Get(ctx, "web"); !ok {
				t.Errorf("the spec was deleted while n2's report could not be read")
			}
			// Readable again, and removed: the removal completes.
			kv.DenyRead()
			st.Report(ctx, "web", NodeState{ID: "n2", Node: "n2", State: StateRemoved})
			if _, err := st.Remove(ctx, m, "web", Removal{Timeout: 5 * time.Second, Poll: time.Millisecond}); err != nil {
				t.Errorf("Remove once n2's report is readable and removed: %v", err)
			}
		})
	}
}
