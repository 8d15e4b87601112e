package netspec

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/underlay/underlay/internal/termtext"
)

// Docker drivers of underlay networks.
const (
	Macvlan = "macvlan"
	IPvlan  = "ipvlan"
)

// ipvlan modes. In l2 the containers are hosts of the parent's L2 network,
// answering ARP like macvlan ones (with the parent's MAC). In l3 the node
// routes: containers answer no ARP, so the network's router must route
// each node's range to that node's address on the parent's network —
// which is why l3 takes per-node ranges, never the cluster pool, whose
// addresses are not grouped by node.
const (
	IPvlanL2 = "l2"
	IPvlanL3 = "l3"
)

// DriverName is s's Docker driver: macvlan unless the spec says ipvlan
// (specs stored before drivers could be chosen say nothing).
func (s Spec) DriverName() string {
	if s.Driver == "" {
		return Macvlan
	}
	return s.Driver
}

// IPvlanModeName is s's ipvlan mode, l2 unless it says l3; "" for macvlan.
func (s Spec) IPvlanModeName() string {
	switch {
	case s.DriverName() != IPvlan:
		return ""
	case s.IPvlanMode == "":
		return IPvlanL2
	}
	return s.IPvlanMode
}

// DriverOptions are the Docker driver options of a node's config-only network.
func (s Spec) DriverOptions() map[string]string {
	o := map[string]string{"parent": s.Parent}
	if m := s.IPvlanModeName(); m != "" {
		o["ipvlan_mode"] = m
	}
	return o
}

// NeedsPromisc reports whether the parent must be promiscuous: macvlan
// endpoints have MAC addresses of their own, ipvlan ones share the parent's.
func (s Spec) NeedsPromisc() bool { return s.DriverName() == Macvlan }

// vlanParentRE matches a name ending in a dot and digits, any number of
// them: Docker's drivers read them with strconv.Atoi, so eth0.04094 is
// VLAN 4094 to them, and eth0.00000 VLAN 0, which they refuse.
var vlanParentRE = regexp.MustCompile(`^(.+)\.([0-9]+)$`)

// VLANParent splits a parent named like a VLAN sub-interface (bond0.40)
// into its lower device and VLAN id, as Docker's macvlan and ipvlan
// drivers read such names; ok is false for other names, and for an id
// out of 1 to 4094. A lower device with a dot of its own (bond0.40.5)
// those drivers would not make (see vlanNameProblem): Validate refuses
// such a parent, but one an older agent made is still read as the VLAN
// it is, to be taken apart.
func VLANParent(parent string) (lower string, vid int, ok bool) {
	m := vlanParentRE.FindStringSubmatch(parent)
	if m == nil {
		return "", 0, false
	}
	vid, err := strconv.Atoi(m[2])
	if err != nil || vid < 1 || vid > 4094 {
		return "", 0, false
	}
	return m[1], vid, true
}

// WithVLAN is the parent of VLAN vid on link lower (--parent bond0 --vlan
// 40 is bond0.40); vid 0 leaves lower as it is.
func WithVLAN(lower string, vid int) (string, error) {
	if vid == 0 {
		return lower, nil
	}
	if vid < 1 || vid > 4094 {
		return "", fmt.Errorf("--vlan %d: want 1 to 4094", vid)
	}
	if lower == "" {
		// Else the parent would be ".40", refused as if given so.
		return "", fmt.Errorf("--vlan %d needs --parent, the device the VLAN is on (--parent bond0 --vlan %d is bond0.%d)", vid, vid, vid)
	}
	if l, v, ok := VLANParent(lower); ok {
		return "", fmt.Errorf("--vlan %d with --parent %s: the parent is already VLAN %d on %s; give --parent %s", vid, lower, v, l, l)
	}
	return lower + "." + strconv.Itoa(vid), nil
}

// CheckDriverMode checks a network's driver and ipvlan mode, the part of
// Validate a node applying a network's links can judge on its own.
func CheckDriverMode(driver, mode string) error {
	s := Spec{Driver: driver, IPvlanMode: mode}
	switch s.DriverName() {
	case Macvlan:
		if mode != "" {
			return fmt.Errorf("ipvlan mode %s given for a macvlan network (add --driver ipvlan)", termtext.Q(mode))
		}
	case IPvlan:
		if m := s.IPvlanModeName(); m != IPvlanL2 && m != IPvlanL3 {
			return fmt.Errorf("ipvlan mode %s: want l2 or l3", termtext.Q(mode))
		}
	default:
		return fmt.Errorf("driver %s: want macvlan or ipvlan", termtext.Q(driver))
	}
	return nil
}

// checkDriver checks the driver and its mode, with the IPAM mode.
func checkDriver(s Spec, bad func(string, ...any)) {
	switch err := CheckDriverMode(s.Driver, s.IPvlanMode); {
	case err != nil:
		bad("%w", err)
	case s.IPvlanModeName() == IPvlanL3 && s.IPAM == Cluster:
		bad("ipvlan mode l3 with cluster IPAM: in l3 the router must route each node's range to the node, so l3 needs --ipam per-node")
	}
}

// vlanNameProblem says why parent, named like a VLAN sub-interface (a dot
// and digits, or nothing, at its end), is not one Docker's macvlan and
// ipvlan drivers can make; "" when it is, or is not named so. At boot
// dockerd restores the networks before the agent runs, and its driver
// makes a missing dotted parent as parseVlan reads it (libnetwork's
// drivers/macvlan and ipvlan, createVlanLink): exactly one dot, a device
// before it and an id of 1 to 4094 (strconv.Atoi) after it. A name it
// cannot read so it refuses, and the network's containers do not start
// until the agent makes the parent. A dotted name ending otherwise
// (br.lan) is an interface that must exist, to Docker as to the agent.
func vlanNameProblem(parent string) string {
	const docker = "Docker's macvlan and ipvlan drivers make a missing parent only as device.vlan_id with one dot (eth0.10), as dockerd does at boot before the agent runs"
	i := strings.LastIndexByte(parent, '.')
	if i < 0 {
		return ""
	}
	device, id := parent[:i], parent[i+1:]
	switch {
	case id == "":
		return "no VLAN id after the dot: " + docker
	case strings.Trim(id, "0123456789") != "":
		return ""
	case device == "":
		return "no device before the dot: " + docker
	case strings.Contains(device, "."):
		vid, _ := strconv.Atoi(id)
		return fmt.Sprintf("VLAN %d on %s, a name with two dots: %s, and could not make this one; give a VLAN of a device, or name the link without dots", vid, termtext.Cell(device), docker)
	}
	if _, _, ok := VLANParent(parent); !ok {
		return fmt.Sprintf("VLAN id %s out of 1 to 4094", id)
	}
	return ""
}
