package netspec

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestErrorsQuoteToShow: errors naming a spec's fields, which any token
// that may write specs chooses, or a node's name or ID, quote them with
// what would not show escaped (U+3164 reads as nothing, and %q left it as
// it is), so that "lan\u3164" is not read as "lan".
func TestErrorsQuoteToShow(t *testing.T) {
	const f = "\u3164"
	with := func(change func(*Spec)) Spec {
		s := validSpec()
		change(&s)
		return s
	}
	taken := other()
	taken.Name, taken.Subnet = "old"+f, validSpec().Subnet
	deleting := with(func(s *Spec) { s.Name, s.Deleting = "gone"+f, true })
	doc, err := json.Marshal(with(func(s *Spec) { s.Name = "lan" + f }))
	if err != nil {
		t.Fatal(err)
	}
	_, decodeNameErr := DecodeSpec("lan", doc)
	doc, err = json.Marshal(with(func(s *Spec) { s.Parent = "eth0" + f }))
	if err != nil {
		t.Fatal(err)
	}
	_, decodeParentErr := DecodeSpec("lan", doc)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"name", Validate(with(func(s *Spec) { s.Name = "lan" + f }), nil), `network name "lan\u3164": `},
		{"parent", Validate(with(func(s *Spec) { s.Parent = "eth0" + f }), nil), `parent "eth0\u3164": not an interface name`},
		{"VLAN parent", Validate(with(func(s *Spec) { s.Parent = "." + f + ".40" }), nil), `parent ".\u3164.40": `},
		{"ipam", Validate(with(func(s *Spec) { s.IPAM = "cluster" + f }), nil), `ipam "cluster\u3164": `},
		{"driver", Validate(with(func(s *Spec) { s.Driver = "macvlan" + f }), nil), `driver "macvlan\u3164": `},
		{"ipvlan mode", Validate(with(func(s *Spec) { s.Driver, s.IPvlanMode = "ipvlan", "l2"+f }), nil), `ipvlan mode "l2\u3164": `},
		{"aux name", Validate(with(func(s *Spec) { s.Aux = map[string]netip.Addr{"printer" + f: netip.MustParseAddr("192.168.10.250")} }), nil), `aux address name "printer\u3164": `},
		{"existing network's name", Validate(validSpec(), []Spec{taken}), `"old\u3164" (192.168.10.0/24)`},
		{"stored", CheckStored([]Spec{deleting})["gone"+f], `network name "gone\u3164": `},
		{"decoded name", decodeNameErr, `holds the spec of network "lan\u3164"`},
		{"decoded parent", decodeParentErr, `parent "eth0\u3164": not an interface name`},
		{"node name", CheckNodeName("n" + f), `'\u3164' is not allowed`},
		{"node ID", CheckNodeID("1bcef6utixb0l0ca7gxuiv" + f), `'\u3164' is not allowed`},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to hold %s", tc.name, tc.err, tc.want)
		}
	}
}

// TestDecodeAndVLANErrorsQuoteToShow: what encoding/json and netip quote
// of a spec document (a field's name, an address) with %q, and the device
// of a VLAN parent with two dots, printed raw, showed U+3164 as nothing;
// they are escaped now. A Graphic one prints as before.
func TestDecodeAndVLANErrorsQuoteToShow(t *testing.T) {
	const f = "\u3164"
	decode := func(doc string) error {
		_, err := DecodeSpec("lan", []byte(doc))
		return err
	}
	kv := kvtest.New()
	ctx := context.Background()
	if err := kv.Put(ctx, nodesPrefix("lan")+"id"+f, []byte(`{"range":"10.0.0.0/28`+f+`"}`)); err != nil {
		t.Fatal(err)
	}
	reports, err := NewStore(kv).Reports(ctx, "lan")
	if err != nil || len(reports) != 1 {
		t.Fatalf("reports %+v, %v; want one", reports, err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"node report", errors.New(reports[0].State.Error), `unreadable report "underlay/networks/lan/nodes/id\u3164" (netip.ParsePrefix("10.0.0.0/28\u3164")`},
		{"subnet", decode(`{"name":"lan","subnet":"10.0.0.0/24` + f + `"}`), `netip.ParsePrefix("10.0.0.0/24\u3164")`},
		{"subnet, Graphic", decode(`{"name":"lan","subnet":"10.0.0.0/24x"}`), `netip.ParsePrefix("10.0.0.0/24x")`},
		{"unknown field", decode(`{"name":"lan","mtu` + f + `":1}`), `unknown field "mtu\u3164"`},
		{"VLAN device", Validate(func() Spec { s := validSpec(); s.Parent = "." + f + ".40"; return s }(), nil), `VLAN 40 on ".\u3164", a name with two dots`},
		{"VLAN device, Graphic", Validate(func() Spec { s := validSpec(); s.Parent = ".x.40"; return s }(), nil), `VLAN 40 on .x, a name with two dots`},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to hold %s", tc.name, tc.err, tc.want)
		}
	}
}
