package hostnet

import (
	"errors"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/netspec"
)

func TestRepairs(t *testing.T) {
	good := Observed{ParentExists: true, ParentUp: true, ParentPromisc: true, ShimExists: true, ShimOK: true, ShimUp: true, ShimHasIP: true, RouteViaOK: true}
	tests := []struct {
		name   string
		mutate func(*Observed)
		want   []Repair
	}{
		{"all in place", func(*Observed) {}, nil},
		{"fresh host", func(o *Observed) { *o = Observed{ParentExists: true} },
			[]Repair{ParentUp, ParentPromisc, ShimCreate, ShimAddress, ShimUp, ShimRoute}},
		{"promisc switched off", func(o *Observed) { o.ParentPromisc = false }, []Repair{ParentPromisc}},
		{"shim deleted", func(o *Observed) {
			o.ShimExists, o.ShimOK, o.ShimUp, o.ShimHasIP, o.RouteViaOK = false, false, false, false, false
		},
			[]Repair{ShimCreate, ShimAddress, ShimUp, ShimRoute}},
		{"shim of the wrong kind", func(o *Observed) { o.ShimOK = false },
			[]Repair{ShimReplace, ShimCreate, ShimAddress, ShimUp, ShimRoute}},
		{"shim set down loses its route", func(o *Observed) { o.ShimUp, o.RouteViaOK = false, false }, []Repair{ShimUp, ShimRoute}},
		{"route deleted", func(o *Observed) { o.RouteViaOK = false }, []Repair{ShimRoute}},
		{"VLAN parent missing", func(o *Observed) { *o = Observed{ParentCreatable: true} },
			[]Repair{ParentCreate, ParentUp, ParentPromisc, ShimCreate, ShimAddress, ShimUp, ShimRoute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.mutate(&o)
			got, err := Repairs(Want{}, o)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("repairs (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := Repairs(Want{}, Observed{}); !errors.Is(err, ErrNoParent) {
		t.Errorf("missing parent: err %v, want ErrNoParent", err)
	}
}

func TestRepairsIPvlan(t *testing.T) {
	w := Want{Driver: "ipvlan", IPvlanMode: "l2"}
	got, err := Repairs(w, Observed{ParentExists: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []Repair{ParentUp, ShimCreate, ShimAddress, ShimUp, ShimRoute}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ipvlan on a fresh host: the parent is never made promiscuous (-want +got):\n%s", diff)
	}
	got, _ = Repairs(w, Observed{ParentCreatable: true})
	if diff := cmp.Diff(append([]Repair{ParentCreate}, want...), got); diff != "" {
		t.Errorf("ipvlan on a missing VLAN parent (-want +got):\n%s", diff)
	}
}

func TestOwned(t *testing.T) {
	if n, ok := Owned(OwnerAlias("vlan40")); !ok || n != "vlan40" {
		t.Errorf("Owned(OwnerAlias(vlan40)) = %q, %v", n, ok)
	}
	if _, ok := Owned("uplink to rack 3"); ok {
		t.Error("an alias set by hand counts as underlay's")
	}
}

// vlanWant is a macvlan network on VLAN 40 of bond0, which a fake host
// made by vlanHost has.
func vlanWant() Want {
	return Want{Parent: "bond0.40", Network: "pool", ShimLink: netspec.ShimLinkName("pool"),
		Shim: netip.MustParseAddr("10.40.0.2"), Route: netip.MustParsePrefix("10.40.0.0/26")}
}

func vlanHost() *fakeKernel {
	return newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", MTU: 9000, Flags: net.FlagUp}})
}

// TestEnsureOnAFakeHost runs Ensure's repairs on an in-memory host: a
// missing VLAN parent and shim are made, marked, and found in place the
// next time; the removals take exactly them away.
func TestEnsureOnAFakeHost(t *testing.T) {
	k := vlanHost()
	h, w := Host{k: k}, vlanWant()
	got, err := h.Ensure(w)
	if err != nil {
		t.Fatal(err)
	}
	want := []Repair{ParentCreate, ParentUp, ParentPromisc, ShimCreate, ShimAddress, ShimUp, ShimRoute}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("first Ensure (-want +got):\n%s", diff)
	}
	if got, err := h.Ensure(w); err != nil || len(got) != 0 {
		t.Errorf("second Ensure: %v, %v; want nothing to do", got, err)
	}
	if a := k.links[w.Parent].Attrs(); a.Alias != OwnerAlias(w.Network) || a.MTU != 9000 {
		t.Errorf("parent %s: alias %q, MTU %d; want %q and its lower device's 9000", w.Parent, a.Alias, a.MTU, OwnerAlias(w.Network))
	}
	if a := k.links[w.ShimLink].Attrs(); a.Alias != ShimAlias(w.Network) {
		t.Errorf("shim %s: alias %q, want %q", w.ShimLink, a.Alias, ShimAlias(w.Network))
	}
	if err := removeShim(k, w.ShimLink, w.Network); err != nil {
		t.Fatal(err)
	}
	if removed, err := removeParent(k, w.Parent, w.Network); !removed || err != nil {
		t.Errorf("removeParent: %t, %v; want the parent removed", removed, err)
	}
	if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"bond0"}) {
		t.Errorf("links left: %v, want [bond0]", names)
	}
}

// TestEnsureMarkFails: a link Ensure makes but cannot mark as underlay's
// must not stay unmarked, where no later sync, network rm or agent
// cleanup would take it for underlay's. The failure is reported, and the
// next sync makes the link again, marked.
func TestEnsureMarkFails(t *testing.T) {
	for _, link := range []string{"bond0.40", netspec.ShimLinkName("pool")} {
		t.Run(link, func(t *testing.T) {
			k := vlanHost()
			h, w := Host{k: k}, vlanWant()
			k.fail["LinkSetAlias "+link] = errors.New("injected alias failure")
			if _, err := h.Ensure(w); err == nil || !strings.Contains(err.Error(), "injected alias failure") {
				t.Errorf("Ensure with the mark of %s failing: %v; want that failure", link, err)
			}
			if l, ok := k.links[link]; ok && l.Attrs().Alias == "" {
				t.Errorf("%s is left unmarked after its mark failed", link)
			}
			delete(k.fail, "LinkSetAlias "+link)
			if _, err := h.Ensure(w); err != nil {
				t.Fatal(err)
			}
			if a := k.links[w.Parent].Attrs().Alias; a != OwnerAlias(w.Network) {
				t.Errorf("parent %s after the next sync: alias %q, want %q", w.Parent, a, OwnerAlias(w.Network))
			}
			if a := k.links[w.ShimLink].Attrs().Alias; a != ShimAlias(w.Network) {
				t.Errorf("shim %s after the next sync: alias %q, want %q", w.ShimLink, a, ShimAlias(w.Network))
			}
		})
	}
}

// TestEnsureMarkAndUndoFail: when the unmarked link cannot be deleted
// either, the error says it is left and how to remove it.
func TestEnsureMarkAndUndoFail(t *testing.T) {
	k := vlanHost()
	k.fail["LinkSetAlias bond0.40"] = errors.New("injected alias failure")
	k.fail["LinkDel bond0.40"] = errors.New("injected delete failure")
	_, err := Host{k: k}.Ensure(vlanWant())
	for _, want := range []string{"injected alias failure", "injected delete failure", "left unmarked", "ip link del bond0.40"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Ensure: %v; want it to say %q", err, want)
		}
	}
}
