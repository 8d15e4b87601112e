package lab

import (
	"slices"
	"testing"
)

// TestLabProcesses: a lab's memory counts the processes of its nodes' PID
// namespaces and of the containers below them, and nothing of the machine.
func TestLabProcesses(t *testing.T) {
	procs := map[int]procLink{
		1:   {ns: "root"},
		50:  {ns: "root", ppid: 1},    // a machine daemon
		100: {ns: "root", ppid: 1},    // `underlay lab` itself
		200: {ns: "node1", ppid: 100}, // node1's holder
		201: {ns: "node1", ppid: 200}, // its dockerd
		202: {ns: "node1", ppid: 201}, // a containerd shim
		300: {ns: "ctr1", ppid: 202},  // a container's init
		301: {ns: "ctr1", ppid: 300},  // and its child
		400: {ns: "node2", ppid: 100}, // node2's holder
		500: {ns: "other", ppid: 50},  // a container of the machine's dockerd
		600: {ns: "ctr9", ppid: 999},  // parent gone
	}
	got := labProcesses(procs, map[string]bool{"node1": true, "node2": true})
	slices.Sort(got)
	want := []int{200, 201, 202, 300, 301, 400}
	if !slices.Equal(got, want) {
		t.Errorf("labProcesses = %v, want %v", got, want)
	}
}
