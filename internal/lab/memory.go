package lab

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Memory is the resident memory, in bytes, of everything lab name's nodes
// run: for namespace nodes every process in their PID namespaces (holder,
// dockerd, containerd, shims, containers, Consul, the agent); for VM
// nodes their QEMU processes (the guests' memory in use) and the lab's
// network helpers.
func (l Labs) Memory(name string) (int64, error) {
	p, err := l.loadPlan(name)
	if err != nil {
		return 0, err
	}
	return p.prov.Memory(context.Background(), p)
}

// procLink is what labProcesses needs of one process.
type procLink struct {
	ns   string // its PID namespace, as /proc/PID/ns/pid reads
	ppid int
}

// labProcesses are the processes in one of the lab's PID namespaces or
// descended from one that is: a container's processes live in a PID
// namespace of their own, below their containerd shim in the node's.
func labProcesses(procs map[int]procLink, labNS map[string]bool) []int {
	in := map[int]bool{}
	var member func(pid, depth int) bool
	member = func(pid, depth int) bool {
		p, ok := procs[pid]
		if !ok || pid <= 1 || depth > 64 {
			return false
		}
		if v, seen := in[pid]; seen {
			return v
		}
		v := labNS[p.ns] || member(p.ppid, depth+1)
		in[pid] = v
		return v
	}
	var out []int
	for pid := range procs {
		if member(pid, 0) {
			out = append(out, pid)
		}
	}
	return out
}

// statusField reads the first number of a /proc/PID/status line, 0 when
// the process is gone or has no such line (kernel threads have no VmRSS).
func statusField(pid int, key string) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			fields := strings.Fields(v)
			if len(fields) > 0 {
				n, _ := strconv.Atoi(fields[0])
				return n
			}
		}
	}
	return 0
}

// rssBytes reads a process's resident set size.
func rssBytes(pid int) int64 { return int64(statusField(pid, "VmRSS:")) * 1024 }
