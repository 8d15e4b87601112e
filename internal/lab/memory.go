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
