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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.mutate(&o)
			got, err := Repairs(o)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("repairs (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := Repairs(Observed{}); !errors.Is(err, ErrNoParent) {
		t.Errorf("missing parent: err %v, want ErrNoParent", err)
	}
}
