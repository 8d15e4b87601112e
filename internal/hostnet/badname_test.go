package hostnet

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestRemovalsTakeNoBadName: a spec being deleted needs only a valid
// name (netspec.CheckStored), and an orphan's parent is its config-only
// network's driver option: the parent a removal is given may be no link
// name at all. RemoveParent sent such a name to netlink as it is (looked
// up by alternative name past 15 bytes; "numerical result out of range"
// past 127), and the error stopped the network's removal at every sync;
// ReleasePromisc, looking it up too, warned at each. No link is named so,
// so underlay made none: both now leave it, with no netlink call.
func TestRemovalsTakeNoBadName(t *testing.T) {
	for _, name := range []string{strings.Repeat("p", 200) + ".40", strings.Repeat("p", 20) + ".40", "eth 0.40", "a/b.40", "eth1\n.40", "bond0.40\x00.5"} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0"}},
				&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 1, Alias: OwnerAlias("pool")}, VlanId: 40})
			// As the kernel answers a name past IFNAMSIZ's (ERANGE past
			// an alternative name's 127 bytes), or one it cuts at a NUL.
			k.fail["LinkByName "+name] = fmt.Errorf("netlink asked for link %q: %w", name, syscall.ERANGE)
			h := Host{k: k, Promisc: PromiscFiles{Dir: t.TempDir(), Boot: "boot1"}, Parents: &ParentFile{Path: t.TempDir() + "/parents.json"}}
			if removed, err := h.RemoveParent(name, "pool"); removed || err != nil {
				t.Errorf("RemoveParent(%q): %t, %v; want nothing removed, no error", name, removed, err)
			}
			if off, err := h.ReleasePromisc(name); off || err != nil {
				t.Errorf("ReleasePromisc(%q): %t, %v; want nothing changed, no error", name, off, err)
			}
			if _, ok := k.links["bond0.40"]; !ok {
				t.Errorf("bond0.40 removed")
			}
		})
	}
}
