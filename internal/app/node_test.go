package app

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/decommission"
)

// TestPrintRemoved: node rm says every key it deleted or rewrote, also
// the cluster-IPAM blocks where other nodes' addresses stay.
func TestPrintRemoved(t *testing.T) {
	var out, errOut bytes.Buffer
	printRemoved(IOStreams{Out: &out, ErrOut: &errOut}, decommission.Removed{ID: "gone",
		Addresses: map[string][]netip.Addr{"pool/v4": {netip.MustParseAddr("10.20.0.5")}},
		Keys:      []string{"underlay/ipam/pool/v4/blocks/10.20.0.0_28"},
		Changed:   []string{"underlay/ipam/pool/v4/blocks/10.20.0.16_28"},
	})
	want := `freed address 10.20.0.5 of pool pool/v4
deleted underlay/ipam/pool/v4/blocks/10.20.0.0_28
rewrote underlay/ipam/pool/v4/blocks/10.20.0.16_28 without its records: other nodes' addresses stay
`
	if diff := cmp.Diff(want, out.String()); diff != "" || errOut.Len() > 0 {
		t.Errorf("printed (-want +got):\n%s\nstderr %q", diff, errOut.String())
	}
}
