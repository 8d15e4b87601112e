package netspec_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestCreateRaceIsAtomic: creates racing with overlapping subnets never both
// succeed, even when each one's reads all happen before any write (the
// interleaving that let two through when the check and the write were two
// steps).
func TestCreateRaceIsAtomic(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	// Hold every create's first write until all of them have read: the
	// worst interleaving, made certain.
	const n = 8
	var reads sync.WaitGroup
	reads.Add(n)
	gate := make(chan struct{})
	var once sync.Once
	held := map[string]bool{}
	var mu sync.Mutex
	kv.Hook = func(call string, keys []string) error {
		if call != "txn" || !strings.HasSuffix(keys[len(keys)-1], "/spec") {
			return nil
		}
		mu.Lock()
		first := !held[keys[len(keys)-1]]
		held[keys[len(keys)-1]] = true
		mu.Unlock()
		if first {
			reads.Done()
			once.Do(func() { go func() { reads.Wait(); close(gate) }() })
			<-gate
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := spec(fmt.Sprintf("n%d", i))
			s.Parent = fmt.Sprintf("eth%d", i)
			errs[i] = st.Create(ctx, s)
		}()
	}
	wg.Wait()
	kv.Hook = nil
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !strings.Contains(err.Error(), "overlaps network"):
			t.Errorf("refused with %v, want an overlap", err)
		}
	}
	specs, _ := st.Specs(ctx)
	if ok != 1 || len(specs) != 1 {
		t.Errorf("%d creates succeeded, %d specs stored; want 1 and 1", ok, len(specs))
	}
	// Delete frees the subnet for the next create.
	if err := st.Delete(ctx, specs[0].Name); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, spec("again")); err != nil {
		t.Errorf("create after delete: %v", err)
	}
}

func spec(name string) netspec.Spec {
	return netspec.Spec{Name: name, Subnet: netip.MustParsePrefix("10.60.0.0/24"), Gateway: netip.MustParseAddr("10.60.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 16}
}

// TestReadSpecsSkipsBadDocuments: one undecodable spec is reported apart
// and hides no other network.
func TestReadSpecsSkipsBadDocuments(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(ctx, spec("good")); err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, netspec.KVPrefix+"broken/spec", []byte("{not json"))
	// A spec under another network's name: agents would make a network
	// that `network rm` cannot find, and whose ranges and reports sit
	// under another name than its spec.
	other := spec("elsewhere")
	other.Subnet, other.Gateway, other.Parent = netip.MustParsePrefix("10.62.0.0/24"), netip.MustParseAddr("10.62.0.1"), "eth3"
	doc, err := json.Marshal(other)
	if err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, netspec.KVPrefix+"alias/spec", doc)
	specs, bad, err := st.ReadSpecs(ctx)
	if err != nil || len(specs) != 1 || specs[0].Name != "good" || len(bad) != 2 || bad[0].Name != "alias" || bad[1].Name != "broken" {
		t.Fatalf("specs %v, bad %v, %v: want good, and alias and broken apart", specs, bad, err)
	}
	if msg := bad[0].Err.Error(); !strings.Contains(msg, `"elsewhere"`) || !strings.Contains(msg, netspec.KVPrefix+"alias/spec") {
		t.Errorf("alias refused with %q: want the key and the name it holds", msg)
	}
	if _, _, err := st.Get(ctx, "alias"); err == nil || !strings.Contains(err.Error(), `"elsewhere"`) {
		t.Errorf("get alias: %v, want the name it holds refused", err)
	}
	if err := st.Create(ctx, func() netspec.Spec {
		s := spec("broken")
		s.Subnet = netip.MustParsePrefix("10.61.0.0/24")
		s.Gateway = netip.MustParseAddr("10.61.0.1")
		s.Parent = "eth2"
		return s
	}()); !errors.Is(err, netspec.ErrExists) {
		t.Errorf("create over an unreadable spec: %v, want ErrExists", err)
	}
}

// TestReadSpecsRefusesUnknownFields: a field no underlay writes (a typo
// by hand, or a newer version's) is a constraint the agents would not
// honour: "ip_ragne" was dropped, and containers took the whole subnet.
func TestReadSpecsRefusesUnknownFields(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(ctx, spec("good")); err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, netspec.KVPrefix+"typo/spec", []byte(`{"name":"typo","subnet":"10.63.0.0/24","gateway":"10.63.0.1","parent":"eth3",`+
		`"ipam":"per-node","per_node_size":16,"ip_ragne":"10.63.0.128/25"}`))
	specs, bad, err := st.ReadSpecs(ctx)
	if err != nil || len(specs) != 1 || specs[0].Name != "good" || len(bad) != 1 || bad[0].Name != "typo" {
		t.Fatalf("specs %v, bad %v, %v: want good, and typo apart", specs, bad, err)
	}
	if msg := bad[0].Err.Error(); !errors.Is(bad[0].Err, netspec.ErrBadSpec) || !strings.Contains(msg, `"ip_ragne"`) || !strings.Contains(msg, netspec.KVPrefix+"typo/spec") {
		t.Errorf("typo refused with %q: want the key and the field", msg)
	}
}

// TestLeasesAreKeyedByIdentity: two nodes with one name (cloned VMs) but
// their own swarm node IDs hold two ranges.
func TestLeasesAreKeyedByIdentity(t *testing.T) {
	ctx := context.Background()
	st := netspec.NewStore(kvtest.New())
	s := spec("lan")
	if err := st.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	a, _, err := st.Lease(ctx, s, "swarm-id-a")
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := st.Lease(ctx, s, "swarm-id-b")
	if err != nil || a == b {
		t.Errorf("two identities leased %s and %s (%v), want two ranges", a, b, err)
	}
	for _, id := range []string{"swarm-id-a", "swarm-id-b"} {
		st.Report(ctx, "lan", netspec.NodeState{ID: id, Node: "clone", State: netspec.StateReady})
	}
	if states, _ := st.NodeStates(ctx, "lan"); len(states) != 2 {
		t.Errorf("reports of two nodes named clone: %+v, want two", states)
	}
}

func TestDecideClaim(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	me := netspec.Holder{Instance: "me", BootID: "b", PIDNS: "p", PID: 10, Start: 1}
	facts := func(h netspec.Holder, age time.Duration) *netspec.NodeFacts {
		return &netspec.NodeFacts{ID: "x", Holder: h, UpdatedAt: now.Add(-age)}
	}
	other := netspec.Holder{Instance: "other", BootID: "b", PIDNS: "p", PID: 20, Start: 5}
	remote := netspec.Holder{Instance: "remote", BootID: "elsewhere", PID: 20, Start: 5}
	remover := netspec.Holder{Instance: netspec.Remover}
	alive := func(int, uint64) bool { return true }
	dead := func(int, uint64) bool { return false }
	ahead := func(h netspec.Holder) *netspec.NodeFacts {
		return &netspec.NodeFacts{ID: "x", Holder: h, UpdatedAt: now.AddDate(1, 0, 0)}
	}
	for _, c := range []struct {
		name       string
		cur, first *netspec.NodeFacts
		watched    time.Duration // how long since first was seen
		running    func(int, uint64) bool
		want       netspec.ClaimVerdict
	}{
		{"free", nil, nil, 0, alive, netspec.ClaimTake},
		{"mine", facts(me, time.Hour), nil, 0, alive, netspec.ClaimTake},
		{"legacy facts without a holder", facts(netspec.Holder{}, 0), nil, 0, alive, netspec.ClaimTake},
		{"holder's process gone (killed, restarted)", facts(other, 0), nil, 0, dead, netspec.ClaimTake},
		{"holder on another host, fresh", facts(remote, time.Second), nil, 0, dead, netspec.ClaimWait},
		{"holder on another host, stale", facts(remote, time.Minute), nil, 0, dead, netspec.ClaimTake},
		{"holder here, running, fresh", facts(other, time.Second), nil, 0, alive, netspec.ClaimWait},
		{"holder refreshed while we waited", facts(remote, 0), facts(remote, 5*time.Second), 0, dead, netspec.ClaimRefuse},
		{"a new holder meanwhile", facts(other, 0), facts(remote, 5*time.Second), 0, alive, netspec.ClaimWait},
		// A holder whose clock is ahead (its host's clock set back since,
		// or another host's) stamps facts that never look old here: it is
		// judged by whether it refreshes them while watched.
		{"holder stamped ahead, first look", ahead(remote), nil, 0, dead, netspec.ClaimWait},
		{"holder stamped ahead, not refreshed for a while", ahead(remote), ahead(remote), 10 * time.Second, dead, netspec.ClaimWait},
		{"holder stamped ahead, not refreshed for stale", ahead(remote), ahead(remote), 31 * time.Second, dead, netspec.ClaimTake},
		{"holder refreshed with a clock set back", facts(remote, 0), ahead(remote), 31 * time.Second, dead, netspec.ClaimRefuse},
		// node rm stamps its hold with the clock of the machine it runs
		// on: it is judged by watching only.
		{"node rm, stamped long ago, first look", facts(remover, time.Hour), nil, 0, dead, netspec.ClaimWait},
		{"node rm, not refreshed for a while", facts(remover, time.Hour), facts(remover, time.Hour), 10 * time.Second, dead, netspec.ClaimWait},
		{"node rm, not refreshed for stale", facts(remover, time.Hour), facts(remover, time.Hour), 31 * time.Second, dead, netspec.ClaimTake},
		{"node rm renewed its hold", facts(remover, 0), facts(remover, time.Hour), 31 * time.Second, dead, netspec.ClaimWait},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := netspec.DecideClaim(c.cur, c.first, now.Add(-c.watched), me, now, 30*time.Second, c.running); got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

// TestClaimRefusesASecondLiveAgent: a second agent claiming an identity
// whose holder keeps its facts fresh is refused, naming the holder; once
// the holder stops, its identity is taken over, and the old holder learns
// it at its next heartbeat.
func TestClaimRefusesASecondLiveAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := netspec.NewStore(kvtest.New())
	first := netspec.NodeFacts{ID: "id1", Node: "n", Holder: netspec.Holder{Instance: "one", Host: "hostA"}}
	opts := netspec.ClaimOptions{Stale: 300 * time.Millisecond, Poll: 10 * time.Millisecond, Running: func(int, uint64) bool { return true }}
	if err := st.Claim(ctx, first, opts); err != nil {
		t.Fatal(err)
	}
	beat, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for beat.Err() == nil {
			st.PublishNode(ctx, first)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	second := netspec.NodeFacts{ID: "id1", Node: "n", Holder: netspec.Holder{Instance: "two", Host: "hostB"}}
	err := st.Claim(ctx, second, opts)
	if !errors.Is(err, netspec.ErrIdentityHeld) || !strings.Contains(err.Error(), "hostA") {
		t.Fatalf("second claim while the first beats: %v, want ErrIdentityHeld naming hostA", err)
	}
	stop()
	<-done
	if err := st.Claim(ctx, second, opts); err != nil {
		t.Fatalf("claim after the holder stopped: %v", err)
	}
	if err := st.PublishNode(ctx, first); !errors.Is(err, netspec.ErrIdentityHeld) {
		t.Errorf("the old holder's heartbeat: %v, want ErrIdentityHeld", err)
	}
}

// TestNodeStatesShowUnreadableReports: a report that cannot be decoded
// (by hand, a bug) is listed as that node's error, naming the key and its
// fix, and hides no other node's report: listing them failed whole
// before, which stopped the swarm network's creation, `network rm` and
// `network inspect` alike.
func TestNodeStatesShowUnreadableReports(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Report(ctx, "lan", netspec.NodeState{ID: "id-a", Node: "a", State: netspec.StateReady}); err != nil {
		t.Fatal(err)
	}
	key := netspec.KVPrefix + "lan/nodes/id-b"
	kv.Put(ctx, key, []byte("{not json"))
	states, err := st.NodeStates(ctx, "lan")
	if err != nil || len(states) != 2 {
		t.Fatalf("states %+v, %v: want a's and b's", states, err)
	}
	if states[0].ID != "id-a" || states[0].State != netspec.StateReady {
		t.Errorf("a's report %+v, want it ready as written", states[0])
	}
	b := states[1]
	if b.ID != "id-b" || b.Node != "id-b" || b.State != netspec.StateError || !strings.Contains(b.Error, key) || !strings.Contains(b.Error, "consul kv delete "+key) {
		t.Errorf("b's unreadable report listed as %+v: want an error state naming %s and its fix", b, key)
	}
}

// TestNodesTakeFactsByTheirKey: facts whose document names another
// identity than their key are listed as the key's identity's, and noted
// apart naming the key and both identities; facts naming none (older
// agents') keep none, and unreadable ones are left out.
func TestNodesTakeFactsByTheirKey(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for key, doc := range map[string]string{
		"a":     `{"id":"a","node":"n1"}`,
		"stray": `{"id":"other","node":"n2"}`,
		"old":   `{"node":"n3"}`,
		"bad":   `{`,
	} {
		kv.Put(ctx, netspec.NodesKVPrefix+key, []byte(doc))
	}
	nodes, misfiled, err := netspec.NewStore(kv).ReadNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range nodes {
		got = append(got, n.Node+"="+n.ID)
	}
	if fmt.Sprint(got) != "[n1=a n2=stray n3=]" {
		t.Errorf("nodes %v, want [n1=a n2=stray n3=]", got)
	}
	want := []netspec.MisfiledFacts{{Key: netspec.NodesKVPrefix + "stray", Names: "other"}}
	if !slices.Equal(misfiled, want) {
		t.Errorf("misfiled %+v, want %+v", misfiled, want)
	}
	if msg := want[0].String(); !strings.Contains(msg, netspec.NodesKVPrefix+"stray holds facts naming swarm node other: taken as the facts of swarm node stray") {
		t.Errorf("note %q names not the key and both identities", msg)
	}
}

// TestLeasesSkipStrayKeys: a key under a network's ranges that is not a
// range key (by hand, a bug) leases nothing and stops no node from
// leasing: it failed every lease of the network before. A nested key does
// not pass for the range its last part names.
func TestLeasesSkipStrayKeys(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	s := spec("lan")
	if err := st.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	blocks := netspec.Blocks(s)
	for _, k := range []string{"garbage", "x/" + strings.ReplaceAll(blocks[0].String(), "/", "_"), "10.60.0.1_28"} {
		kv.Put(ctx, netspec.KVPrefix+"lan/ranges/"+k, []byte("stray"))
	}
	got, _, err := st.Lease(ctx, s, "swarm-id-a")
	if err != nil || got != blocks[0] {
		t.Fatalf("lease beside stray keys: %s, %v; want the first range %s", got, err, blocks[0])
	}
	leases, err := st.Leases(ctx, "lan")
	if err != nil || len(leases) != 1 || leases[blocks[0]] != "swarm-id-a" {
		t.Errorf("leases %v, %v: want only swarm-id-a's", leases, err)
	}
}

// pausedList is a KV whose listing, when a pause is queued, waits after
// reading until the pause's resume is closed: a listing overtaken by a
// later one.
type pausedList struct {
	*kvtest.KV
	pauses chan pause
}

type pause struct{ read, resume chan struct{} }

func (k pausedList) List(ctx context.Context, prefix string) ([]kvstore.Pair, error) {
	out, err := k.KV.List(ctx, prefix)
	select {
	case p := <-k.pauses:
		close(p.read)
		<-p.resume
	default:
	}
	return out, err
}

// TestListedIsTheNewestListing: the store remembers its newest listing of
// the specs, with what the agents refuse of it (unreadable specs too); a
// listing that read the specs before a change and ends after a later one
// does not bring the old specs back.
func TestListedIsTheNewestListing(t *testing.T) {
	ctx := context.Background()
	kv := pausedList{KV: kvtest.New(), pauses: make(chan pause, 1)}
	st := netspec.NewStore(kv)
	if l := st.Listed(); l != nil {
		t.Fatalf("listed before any listing: %+v", l)
	}
	if err := st.Create(ctx, spec("good")); err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, netspec.KVPrefix+"broken/spec", []byte("{not json"))
	if _, _, err := st.ReadSpecs(ctx); err != nil {
		t.Fatal(err)
	}
	l := st.Listed()
	if l == nil || len(l.Specs) != 1 || l.Specs[0].Name != "good" || len(l.Bad) != 1 {
		t.Fatalf("listed %+v: want good, and broken apart", l)
	}
	if refused := l.Refused(); len(refused) != 1 || refused["broken"] == nil {
		t.Errorf("refused %v: want broken alone", refused)
	}
	// A listing reads good, then waits while good is removed and another
	// listing reads and ends.
	p := pause{read: make(chan struct{}), resume: make(chan struct{})}
	kv.pauses <- p
	done := make(chan error)
	go func() { _, _, err := st.ReadSpecs(ctx); done <- err }()
	<-p.read
	kv.Delete(ctx, netspec.KVPrefix+"good/spec")
	if _, _, err := st.ReadSpecs(ctx); err != nil {
		t.Fatal(err)
	}
	close(p.resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l := st.Listed(); len(l.Specs) != 0 {
		t.Errorf("listed %v after good's removal: the overtaken listing brought it back", l.Specs)
	}
}

// TestRemoveFix: the fix given for a refused spec removes it. rm refuses
// a name that is none (its keys are made of it), so the spec of a key
// named so goes with consul, under the name as the key spells it.
func TestRemoveFix(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	kv.Put(ctx, netspec.KVPrefix+"my net/spec", []byte(`{"name":"my net"}`))
	kv.Put(ctx, netspec.KVPrefix+"/spec", []byte(`{}`))
	l, err := st.ReadListing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for name := range l.Refused() {
		got[name] = netspec.RemoveFix(name)
	}
	// The empty name's keys are redirected by Consul's paths (the delete
	// given for it was of underlay/networks/, every network): it is only
	// named (Listing.Unlisted).
	want := map[string]string{
		"my net": `consul kv delete -recurse 'underlay/networks/my net/'`,
	}
	if !maps.Equal(got, want) {
		t.Errorf("fixes %q, want %q", got, want)
	}
	if want := []string{netspec.KVPrefix + "/spec"}; !slices.Equal(l.Unlisted, want) {
		t.Errorf("unlisted %q, want %q", l.Unlisted, want)
	}
	if _, err := st.Remove(ctx, nil, "my net", netspec.Removal{}); err == nil {
		t.Error(`Remove("my net") passed; the fix would be rm`)
	}
	if got, want := netspec.RemoveFix("web"), "underlay network rm web"; got != want {
		t.Errorf("fix of web: %q, want %q", got, want)
	}
}

// TestRemoveFixOfUnlistableName: for the names "", "." and ".." RemoveFix
// gave `consul kv delete -recurse underlay/networks/<name>/`, whose path
// Consul's HTTP API redirects to another key (underlay/networks/ for ""
// and ".", underlay/ for ".."): the delete misses the network's keys, or
// hits others. It now gives no command for them (UnlistedProblem says
// how such keys go).
func TestRemoveFixOfUnlistableName(t *testing.T) {
	for _, name := range []string{"", ".", ".."} {
		if got := netspec.RemoveFix(name); got != "" {
			t.Errorf("RemoveFix(%q) = %q, want none", name, got)
		}
	}
}

// TestLeaseAvoidsRangesOfAnotherSize: after the spec's per_node_size is
// edited in KV (64 to 16), a node leasing anew gets no range inside
// another node's /26, where that node's containers hold addresses, and a
// node holding a /26 is told its lease no longer matches the spec instead
// of leasing a second range.
func TestLeaseAvoidsRangesOfAnotherSize(t *testing.T) {
	ctx := context.Background()
	st := netspec.NewStore(kvtest.New())
	s := spec("lan")
	s.PerNodeSize = 64
	if err := st.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	var held []netip.Prefix
	for _, id := range []string{"swarm-id-a", "swarm-id-b"} {
		b, _, err := st.Lease(ctx, s, id)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, b)
	}
	edited := s
	edited.PerNodeSize = 16
	got, _, err := st.Lease(ctx, edited, "swarm-id-c")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range held {
		if got.Overlaps(h) {
			t.Errorf("node c leased %s inside %s, another node's range", got, h)
		}
	}
	_, _, err = st.Lease(ctx, edited, "swarm-id-a")
	if !errors.Is(err, netspec.ErrLeaseMismatch) || !strings.Contains(err.Error(), held[0].String()) {
		t.Errorf("node a, holding %s, leasing under the edited spec: %v; want ErrLeaseMismatch naming its range", held[0], err)
	}
	leases, err := st.Leases(ctx, "lan")
	if err != nil || len(leases) != 3 {
		t.Errorf("leases %v, %v: want a's, b's and c's alone", leases, err)
	}
}

// TestReadSpecsRefusesAParentNoLinkCanHave: a spec written to KV by hand
// with a parent no link can have (a shell command) is refused with the
// value named, as a bad document is, and the other specs still count;
// `network rm` can still mark it deleting, without the bad parent.
func TestReadSpecsRefusesAParentNoLinkCanHave(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(ctx, spec("good")); err != nil {
		t.Fatal(err)
	}
	for name, parent := range map[string]string{"shell": "x;touch /tmp/p", "long": "eth0.0123456789abc"} {
		bad := spec(name)
		bad.Parent = parent
		for _, deleting := range []bool{false, true} {
			bad.Deleting = deleting
			doc, err := json.Marshal(bad)
			if err != nil {
				t.Fatal(err)
			}
			kv.Put(ctx, netspec.KVPrefix+name+"/spec", doc)
			specs, badSpecs, err := st.ReadSpecs(ctx)
			if err != nil || len(specs) != 1 || specs[0].Name != "good" || len(badSpecs) != 1 || badSpecs[0].Name != name {
				t.Fatalf("parent %q (deleting %v): specs %v, bad %v, %v: want good, and %s apart", parent, deleting, specs, badSpecs, err, name)
			}
			if msg := badSpecs[0].Err.Error(); !errors.Is(badSpecs[0].Err, netspec.ErrBadSpec) || !strings.Contains(msg, fmt.Sprintf("%q", parent)) {
				t.Errorf("parent %q refused with %q: want ErrBadSpec naming the value", parent, msg)
			}
			if _, _, err := st.Get(ctx, name); !errors.Is(err, netspec.ErrBadSpec) {
				t.Errorf("get %s: %v, want ErrBadSpec", name, err)
			}
		}
		if err := st.MarkDeleting(ctx, name); err != nil {
			t.Fatal(err)
		}
		s, ok, err := st.Get(ctx, name)
		if err != nil || !ok || !s.Deleting || s.Parent != "" {
			t.Errorf("%s marked deleting: %+v, %v, %v: want it readable, deleting, without the parent", name, s, ok, err)
		}
		kv.Delete(ctx, netspec.KVPrefix+name+"/spec")
	}
}

// listedKV lists pairs, whatever the prefix: a listing of a given size
// without a KV's own costs.
type listedKV struct {
	netspec.KV
	pairs []kvstore.Pair
}

func (k listedKV) List(context.Context, string) ([]kvstore.Pair, error) { return k.pairs, nil }

// BenchmarkReadListing: every network name with reports was looked up
// in every spec and unreadable spec, networks × specs at every sync of
// every agent. A listing four times as large should cost about four
// times as much, not sixteen.
func BenchmarkReadListing(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{4000, 16000} {
		b.Run(fmt.Sprintf("networks=%d", n), func(b *testing.B) {
			var pairs []kvstore.Pair
			for i := range n {
				// Unreadable specs decode fast; reports under other names
				// are orphans, each looked up among them.
				pairs = append(pairs, kvstore.Pair{Key: fmt.Sprintf("%sbad-%d/spec", netspec.KVPrefix, i), Value: []byte("{")},
					kvstore.Pair{Key: fmt.Sprintf("%sgone-%d/nodes/n1", netspec.KVPrefix, i), Value: []byte("{}")})
			}
			st := netspec.NewStore(listedKV{pairs: pairs})
			for b.Loop() {
				l, err := st.ReadListing(ctx)
				if err != nil || len(l.Bad) != n || len(l.Orphans) != n {
					b.Fatalf("listing of %d: %d bad, %d orphans, %v", n, len(l.Bad), len(l.Orphans), err)
				}
			}
		})
	}
}

// TestListingLeased: the listing names the nodes holding range leases
// under a network that has no spec key (spec deleted by hand, a teardown
// that could not release them), as Leases reads them; a network with a
// spec key, readable or not, is not listed.
func TestListingLeased(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	web := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.10.0.0/24"), Gateway: netip.MustParseAddr("10.10.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 16}
	if err := st.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Lease(ctx, web, "n1"); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"gone/ranges/10.1.0.0_28":  "n1",
		"gone/ranges/10.1.0.16_28": "n2",
		"gone/ranges/10.1.0.33_28": "n3", // not a range's network address
		"gone/ranges/junk":         "n4",
		"bad/spec":                 "{",
		"bad/ranges/10.2.0.0_28":   "n1",
	} {
		if err := kv.Put(ctx, netspec.KVPrefix+k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	l, err := st.ReadListing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string][]string{"gone": {"n1", "n2"}}; !maps.EqualFunc(l.Leased, want, slices.Equal) {
		t.Errorf("leased: %v, want %v", l.Leased, want)
	}
}

// TestListingIndexes: a listing gives each spec's modify index, which
// changes when the network is marked for removal and when it is made
// again under the name; a listing read
// after another is known to have begun after it was answered.
func TestListingIndexes(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(ctx, spec("good")); err != nil {
		t.Fatal(err)
	}
	read := func() *netspec.Listing {
		t.Helper()
		l, err := st.ReadListing(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := read()
	pair, _, err := kv.Get(ctx, netspec.SpecKey("good"))
	if err != nil {
		t.Fatal(err)
	}
	if got := first.SpecIndex("good"); got != pair.Index {
		t.Errorf("spec index %d, want %d", got, pair.Index)
	}
	if got := first.SpecIndex("other"); got != 0 {
		t.Errorf("spec index of a network not listed: %d, want 0", got)
	}
	if err := st.Delete(ctx, "good"); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, spec("good")); err != nil {
		t.Fatal(err)
	}
	again := read()
	if !again.BegunAfter(first.Settled()) || first.BegunAfter(again.Settled()) {
		t.Errorf("a listing read after another: begun after it %t, and the other after it %t; want true, false",
			again.BegunAfter(first.Settled()), first.BegunAfter(again.Settled()))
	}
	if again.SpecIndex("good") == first.SpecIndex("good") {
		t.Errorf("the network made again has its spec index of before, %d", first.SpecIndex("good"))
	}
	if err := st.MarkDeleting(ctx, "good"); err != nil {
		t.Fatal(err)
	}
	if marked := read(); marked.SpecIndex("good") == again.SpecIndex("good") {
		t.Errorf("marked for removal: spec index %d, want another than %d", marked.SpecIndex("good"), again.SpecIndex("good"))
	}
}

// TestReportsGivesNoDeleteConsulRedirects: an unreadable node report
// under a key with an empty, "." or ".." segment said to remove it with
// `consul kv delete KEY`, whose path Consul's HTTP API redirects to
// another key: the delete misses it. It says to use a transaction.
func TestReportsGivesNoDeleteConsulRedirects(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for _, id := range []string{"..", "a//b", "a/./b"} {
		kv.Put(ctx, netspec.KVPrefix+"lan/nodes/"+id, []byte("{not json"))
	}
	rs, err := netspec.NewStore(kv).Reports(ctx, "lan")
	if err != nil || len(rs) != 3 {
		t.Fatalf("reports %+v, %v; want the 3", rs, err)
	}
	for _, r := range rs {
		if e := r.State.Error; strings.Contains(e, "consul kv delete "+r.Key) || !strings.Contains(e, "PUT /v1/txn") || !strings.Contains(e, r.Key) {
			t.Errorf("unreadable report %s listed with error %q; want it named, removed by a transaction, not consul kv delete", r.Key, e)
		}
	}
}

// TestIDsByNameSkipsKeysNoAgentWrites: the swarm node IDs a name stands
// for, by which the doctor's and task metrics' readers tell whether a
// report under the name is an older agent's, came from every facts key:
// underlay/nodes/X naming n1 made X one of n1's swarm nodes, one that
// never publishes under its ID, so n1's report from before its upgrade
// was read (counted twice by the autoscaler). Only keys an agent writes
// count: its swarm node ID's, or an older agent's, naming no ID, under
// the name it names.
func TestIDsByNameSkipsKeysNoAgentWrites(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const ida = "ida0000000000000000000000"
	for key, doc := range map[string]string{
		ida:   `{"id":"` + ida + `","node":"n1"}`,
		"X":   `{"id":"X","node":"n1"}`,
		"a b": `{"node":"n1"}`,
		"Y":   `{"id":"` + ida + `","node":"n1"}`,
		"n2":  `{"node":"n2"}`, // an older agent's
		"n3":  `{"node":"n4"}`,
	} {
		kv.Put(ctx, netspec.NodesKVPrefix+key, []byte(doc))
	}
	want := map[string][]string{"n1": {ida}, "n2": {"n2"}}
	if got := netspec.IDsByName(ctx, kv); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("IDs by name %v, want %v", got, want)
	}
}

// TestNameReportOfNoNode: a report under a node name is of no node only
// when every swarm node of the name reports under its ID and one of
// those reports names another node; the first such ID, in order, is
// given, with how many more.
func TestNameReportOfNoNode(t *testing.T) {
	for _, c := range []struct {
		name     string
		ids      []string
		reported map[string]string
		other    string
		more     int
		ok       bool
	}{
		{"no node of the name", nil, map[string]string{"a": "n2"}, "", 0, false},
		{"a node reports under no ID", []string{"a", "b"}, map[string]string{"a": "n2"}, "", 0, false},
		{"every ID report names the name", []string{"a", "b"}, map[string]string{"a": "n1", "b": "n1"}, "", 0, false},
		{"one names another", []string{"b", "a"}, map[string]string{"a": "n1", "b": "n2"}, "b", 0, true},
		{"two name others", []string{"c", "b", "a"}, map[string]string{"a": "n1", "b": "n2", "c": "n3"}, "b", 1, true},
	} {
		other, more, ok := netspec.NameReportOfNoNode("n1", c.ids, c.reported)
		if other != c.other || more != c.more || ok != c.ok {
			t.Errorf("%s: %q, %d, %v; want %q, %d, %v", c.name, other, more, ok, c.other, c.more, c.ok)
		}
	}
}

// TestFactsKeyProblem: facts are an agent's under their swarm node ID's
// key, or (an older agent's, naming no ID) under the node name they name;
// under any other key they are no node's, and the listing carries each
// one's key, so that the facts naming no ID can be told apart and
// removed.
func TestFactsKeyProblem(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const ida = "ida0000000000000000000000"
	want := map[string]string{ // by key, the problem's text ("" for none)
		ida:   "",
		"n2":  "",
		"X":   "X is not a swarm node ID: 1 bytes, want 25",
		"a b": "a b is not a swarm node ID: 3 bytes, want 25; nor is it the node name n1 that its facts, naming no swarm node ID, give",
		"n3":  "n3 is not a swarm node ID: 2 bytes, want 25; nor is it the node name n4",
		"c d": `c d is not a swarm node ID: 3 bytes, want 25; nor a node name, as an older agent's key is: ' ' is not allowed`,
	}
	for key, doc := range map[string]string{
		ida:   `{"id":"` + ida + `","node":"n1"}`,
		"n2":  `{"node":"n2"}`, // an older agent's
		"X":   `{"id":"` + ida + `","node":"n1"}`,
		"a b": `{"node":"n1"}`,
		"n3":  `{"node":"n4"}`,
		"c d": `{"node":"c d"}`, // no node can have that name
	} {
		kv.Put(ctx, netspec.NodesKVPrefix+key, []byte(doc))
	}
	l, err := netspec.NewStore(kv).ReadFacts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Facts) != len(want) {
		t.Errorf("%d facts listed, want %d", len(l.Facts), len(want))
	}
	for _, f := range l.Facts {
		key := strings.TrimPrefix(f.Key, netspec.NodesKVPrefix)
		w, ok := want[key]
		err := f.KeyProblem()
		switch {
		case !ok:
			t.Errorf("facts %+v listed with key %q, want one of the keys written", f, f.Key)
		case w == "" && err != nil:
			t.Errorf("facts under %q: %v; want none, an agent's key", key, err)
		case w != "" && (err == nil || !strings.HasPrefix(err.Error(), w)):
			t.Errorf("facts under %q: %v; want %s…", key, err, w)
		}
	}
	// Facts not read from a listing are where their agent writes them.
	for _, f := range []netspec.NodeFacts{{ID: ida, Node: "n1"}, {Node: "n2"}} {
		if err := f.KeyProblem(); err != nil {
			t.Errorf("facts %+v, read from no key: %v; want none", f, err)
		}
	}
}

// TestListingSpecCreateIndex: a listing gives each spec's create index,
// the network's generation: kept by the mark of `network rm`, new once
// the network is removed and made again under the name, 0 for a name
// not listed.
func TestListingSpecCreateIndex(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	lan := spec("lan")
	if err := st.Create(ctx, lan); err != nil {
		t.Fatal(err)
	}
	created := func() uint64 {
		t.Helper()
		l, err := st.ReadListing(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pair, ok, err := kv.Get(ctx, netspec.SpecKey(lan.Name))
		if err != nil || !ok {
			t.Fatalf("spec key: %v %v", ok, err)
		}
		if got := l.SpecCreateIndex(lan.Name); got != pair.CreateIndex || got == 0 {
			t.Fatalf("SpecCreateIndex %d, want the key's CreateIndex %d", got, pair.CreateIndex)
		}
		if got := l.SpecCreateIndex("other"); got != 0 {
			t.Errorf("SpecCreateIndex of a network not listed: %d, want 0", got)
		}
		return pair.CreateIndex
	}
	first := created()
	if err := st.MarkDeleting(ctx, lan.Name); err != nil {
		t.Fatal(err)
	}
	if marked := created(); marked != first {
		t.Errorf("create index %d once marked, want %d: the same network", marked, first)
	}
	if err := st.Delete(ctx, lan.Name); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, lan); err != nil {
		t.Fatal(err)
	}
	if again := created(); again == first {
		t.Errorf("create index %d once made again, want another than %d", again, first)
	}
}

// TestAgentsNodes: the facts the IPAM's departed-node reclaim judges
// liveness by are those under keys an agent writes, each listed once,
// readable ones only.
func TestAgentsNodes(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const ida = "ida0000000000000000000000"
	for key, doc := range map[string]string{
		ida:   `{"id":"` + ida + `","node":"n1"}`,
		"n2":  `{"node":"n2"}`, // an older agent's
		"X":   `{"id":"X","node":"n1"}`,
		"a b": `{"node":"n1"}`,
		"n3":  `{"node":"n4"}`,
		"bad": `{`,
	} {
		kv.Put(ctx, netspec.NodesKVPrefix+key, []byte(doc))
	}
	got, err := netspec.NewStore(kv).AgentsNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, f := range got {
		keys = append(keys, f.Key)
	}
	if want := []string{netspec.NodesKVPrefix + ida, netspec.NodesKVPrefix + "n2"}; !slices.Equal(keys, want) {
		t.Errorf("agents' nodes under %q, want %q", keys, want)
	}
}

// TestDecodeSpecQuotesItsKey: a spec's key is under a network name any
// token that may write underlay/networks/ chooses, of any characters;
// the error refusing the spec named the key as it was, and a newline, an
// escape sequence or a bidi override in it reached the agent's log and
// `network inspect`'s error (spec refused: …) as they were. The key is
// quoted when not graphic.
func TestDecodeSpecQuotesItsKey(t *testing.T) {
	const name = "web\nlevel=ERROR \x1b[2J\u202e"
	for _, doc := range []string{`{"name":`, `{"name":"other"}`, `{"name":"` + strings.ReplaceAll(strings.ReplaceAll(name, "\n", `\n`), "\x1b", `\u001b`) + `","parent":"a b"}`} {
		_, err := netspec.DecodeSpec(name, []byte(doc))
		want := `"underlay/networks/web\nlevel=ERROR \x1b[2J\u202e/spec"`
		if err == nil || !strings.Contains(err.Error(), want) || strings.ContainsAny(err.Error(), "\n\x1b\u202e") {
			t.Errorf("DecodeSpec(%q) = %v, want an error naming the key as %s, with no newline, escape or override", doc, err, want)
		}
	}
}
