package hostnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/netspec"
)

// macvlanOn is a macvlan network's Want on eth1, its shim ul-NAME.
func macvlanOn(name, shim string, n byte) Want {
	r := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, n, 0, 0}), 24)
	return Want{Parent: "eth1", Network: name, ShimLink: shim, Shim: r.Addr().Next(), Route: r}
}

func promiscOf(k *fakeKernel, name string) bool { return k.links[name].Attrs().Promisc != 0 }

// TestReleasePromisc: promiscuous mode underlay turned on is turned off
// once the last macvlan on the parent is gone, and never while one is
// left, nor when it was on before underlay, nor by the record of an
// earlier boot.
func TestReleasePromisc(t *testing.T) {
	a, b := macvlanOn("a", "ul-a", 1), macvlanOn("b", "ul-b", 2)
	t.Run("turned on by underlay", func(t *testing.T) {
		k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}})
		h := Host{k: k, Promisc: PromiscFiles{Dir: t.TempDir(), Boot: "boot1"}}
		for _, w := range []Want{a, b} {
			if _, err := h.Ensure(w); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.RemoveShim(a.ShimLink, a.Network); err != nil {
			t.Fatal(err)
		}
		if off, err := h.ReleasePromisc("eth1"); off || err != nil || !promiscOf(k, "eth1") {
			t.Errorf("release with b's shim left: %t, %v, promisc %t; want it left on", off, err, promiscOf(k, "eth1"))
		}
		if err := h.RemoveShim(b.ShimLink, b.Network); err != nil {
			t.Fatal(err)
		}
		if off, err := h.ReleasePromisc("eth1"); !off || err != nil || promiscOf(k, "eth1") {
			t.Errorf("release of the last: %t, %v, promisc %t; want it turned off", off, err, promiscOf(k, "eth1"))
		}
		if off, err := h.ReleasePromisc("eth1"); off || err != nil {
			t.Errorf("release again: %t, %v; want nothing done", off, err)
		}
	})
	t.Run("on before underlay", func(t *testing.T) {
		k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp, Promisc: 1}})
		h := Host{k: k, Promisc: PromiscFiles{Dir: t.TempDir(), Boot: "boot1"}}
		if _, err := h.Ensure(a); err != nil {
			t.Fatal(err)
		}
		if err := h.RemoveShim(a.ShimLink, a.Network); err != nil {
			t.Fatal(err)
		}
		if off, err := h.ReleasePromisc("eth1"); off || err != nil || !promiscOf(k, "eth1") {
			t.Errorf("release: %t, %v, promisc %t; want the operator's promiscuous mode left on", off, err, promiscOf(k, "eth1"))
		}
	})
	t.Run("recorded at an earlier boot", func(t *testing.T) {
		k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}})
		dir := t.TempDir()
		if _, err := (Host{k: k, Promisc: PromiscFiles{Dir: dir, Boot: "boot1"}}).Ensure(a); err != nil {
			t.Fatal(err)
		}
		// Rebooted: promiscuous mode is off again, and the operator turns
		// it on.
		h := Host{k: k, Promisc: PromiscFiles{Dir: dir, Boot: "boot2"}}
		if err := h.RemoveShim(a.ShimLink, a.Network); err != nil {
			t.Fatal(err)
		}
		if off, err := h.ReleasePromisc("eth1"); off || err != nil || !promiscOf(k, "eth1") {
			t.Errorf("release: %t, %v, promisc %t; want it left on", off, err, promiscOf(k, "eth1"))
		}
		if got, err := h.Promisc.List(); err != nil || len(got) != 0 {
			t.Errorf("records left: %v, %v; want the stale one gone", got, err)
		}
	})
	t.Run("no record kept", func(t *testing.T) {
		k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}})
		h := Host{k: k}
		if _, err := h.Ensure(a); err != nil {
			t.Fatal(err)
		}
		h.RemoveShim(a.ShimLink, a.Network)
		if off, err := h.ReleasePromisc("eth1"); off || err != nil || !promiscOf(k, "eth1") {
			t.Errorf("release: %t, %v, promisc %t; want it left on as before", off, err, promiscOf(k, "eth1"))
		}
	})
}

// TestRemoveLeftoversReleasesPromisc: agent cleanup turns off the
// promiscuous mode underlay turned on, once it removed the shims.
func TestRemoveLeftoversReleasesPromisc(t *testing.T) {
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}})
	rec := PromiscFiles{Dir: t.TempDir(), Boot: "boot1"}
	if _, err := (Host{k: k, Promisc: rec}).Ensure(macvlanOn("a", "ul-a", 1)); err != nil {
		t.Fatal(err)
	}
	rep, err := removeLeftovers(k, Cleanup{Promisc: rec})
	if err != nil || !slices.Equal(rep.Removed, []string{"ul-a"}) || promiscOf(k, "eth1") {
		t.Errorf("removeLeftovers: %+v, %v, promisc %t; want ul-a removed and eth1's promiscuous mode off", rep, err, promiscOf(k, "eth1"))
	}
	if !slices.Equal(rep.PromiscOff, []string{"eth1"}) || !slices.Equal(rep.Forgotten, []string{"eth1"}) {
		t.Errorf("reported promiscuous mode off on %v, records removed %v; want eth1 and eth1", rep.PromiscOff, rep.Forgotten)
	}
}

// TestCleanupLeavesWhatContainersUse: `agent cleanup` saw only the host's
// network namespace, where no container's endpoint is: it deleted a VLAN
// parent (and the kernel every container's macvlan on it) and turned
// off promiscuous mode under running containers. Links Cleanup.InUse
// names (from Docker: the networks' running containers) are left, with
// the parent's promiscuous mode and record, reported and named in an
// error wrapping ErrInUse that says the fix; the rest goes, and the
// report says what it did.
func TestCleanupLeavesWhatContainersUse(t *testing.T) {
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}},
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth2", Flags: net.FlagUp}})
	rec := PromiscFiles{Dir: t.TempDir(), Boot: "boot1"}
	h := Host{k: k, Promisc: rec, Owner: "a1"}
	web := Want{Parent: "eth1.40", Network: "web", ShimLink: netspec.ShimLinkName("web"),
		Shim: netip.MustParseAddr("10.40.0.2"), Route: netip.MustParsePrefix("10.40.0.0/26"), Subnet: netip.MustParsePrefix("10.40.0.0/24")}
	if _, err := h.Ensure(web); err != nil {
		t.Fatal(err)
	}
	db := macvlanOn("db", netspec.ShimLinkName("db"), 2)
	db.Parent = "eth2"
	if _, err := h.Ensure(db); err != nil {
		t.Fatal(err)
	}
	// A record of a parent gone since.
	if err := rec.Add("eth9", 9); err != nil {
		t.Fatal(err)
	}
	users := []string{"container web.1 (network web)"}
	rep, err := removeLeftovers(k, Cleanup{Owner: "a1", Promisc: rec, InUse: map[string][]string{"eth1.40": users, web.ShimLink: users}})
	want := CleanupReport{
		Removed:    []string{netspec.ShimLinkName("db")},
		InUse:      []LinkUse{{Name: web.ShimLink, Users: users}, {Name: "eth1.40", Users: users}},
		PromiscOff: []string{"eth2"},
		Forgotten:  []string{"eth2", "eth9"},
	}
	if d := cmp.Diff(want, rep); d != "" {
		t.Errorf("report (-want +got)\n%s", d)
	}
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "eth1.40 (container web.1 (network web))") || !strings.Contains(err.Error(), "run underlay agent cleanup again") {
		t.Errorf("removeLeftovers: %v; want an error wrapping ErrInUse naming eth1.40, its container, and the fix", err)
	}
	if _, ok := k.links["eth1.40"]; !ok || !promiscOf(k, "eth1.40") {
		t.Errorf("eth1.40 deleted, or its promiscuous mode turned off, under a running container")
	}
	if ok, _ := rec.Has("eth1.40", k.links["eth1.40"].Attrs().Index); !ok {
		t.Error("the record of eth1.40 made promiscuous was removed")
	}
}

// TestReleasePromiscUnreadableRecord: a record that cannot be read (not
// a regular file) is an error naming the parent, and both it and the
// parent's promiscuous mode are left as they are.
func TestReleasePromiscUnreadableRecord(t *testing.T) {
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp, Promisc: 1}})
	rec := PromiscFiles{Dir: t.TempDir(), Boot: "boot1"}
	if err := os.Mkdir(filepath.Join(rec.Dir, "eth1"), 0o755); err != nil {
		t.Fatal(err)
	}
	off, err := (Host{k: k, Promisc: rec}).ReleasePromisc("eth1")
	if off || err == nil || !strings.Contains(err.Error(), "eth1") || !promiscOf(k, "eth1") {
		t.Errorf("release: %t, %v, promisc %t; want an error naming eth1, and promiscuous mode left on", off, err, promiscOf(k, "eth1"))
	}
	if _, err := os.Stat(filepath.Join(rec.Dir, "eth1")); err != nil {
		t.Errorf("the unreadable record: %v, want it left", err)
	}
}
