package hostnet

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
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
