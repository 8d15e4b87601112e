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
// shims, containers, Consul, the agent).
func Memory(name string) (int64, error) {
	p, err := loadPlan(DefaultStateRoot, name)
	if err != nil {
		return 0, err
	}
	nsOf := func(pid int) string {
		ns, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "pid"))
		return ns
	}
	labNS := map[string]bool{}
	for i := range p.nodes {
		h := holderPID(p.nodeDir(&p.nodes[i]))
		if h == 0 {
			return 0, fmt.Errorf("lab %s: node %s has no holder process", name, p.nodes[i].Name)
		}
		labNS[nsOf(h)] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var total int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !labNS[nsOf(pid)] {
			continue
		}
		total += rssBytes(pid)
	}
	return total, nil
}

// rssBytes reads a process's resident set size.
func rssBytes(pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fields := strings.Fields(v)
			if len(fields) > 0 {
				kb, _ := strconv.ParseInt(fields[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
