package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// TestDownSparesOthersProcesses: a process that only names the lab's
// directory — a user's `tail -f` of a node's log — is not the lab's, even
// when a pid file of the lab (in a VM node's directory, the guest's to
// write) names it. Before, Down killed every process whose command line
// named the state directory, and Leftovers reported it as the lab's.
func TestDownSparesOthersProcesses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spare")
	node := filepath.Join(dir, "node1")
	if err := os.MkdirAll(node, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(node, "agent.log")
	if err := os.WriteFile(logFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tail := exec.Command("tail", "-f", logFile)
	if err := tail.Start(); err != nil {
		t.Fatalf("start tail -f: %v", err)
	}
	t.Cleanup(func() { tail.Process.Kill(); tail.Wait() })
	pid := tail.Process.Pid
	if err := os.WriteFile(filepath.Join(node, "qemu.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Seen by the scan (so the check below can fail): naming a file in
	// the directory is what the lab used to go by.
	namesLog := func(args []string) bool { return slices.Contains(args, logFile) }
	if !slices.ContainsFunc(processes(namesLog), func(p proc) bool { return p.pid == pid }) {
		t.Fatalf("tail -f %s (pid %d) not among the processes naming %s: the scan sees nothing", logFile, pid, dir)
	}
	if slices.ContainsFunc(labProcs(dir), func(p proc) bool { return p.pid == pid }) {
		t.Errorf("Down would kill %d (tail -f %s), not the lab's", pid, logFile)
	}
}

// TestOwnProc: the command lines the lab starts in the root PID namespace
// are its own, by their shape and exact paths; any other that names the
// directory is not.
func TestOwnProc(t *testing.T) {
	const dir = "/var/lib/underlay/lab/t1"
	own := ownProc(dir)
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{holderName, "-c", "while :; do sleep 3600 & wait; done", dir + "/node1"}, true},
		{[]string{holderName, "-c", "while :; do sleep 3600 & wait; done", dir + "/net"}, true},
		{[]string{"unshare", "--net", "--pid", "--fork", "--", "bash", "-c", "script", "underlay-lab-setup", dir + "/net", "t1"}, true},
		{[]string{"bash", "-c", "script", "underlay-lab-setup", dir + "/node2", "t1-node2"}, true},
		{[]string{"nsenter", "--target", "42", "--net", "--mount", "--uts", "--pid", "--wd=" + dir + "/node1", "--", "dockerd", "--data-root", dir + "/node1/data"}, true},
		{[]string{"qemu-system-x86_64", "-name", "ul-t1-node1", "-pidfile", dir + "/node1/qemu.pid"}, true},
		{[]string{"nsenter", "--target", "42", "--net", "--", "qemu-system-x86_64", "-pidfile", dir + "/node1/qemu.pid"}, true},
		{[]string{"/var/lib/underlay/lab/t1/bin/underlay", "lab", vlanPortKey, "--trunk", "vl40t", "--state-dir", dir + "/net"}, true},
		// Not the lab's: they only name its directory.
		{[]string{"tail", "-f", dir + "/node1/agent.log"}, false},
		{[]string{"less", dir + "/node1/console.log"}, false},
		{[]string{"bash", "-c", "cat " + dir + "/node1/agent.log"}, false},
		{[]string{"sh", "-c", "x", "underlay-lab-setup", dir + "/node1"}, false},
		{[]string{"nsenter", "--target", "42", "--", "cat", "--wd=" + dir + "/node1"}, false},
		{[]string{"qemu-system-x86_64", "-pidfile", dir + "/node1/other.pid"}, false},
		{[]string{"underlay", "lab", "vm-exec", "--node-dir", dir + "/node1", "--", "sh"}, false},
		{[]string{holderName, "-c", "x", "/var/lib/underlay/lab/t12/node1"}, false},
		{[]string{holderName, "-c", "x", dir + "/node1/data"}, false},
		{[]string{"sleep", "3600"}, false},
		{[]string{"x"}, false},
	} {
		if got := own(tc.args); got != tc.want {
			t.Errorf("ownProc(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestOwnProcOtherStateRoots: what the lab in one state directory starts
// is its own, and not what the same-named lab of another state root (one
// whose path ends in this one's, /tmp/x/var/lib/underlay/lab/t1) or a lab
// whose name starts with this one's (t12) starts, even where a later
// argument names this lab's directory.
func TestOwnProcOtherStateRoots(t *testing.T) {
	const dir = "/var/lib/underlay/lab/t1"
	own := ownProc(dir)
	wrap := func(nodeDir string, args ...string) []string {
		return daemonArgs(42, nodeDir, daemon{args: args})
	}
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{wrap(dir+"/node1", "dockerd", "--data-root", dir+"/node1/data"), true},
		{wrap(dir+"/node2", "underlay", "agent"), true},
		{wrap(dir+"/node1", "dockerd", "--config-file="+dir+"/node1/daemon.json"), true},
		{[]string{holderName, "-c", "loop", dir + "/node1"}, true},
		{[]string{"qemu-system-x86_64", "-serial", "file:" + dir + "/node1/console.log", "-pidfile", dir + "/node1/qemu.pid"}, true},
		{[]string{"qemu-system-x86_64", "-virtfs", "local,path=" + dir + "/node1,mount_tag=node", "-pidfile", dir + "/node1/qemu.pid"}, true},
		// Named by the lab's directory only, not started by the lab.
		{[]string{"rm", "-rf", dir}, false},
		{[]string{"dockerd", "--data-root", dir + "/node1/data"}, false},
		// The lab t12's.
		{wrap("/var/lib/underlay/lab/t12/node1", "dockerd", "--data-root", "/var/lib/underlay/lab/t12/node1/data"), false},
		{[]string{holderName, "-c", "loop", "/var/lib/underlay/lab/t12/node1"}, false},
		// The same-named lab's of another state root ending in this one.
		{wrap("/tmp/x"+dir+"/node1", "dockerd", "--data-root", "/tmp/x"+dir+"/node1/data"), false},
		{wrap("/srv"+dir+"/node1", "dockerd", "--data-root="+dir), false},
		{[]string{holderName, "-c", "loop", "/tmp/x" + dir + "/node1"}, false},
		{[]string{"qemu-system-x86_64", "-virtfs", "local,path=/x" + dir + "/node1,mount_tag=node", "-pidfile", "/x" + dir + "/node1/qemu.pid"}, false},
		{[]string{"underlay", "lab", vlanPortKey, "--state-dir", "/srv" + dir + "/net"}, false},
		// ... even when a later argument, or a later place, is this lab's.
		{[]string{"sh", "-c", "ls /tmp/x" + dir + " " + dir + "/node1"}, false},
		{[]string{"qemu-system-x86_64", "-pidfile", "/x" + dir + "/node1/qemu.pid", "-drive", "file=" + dir + "/node1/disk.img"}, false},
		{[]string{"sleep", "3600"}, false},
	} {
		if got := own(tc.args); got != tc.want {
			t.Errorf("ownProc(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestVMProcMatchers: a VM node's QEMU, the VLAN access port and what a
// VM lab's memory counts are found by the exact command lines the lab
// starts them with, as ownProc finds them. Before, any QEMU naming the
// node's directory was the node's (EnsureNode killed a user's QEMU
// inspecting its disk image), a `grep vm-vlan-port` of the port's log was
// the port (so lab up did not start it), and the memory counted every
// process naming the lab's directory (a `tail -f` of a console log).
func TestVMProcMatchers(t *testing.T) {
	const dir = "/var/lib/underlay/lab/t1"
	const node, net = dir + "/node1", dir + "/net"
	qemu := []string{"qemu-system-x86_64", "-name", "ul-t1-node1", "-drive", "file=" + node + "/disk.img,if=virtio", "-pidfile", node + "/qemu.pid"}
	port := []string{dir + "/bin/0123456789abcdef/underlay", "lab", vlanPortKey, "--trunk", "vl40t", "--state-dir", net}
	holder := []string{holderName, "-c", "while :; do sleep 3600 & wait; done", net}
	for _, tc := range []struct {
		what  string
		match func([]string) bool
		args  []string
		want  bool
	}{
		{"qemuProc", qemuProc(node), qemu, true},
		{"qemuProc", qemuProc(node), append([]string{"nsenter", "--target", "42", "--net", "--"}, qemu...), true},
		{"qemuProc", qemuProc(node), []string{"qemu-system-x86_64", "-drive", "file=" + node + "/disk.img,format=raw", "-snapshot"}, false},
		{"qemuProc", qemuProc(node), []string{"qemu-system-x86_64", "-pidfile", node + "/other.pid"}, false},
		{"qemuProc", qemuProc(node), []string{"qemu-system-x86_64", "-pidfile", dir + "/node2/qemu.pid", "-drive", "file=" + node + "/disk.img"}, false},
		{"qemuProc", qemuProc(node), []string{"tail", "-f", node + "/qemu.log"}, false},
		{"vlanPortProc", vlanPortProc(net), port, true},
		{"vlanPortProc", vlanPortProc(net), append([]string{"nsenter", "--target", "42", "--net", "--"}, port...), true},
		{"vlanPortProc", vlanPortProc(net), []string{"grep", vlanPortKey, net + "/vlan-port.log"}, false},
		{"vlanPortProc", vlanPortProc(net), []string{"underlay", "lab", vlanPortKey, "--state-dir", dir + "/other"}, false},
		{"ownProc", ownProc(dir), qemu, true},
		{"ownProc", ownProc(dir), port, true},
		{"ownProc", ownProc(dir), holder, true},
		{"ownProc", ownProc(dir), []string{"tail", "-f", node + "/console.log"}, false},
		{"ownProc", ownProc(dir), []string{dir + "/bin/0123456789abcdef/underlay", "lab", "vm-exec", "--node-dir", node, "--", "sh"}, false},
	} {
		if got := tc.match(tc.args); got != tc.want {
			t.Errorf("%s(%q) = %v, want %v", tc.what, tc.args, got, tc.want)
		}
	}
}
