package hostnet

import (
	"errors"
	"strings"
	"testing"
)

// TestInspectParentBadName: a parent no link can be named (a spec in
// Consul is read as written) went to netlink: past 15 bytes it was "not
// found" (up to 127, an alternative name's most) or, past that, a
// netlink error ("numerical result out of range"), which the doctor
// showed as "cannot read links". It is now ErrBadLinkName, naming the
// value, before any netlink call, from InspectParent and Observe alike.
func TestInspectParentBadName(t *testing.T) {
	for _, name := range []string{strings.Repeat("p", 16), strings.Repeat("p", 200), "eth0 x", "a/b", ""} {
		_, err := InspectParent(name)
		if !errors.Is(err, ErrBadLinkName) || !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("InspectParent(%q): %v; want %v naming it", name, err, ErrBadLinkName)
		}
		w := vlanWant()
		w.Parent = name
		if _, err := (Host{k: vlanHost()}).Observe(w); !errors.Is(err, ErrBadLinkName) || !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("Observe with parent %q: %v; want %v naming it", name, err, ErrBadLinkName)
		}
	}
}
