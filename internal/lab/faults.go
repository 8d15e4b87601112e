package lab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/lab/guest"
)

// Components of a node that the fault API (Signal, Kill, Stop, Cont,
// Start, Restart) acts on.
const (
	ComponentAgent   = "agent"
	ComponentDockerd = "dockerd"
	ComponentConsul  = "consul"
	// ComponentControl is `underlay control`, on managers only.
	ComponentControl = "control"
)

// Components are the components the fault API knows.
var Components = []string{ComponentAgent, ComponentDockerd, ComponentConsul, ComponentControl}

// errNetnsOnly: the fault API works on the processes and links of
// namespace nodes; a VM node's are inside its guest.
var errNetnsOnly = errors.New("faults are injected into namespace nodes only")

// daemonOf returns the daemon that component names on n.
func (p *plan) daemonOf(n *nodePlan, component string) (daemon, error) {
	if p.cfg.NoAgent && (component == ComponentAgent || component == ComponentControl) {
		return daemon{}, fmt.Errorf("lab %s runs no underlay agent", p.cfg.Name)
	}
	if p.cfg.Agents == AgentsStack && (component == ComponentAgent || component == ComponentControl) {
		return daemon{}, fmt.Errorf("lab %s runs its agents as a stack: no %s process of the lab's", p.cfg.Name, component)
	}
	switch component {
	case ComponentAgent:
		return p.agent(n), nil
	case ComponentDockerd:
		return p.dockerd(n), nil
	case ComponentConsul:
		return p.consul(n), nil
	case ComponentControl:
		if n.Role != RoleManager {
			return daemon{}, fmt.Errorf("node %s is a worker: %s runs on managers only", n.Name, component)
		}
		return p.control(n), nil
	}
	return daemon{}, fmt.Errorf("component %q: want one of %s", component, strings.Join(Components, ", "))
}

// wrapperPIDFile is the file, in the node's directory, where Start records
// the root-namespace pid of the nsenter that runs d.
func wrapperPIDFile(d daemon) string { return strings.TrimSuffix(d.log, ".log") + ".wrapper.pid" }

// isWrapper reports whether args is the command line of the nsenter that
// runs daemon key for the node whose directory is nodeDir.
func isWrapper(args []string, nodeDir, key string) bool {
	if len(args) == 0 || filepath.Base(args[0]) != "nsenter" {
		return false
	}
	wd := false
	for i, a := range args {
		if a == "--wd="+nodeDir {
			wd = true
		}
		if a == "--" {
			return wd && daemonKey(args[i+1:]) == key
		}
	}
	return false
}

// parsePID reads a pid file's content.
func parsePID(b []byte) (int, error) {
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid %q: not a process id", strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// childIn picks, among procs, the child of parent that lives in PID
// namespace ns: the daemon a wrapper runs.
func childIn(procs map[int]procLink, parent int, ns string) int {
	var kids []int
	for pid, p := range procs {
		if p.ppid == parent && p.ns == ns {
			kids = append(kids, pid)
		}
	}
	if len(kids) == 0 {
		return 0
	}
	return slices.Min(kids)
}

// procTable reads every process's PID namespace and parent.
func procTable() map[int]procLink {
	entries, _ := os.ReadDir("/proc")
	procs := map[int]procLink{}
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			procs[pid] = procLink{ns: pidNS(pid), ppid: statusField(pid, "PPid:")}
		}
	}
	return procs
}

// daemonPID is the root-namespace pid of the daemon the lab started as d
// on n: the child, in the node's PID namespace, of the nsenter whose pid
// Start recorded — checked to be that nsenter still, never found by a
// pattern alone. 0 with an error when it does not run.
func (p *plan) daemonPID(n *nodePlan, d daemon) (int, error) {
	dir := p.nodeDir(n)
	holder := holderPID(dir)
	if holder == 0 {
		return 0, fmt.Errorf("node %s is stopped", n.Name)
	}
	b, err := os.ReadFile(filepath.Join(dir, wrapperPIDFile(d)))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("node %s: %s was never started by the lab", n.Name, d.key)
	}
	if err != nil {
		return 0, fmt.Errorf("node %s: %w", n.Name, err)
	}
	wrapper, err := parsePID(b)
	if err != nil {
		return 0, fmt.Errorf("node %s: %s: %w", n.Name, wrapperPIDFile(d), err)
	}
	if !guest.Running(wrapper) || !isWrapper(cmdline(wrapper), dir, d.key) {
		return 0, fmt.Errorf("node %s: %s not running (its recorded wrapper %d is gone)", n.Name, d.key, wrapper)
	}
	pid := childIn(procTable(), wrapper, pidNS(holder))
	if pid == 0 || !guest.Running(pid) {
		return 0, fmt.Errorf("node %s: %s not running (wrapper %d has no child in the node)", n.Name, d.key, wrapper)
	}
	return pid, nil
}

// cmdline reads a process's command line; nil when it is gone.
func cmdline(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// faultTarget loads lab name's node for a fault: namespace nodes only.
func (l Labs) faultTarget(name, node string) (*plan, *nodePlan, error) {
	p, n, err := l.findNode(name, node)
	if err != nil {
		return nil, nil, err
	}
	if p.prov.Kind() != KindNetns {
		return nil, nil, fmt.Errorf("lab %s: %w", name, errNetnsOnly)
	}
	return p, n, nil
}

// PID returns the root-namespace pid of a node's component (agent,
// dockerd, consul, control) as the lab started it.
func (l Labs) PID(name, node, component string) (int, error) {
	p, n, err := l.faultTarget(name, node)
	if err != nil {
		return 0, err
	}
	d, err := p.daemonOf(n, component)
	if err != nil {
		return 0, err
	}
	return p.daemonPID(n, d)
}

// Signal sends sig to a node's component, found by the pid the lab
// recorded when it started it; the error says when it does not run.
func (l Labs) Signal(ctx context.Context, name, node, component string, sig syscall.Signal) error {
	pid, err := l.PID(name, node, component)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("node %s: signal %s (pid %d) with %s: %w", node, component, pid, sig, err)
	}
	return nil
}

// Kill kills a node's component with SIGKILL, as a crash would, and
// waits until it is gone. Start (or Up) starts it again.
func (l Labs) Kill(ctx context.Context, name, node, component string) error {
	pid, err := l.PID(name, node, component)
	if err != nil {
		return err
	}
	if left := killAll([]proc{{pid: pid}}, 10*time.Second); len(left) > 0 {
		return fmt.Errorf("node %s: %s (pid %d) does not die", node, component, pid)
	}
	return nil
}

// Stop stops a node's component with SIGSTOP: it hangs, holding its
// sockets, as a process stuck in the kernel or swapped out does.
func (l Labs) Stop(ctx context.Context, name, node, component string) error {
	return l.Signal(ctx, name, node, component, syscall.SIGSTOP)
}

// Cont resumes a component Stop stopped.
func (l Labs) Cont(ctx context.Context, name, node, component string) error {
	return l.Signal(ctx, name, node, component, syscall.SIGCONT)
}

// Start starts a node's component unless it runs, and waits until it
// answers (dockerd its API, Consul its HTTP API) or runs (agent, control).
func (l Labs) Start(ctx context.Context, name, node, component string) error {
	p, n, err := l.faultTarget(name, node)
	if err != nil {
		return err
	}
	d, err := p.daemonOf(n, component)
	if err != nil {
		return err
	}
	switch component {
	case ComponentDockerd:
		return p.ensureDockerd(ctx, n)
	case ComponentConsul:
		return p.ensureConsul(ctx, n)
	}
	if _, err := p.daemonPID(n, d); err == nil {
		return nil
	}
	return p.prov.Start(ctx, p, n, d)
}

// Restart kills a node's component (when it runs) and starts it again.
func (l Labs) Restart(ctx context.Context, name, node, component string) error {
	if _, err := l.PID(name, node, component); err == nil {
		if err := l.Kill(ctx, name, node, component); err != nil {
			return err
		}
	}
	return l.Start(ctx, name, node, component)
}

// RestartConsulServers restarts the lab's Consul servers (the Consul
// agents of its first nodes) one after the other, each killed as a crash
// would and started again, and waits until the cluster has a leader again.
func (l Labs) RestartConsulServers(ctx context.Context, name string) error {
	p, err := l.loadPlan(name)
	if err != nil {
		return err
	}
	for i := 0; i < p.cfg.ConsulServers; i++ {
		n := &p.nodes[i]
		if err := l.Restart(ctx, name, n.Name, ComponentConsul); err != nil {
			return fmt.Errorf("restart consul server %s: %w", n.Name, err)
		}
	}
	n := &p.nodes[0]
	return poll(ctx, p.wait(n, 60*time.Second), func() error { return consulLeader(ctx, p.consulAddr(n)) },
		func(err error) error { return fmt.Errorf("consul servers restarted: no leader: %w", err) })
}

// consulLeader checks that the Consul agent at addr knows a leader.
func consulLeader(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/status/leader", nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b [128]byte
	k, _ := resp.Body.Read(b[:])
	if leader := strings.Trim(strings.TrimSpace(string(b[:k])), `"`); resp.StatusCode != 200 || leader == "" {
		return fmt.Errorf("consul at %s: %s, leader %q", addr, resp.Status, leader)
	}
	return nil
}

// nodeProcesses lists the root-namespace pids of every process of a node:
// those of its PID namespace (holder, daemons, shims) and those below them
// in PID namespaces of their own (the containers).
func nodeProcesses(holder int) []int {
	ns := pidNS(holder)
	if ns == "" {
		return nil
	}
	return labProcesses(procTable(), map[string]bool{ns: true})
}

// Freeze stops every process of a node with SIGSTOP — its daemons and its
// containers — as a host that hangs does: its links stay up, nothing
// answers. It returns how many processes it stopped; Thaw resumes them.
func (l Labs) Freeze(ctx context.Context, name, node string) (int, error) {
	return l.signalNode(name, node, syscall.SIGSTOP)
}

// Thaw resumes every process of a node Freeze stopped.
func (l Labs) Thaw(ctx context.Context, name, node string) (int, error) {
	return l.signalNode(name, node, syscall.SIGCONT)
}

// signalNode signals every process of a node, listing them again until a
// pass finds none it has not signalled (a process may fork meanwhile).
func (l Labs) signalNode(name, node string, sig syscall.Signal) (int, error) {
	p, n, err := l.faultTarget(name, node)
	if err != nil {
		return 0, err
	}
	holder := holderPID(p.nodeDir(n))
	if holder == 0 {
		return 0, fmt.Errorf("node %s is stopped", n.Name)
	}
	done := map[int]bool{}
	for pass := 0; pass < 10; pass++ {
		fresh := 0
		for _, pid := range nodeProcesses(holder) {
			if done[pid] {
				continue
			}
			fresh++
			done[pid] = true
			if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				return len(done), fmt.Errorf("node %s: signal %d with %s: %w", n.Name, pid, sig, err)
			}
		}
		if fresh == 0 {
			return len(done), nil
		}
	}
	return len(done), fmt.Errorf("node %s: processes kept appearing while signalling them with %s", n.Name, sig)
}

// SetManagementLink takes a node's management link (eth0: swarm, Consul
// gossip, everything but the underlay) down or up from the root namespace
// side, as a pulled cable or a switch port shut would: a partition.
func (l Labs) SetManagementLink(ctx context.Context, name, node string, up bool) error {
	p, n, err := l.faultTarget(name, node)
	if err != nil {
		return err
	}
	host := p.links(n)[0].host
	link, err := netlink.LinkByName(host)
	if err != nil {
		return fmt.Errorf("node %s: management link %s: %w", n.Name, host, err)
	}
	if up {
		err = netlink.LinkSetUp(link)
	} else {
		err = netlink.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("node %s: set %s up=%v: %w", n.Name, host, up, err)
	}
	return nil
}
