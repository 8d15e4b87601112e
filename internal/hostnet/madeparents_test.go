package hostnet

import (
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/testlog"
)

// TestParentFile: records outlive the ParentFile (a fresh one on the same
// state directory reads them), are replaced by link, and the file goes
// with the last.
func TestParentFile(t *testing.T) {
	dir := t.TempDir()
	f := NewParentFile(dir)
	if all, err := f.List(); err != nil || len(all) != 0 {
		t.Fatalf("List of no file: %v, %v; want none", all, err)
	}
	pool := MadeParent{Link: "bond0.40", Lower: "bond0", VLAN: 40, Network: "pool"}
	web := MadeParent{Link: "eth1.7", Lower: "eth1", VLAN: 7, Network: "web"}
	for _, p := range []MadeParent{web, pool, pool} {
		if err := f.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	again := NewParentFile(dir)
	all, err := again.List()
	if d := cmp.Diff([]MadeParent{pool, web}, all); err != nil || d != "" {
		t.Errorf("List by a fresh ParentFile: %v (-want +got)\n%s", err, d)
	}
	if p, ok, err := again.Get("bond0.40"); !ok || err != nil || p != pool {
		t.Errorf("Get(bond0.40): %+v, %t, %v; want %+v", p, ok, err, pool)
	}
	if _, ok, err := again.Get("bond0.41"); ok || err != nil {
		t.Errorf("Get(bond0.41): %t, %v; want no record", ok, err)
	}
	for _, link := range []string{"bond0.40", "bond0.40", "eth1.7"} {
		if err := again.Remove(link); err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("state directory after the last record went: %v; want it empty", entries)
	}
	if err := f.Add(MadeParent{Link: "bond0.40", Lower: "bond1", VLAN: 40, Network: "pool"}); err == nil {
		t.Error("Add of a record whose lower device is not its link name's: no error")
	}
}

// TestParentFileCorrupt: a file that holds no record is an error naming
// it, wrapping ErrBadParentRecord, never a panic; Add and Remove leave it
// as it is, for the operator.
func TestParentFileCorrupt(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"truncated", `{"parents":[{"link":"bond0.40","lo`},
		{"not JSON", "bond0.40 bond0 40 pool\n"},
		{"a link its lower device and VLAN do not name", `{"parents":[{"link":"bond0.40","lower":"eth0","vlan":40,"network":"pool"}]}`},
		{"no network", `{"parents":[{"link":"bond0.40","lower":"bond0","vlan":40}]}`},
		{"a link twice", `{"parents":[{"link":"bond0.40","lower":"bond0","vlan":40,"network":"a"},{"link":"bond0.40","lower":"bond0","vlan":40,"network":"b"}]}`},
		{"trailing garbage", `{"parents":[]} x`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewParentFile(t.TempDir())
			if err := os.WriteFile(f.Path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := f.Get("bond0.40"); ok || !errors.Is(err, ErrBadParentRecord) || !strings.Contains(err.Error(), f.Path) {
				t.Errorf("Get: %t, %v; want an error naming %s, wrapping ErrBadParentRecord", ok, err, f.Path)
			}
			if err := f.Add(MadeParent{Link: "eth1.7", Lower: "eth1", VLAN: 7, Network: "web"}); !errors.Is(err, ErrBadParentRecord) {
				t.Errorf("Add: %v; want ErrBadParentRecord", err)
			}
			if err := f.Remove("bond0.40"); !errors.Is(err, ErrBadParentRecord) {
				t.Errorf("Remove: %v; want ErrBadParentRecord", err)
			}
			if b, _ := os.ReadFile(f.Path); string(b) != tc.content {
				t.Errorf("the file after Add and Remove: %q; want it left as it was", b)
			}
		})
	}
	t.Run("not a regular file", func(t *testing.T) {
		dir := t.TempDir()
		f := NewParentFile(dir)
		if err := os.Mkdir(filepath.Join(dir, ParentsFileName), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.Get("bond0.40"); err == nil || !strings.Contains(err.Error(), f.Path) {
			t.Errorf("Get: %v; want an error naming %s", err, f.Path)
		}
	})
}

// rebootedHost is vlanHost after a reboot in which dockerd, restoring a
// container on the network, had Docker's macvlan driver make its
// missing parent parent again, VLAN vid on lower (bond0, eth0), unmarked,
// before the agent ran.
func rebootedHost(parent, lower string, vid int) *fakeKernel {
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", MTU: 9000, Flags: net.FlagUp}},
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", Flags: net.FlagUp}})
	if err := k.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: parent, ParentIndex: k.links[lower].Attrs().Index, Flags: net.FlagUp}, VlanId: vid}); err != nil {
		panic(err)
	}
	return k
}

// TestEnsureMarksItsParentMadeAgainAtBoot: the agent records the VLAN
// parent it makes; after a reboot in which dockerd made it again,
// unmarked, a fresh agent on the same state directory marks it as its
// own again, saying why, and its removal then takes it and its record.
// An unmarked VLAN it has no record of (by name, lower device and VLAN
// id) is an operator's and stays unmarked.
func TestEnsureMarksItsParentMadeAgainAtBoot(t *testing.T) {
	w := vlanWant()
	dir := t.TempDir()
	made := MadeParent{Link: "bond0.40", Lower: "bond0", VLAN: 40, Network: "pool"}
	if _, err := (Host{k: vlanHost(), Owner: "a1", Parents: NewParentFile(dir)}).Ensure(w); err != nil {
		t.Fatal(err)
	}
	if p, ok, err := NewParentFile(dir).Get("bond0.40"); !ok || err != nil || p != made {
		t.Fatalf("record after the parent was made: %+v, %t, %v; want %+v", p, ok, err, made)
	}

	var logs testlog.Buffer
	k := rebootedHost("bond0.40", "bond0", 40)
	h := Host{k: k, Owner: "a1", Parents: NewParentFile(dir), Log: slog.New(slog.NewTextHandler(&logs, nil))}
	repairs, err := h.Ensure(w)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := k.links["bond0.40"].Attrs().Alias, "underlay network pool by a1"; got != want || !slices.Contains(repairs, ParentReclaim) {
		t.Errorf("bond0.40 made again unmarked, after Ensure: alias %q, repairs %v; want %q, by %q", got, repairs, want, ParentReclaim)
	}
	if !strings.Contains(logs.String(), "bond0.40") || !strings.Contains(logs.String(), dir) {
		t.Errorf("log of the parent marked again: %q; want it to name the parent and the record", logs.String())
	}
	if got, err := h.Ensure(w); err != nil || len(got) != 0 {
		t.Errorf("Ensure again: %v, %v; want nothing to do", got, err)
	}
	if err := h.RemoveShim(w.ShimLink, w.Network); err != nil {
		t.Fatal(err)
	}
	if removed, err := h.RemoveParent("bond0.40", "pool"); !removed || err != nil {
		t.Errorf("RemoveParent: %t, %v; want it removed", removed, err)
	}
	if _, ok, err := NewParentFile(dir).Get("bond0.40"); ok || err != nil {
		t.Errorf("record after the parent was removed: %t, %v; want none", ok, err)
	}
}

// TestEnsureLeavesUnrecordedVLANs: an unmarked VLAN parent the record does
// not name as it is (no record, another link's, a record of its name
// that is not this VLAN) stays unmarked: an operator's. So does every
// parent with a record that cannot be read, which is logged, naming it.
func TestEnsureLeavesUnrecordedVLANs(t *testing.T) {
	w := vlanWant()
	for _, tc := range []struct {
		name    string
		k       *fakeKernel
		records []MadeParent
		file    string // content of the record file, instead of records
		err     string // Ensure's error, "" for none
		log     string // in the log
	}{
		{name: "no record", k: rebootedHost("bond0.40", "bond0", 40)},
		{name: "a record of another link", k: rebootedHost("bond0.40", "bond0", 40),
			records: []MadeParent{{Link: "bond0.41", Lower: "bond0", VLAN: 41, Network: "pool"}}},
		{name: "another VLAN id than recorded", k: rebootedHost("bond0.40", "bond0", 41),
			records: []MadeParent{{Link: "bond0.40", Lower: "bond0", VLAN: 40, Network: "pool"}}, err: "is VLAN 41 on bond0, not VLAN 40"},
		{name: "another lower device than recorded", k: rebootedHost("bond0.40", "eth0", 40),
			records: []MadeParent{{Link: "bond0.40", Lower: "bond0", VLAN: 40, Network: "pool"}}, err: "is VLAN 40 on eth0, not VLAN 40 on bond0"},
		{name: "a record that cannot be read", k: rebootedHost("bond0.40", "bond0", 40),
			file: `{"parents":[{"link":"bond0.40","lower":"bond0","vlan":40,"network":"pool"}`, log: ParentsFileName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewParentFile(t.TempDir())
			for _, p := range tc.records {
				if err := f.Add(p); err != nil {
					t.Fatal(err)
				}
			}
			if tc.file != "" {
				if err := os.WriteFile(f.Path, []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var logs testlog.Buffer
			_, err := Host{k: tc.k, Owner: "a1", Parents: f, Log: slog.New(slog.NewTextHandler(&logs, nil))}.Ensure(w)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Ensure: %v; want error %q", err, tc.err)
			}
			if got := tc.k.links["bond0.40"].Attrs().Alias; got != "" {
				t.Errorf("bond0.40's alias %q; want it left unmarked", got)
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log %q; want %q in it", logs.String(), tc.log)
			}
			if removed, err := (Host{k: tc.k, Owner: "a1", Parents: f}).RemoveParent("bond0.40", "pool"); removed || err != nil && tc.file == "" {
				t.Errorf("RemoveParent: %t, %v; want it left, with no error", removed, err)
			}
		})
	}
}

// TestEnsureRecordsMarkedParents: a parent the agent marked before it kept
// a record (an agent upgraded), or an older agent's it adopts, is
// recorded; another owner's is not.
func TestEnsureRecordsMarkedParents(t *testing.T) {
	w := vlanWant()
	for _, tc := range []struct {
		name, alias string
		recorded    bool
	}{
		{"its own mark", "underlay network pool by a1", true},
		{"a mark naming no owner", OwnerAlias("pool"), true},
		{"another owner's mark", "underlay network pool by b2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := rebootedHost("bond0.40", "bond0", 40)
			k.links["bond0.40"].Attrs().Alias = tc.alias
			f := NewParentFile(t.TempDir())
			if _, err := (Host{k: k, Owner: "a1", Parents: f}).Ensure(w); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := f.Get("bond0.40"); ok != tc.recorded || err != nil {
				t.Errorf("recorded %t, %v; want %t", ok, err, tc.recorded)
			}
		})
	}
}

// TestCleanupRemovesItsParentMadeAgainAtBoot: agent cleanup takes the
// unmarked VLAN parent the record names, as it takes the agent's marked
// ones, with its record, and the records of parents gone; an unmarked
// VLAN not recorded stays.
func TestCleanupRemovesItsParentMadeAgainAtBoot(t *testing.T) {
	k := rebootedHost("bond0.40", "bond0", 40)
	if err := k.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.41", ParentIndex: k.links["bond0"].Attrs().Index}, VlanId: 41}); err != nil {
		t.Fatal(err)
	}
	f := NewParentFile(t.TempDir())
	for _, p := range []MadeParent{{Link: "bond0.40", Lower: "bond0", VLAN: 40, Network: "pool"}, {Link: "eth0.9", Lower: "eth0", VLAN: 9, Network: "gone"}} {
		if err := f.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := removeLeftovers(k, Cleanup{Owner: "a1", Parents: f})
	if err != nil || !slices.Equal(rep.Removed, []string{"bond0.40"}) {
		t.Errorf("removeLeftovers: %+v, %v; want bond0.40 removed", rep, err)
	}
	if _, ok := k.links["bond0.41"]; !ok {
		t.Error("bond0.41, an unmarked VLAN not recorded, was removed")
	}
	if !slices.Equal(rep.Unrecorded, []string{"bond0.40", "eth0.9"}) {
		t.Errorf("records reported removed: %v; want bond0.40 and eth0.9", rep.Unrecorded)
	}
	if all, err := f.List(); len(all) != 0 || err != nil {
		t.Errorf("records left: %+v, %v; want none", all, err)
	}
	if _, err := os.Stat(f.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("record file after cleanup: %v; want it gone", err)
	}
}

// TestCleanupLeavesRecordedParentsInUse: a recorded parent that running
// containers use is left with its record; a record that cannot be read
// is an error naming it, and no unmarked parent is removed.
func TestCleanupLeavesRecordedParentsInUse(t *testing.T) {
	made := MadeParent{Link: "bond0.40", Lower: "bond0", VLAN: 40, Network: "pool"}
	t.Run("in use", func(t *testing.T) {
		k := rebootedHost("bond0.40", "bond0", 40)
		f := NewParentFile(t.TempDir())
		if err := f.Add(made); err != nil {
			t.Fatal(err)
		}
		users := []string{"container solo (network pool)"}
		rep, err := removeLeftovers(k, Cleanup{Owner: "a1", Parents: f, InUse: map[string][]string{"bond0.40": users}})
		if !errors.Is(err, ErrInUse) || len(rep.Removed) != 0 || cmp.Diff(rep.InUse, []LinkUse{{Name: "bond0.40", Users: users}}) != "" {
			t.Errorf("removeLeftovers: %+v, %v; want bond0.40 left in use", rep, err)
		}
		if _, ok, err := f.Get("bond0.40"); !ok || err != nil {
			t.Errorf("record of bond0.40 left in use: %t, %v; want it kept", ok, err)
		}
	})
	t.Run("record unreadable", func(t *testing.T) {
		k := rebootedHost("bond0.40", "bond0", 40)
		f := NewParentFile(t.TempDir())
		if err := os.WriteFile(f.Path, []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		rep, err := removeLeftovers(k, Cleanup{Owner: "a1", Parents: f})
		if !errors.Is(err, ErrBadParentRecord) || !strings.Contains(err.Error(), f.Path) || len(rep.Removed) != 0 {
			t.Errorf("removeLeftovers: %+v, %v; want an error naming %s, nothing removed", rep, err, f.Path)
		}
		if _, ok := k.links["bond0.40"]; !ok {
			t.Error("bond0.40 removed on the strength of a record that cannot be read")
		}
	})
}

// TestMarkedNamesRecordedParents: Host.Marked, by which the agent finds
// what a network whose spec went while it was away left, names an
// unmarked parent recorded as made for it; not an unrecorded one.
func TestMarkedNamesRecordedParents(t *testing.T) {
	k := rebootedHost("bond0.40", "bond0", 40)
	if err := k.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.41", ParentIndex: k.links["bond0"].Attrs().Index}, VlanId: 41}); err != nil {
		t.Fatal(err)
	}
	f := NewParentFile(t.TempDir())
	if err := f.Add(MadeParent{Link: "bond0.40", Lower: "bond0", VLAN: 40, Network: "pool"}); err != nil {
		t.Fatal(err)
	}
	got, err := Host{k: k, Owner: "a1", Parents: f}.Marked()
	if d := cmp.Diff(map[string]Marks{"pool": {Parents: []string{"bond0.40"}}}, got); err != nil || d != "" {
		t.Errorf("Marked: %v (-want +got)\n%s", err, d)
	}
}

// TestBadParentRecordWarnedOnce: a record that cannot be read was warned
// of at every sync (each Ensure, each Marked), the agent's log filling
// with one problem. It is now warned of once per distinct problem: again
// when the file is corrupt otherwise, or corrupt again after it was read
// fine. Every sync still refuses to take the unmarked parent for the
// agent's while it stays.
func TestBadParentRecordWarnedOnce(t *testing.T) {
	w := vlanWant()
	k := rebootedHost("bond0.40", "bond0", 40)
	f := NewParentFile(t.TempDir())
	var logs testlog.Buffer
	h := Host{k: k, Owner: "a1", Parents: f, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(f.Path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	syncs := func(n int) {
		t.Helper()
		for range n {
			if _, err := h.Ensure(w); err != nil {
				t.Fatal(err)
			}
			if _, err := h.Marked(); err != nil {
				t.Fatal(err)
			}
			if got := k.links["bond0.40"].Attrs().Alias; got != "" {
				t.Fatalf("bond0.40 marked %q on a record that cannot be read; want it left unmarked", got)
			}
		}
	}
	warnings := func() int { return strings.Count(logs.String(), "level=WARN") }
	truncated := `{"parents":[{"link":"bond0.40","lower":"bond0","vlan":40,"network":"pool"}`
	write(truncated)
	syncs(3)
	if n := warnings(); n != 1 || !strings.Contains(logs.String(), f.Path) {
		t.Errorf("three syncs on a corrupt record: %d warnings, want 1 naming %s; log:\n%s", n, f.Path, logs.String())
	}
	write("bond0.40 bond0 40 pool\n") // corrupt otherwise
	syncs(2)
	if n := warnings(); n != 2 {
		t.Errorf("after the file was corrupt otherwise: %d warnings, want 2", n)
	}
	write(`{"parents":[{"link":"bond0.41","lower":"bond0","vlan":41,"network":"pool"}]}`) // read fine
	syncs(1)
	write(truncated) // corrupt again, as at first
	syncs(2)
	if n := warnings(); n != 3 {
		t.Errorf("corrupt again after it was read fine: %d warnings, want 3; log:\n%s", n, logs.String())
	}
}
