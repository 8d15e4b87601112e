package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Memory is the resident memory, in bytes, of every process of a lab: all
// processes in its nodes' PID namespaces (holder, dockerd, containerd,
// shims, Consul, the agent) and their descendants, which include the
// containers' processes in PID namespaces of their own.
func Memory(name string) (int64, error) {
	p, err := loadPlan(DefaultStateRoot, name)
	if err != nil {
		return 0, err
	}
	labNS := map[string]bool{}
	for i := range p.nodes {
		h := holderPID(p.nodeDir(&p.nodes[i]))
		if h == 0 {
			return 0, fmt.Errorf("lab %s: node %s has no holder process", name, p.nodes[i].Name)
		}
		labNS[pidNS(h)] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	procs := map[int]procLink{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		procs[pid] = procLink{ns: pidNS(pid), ppid: statusField(pid, "PPid:")}
	}
	var total int64
	for _, pid := range labProcesses(procs, labNS) {
		total += int64(statusField(pid, "VmRSS:")) * 1024
	}
	return total, nil
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

func pidNS(pid int) string {
	ns, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "pid"))
	return ns
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
