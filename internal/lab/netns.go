package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// netnsProvider runs nodes as namespaces of this machine's kernel: each
// node's network, mount, UTS and PID namespaces are held by one holder
// process, its daemons are started with nsenter, and its eth0 and eth1 are
// veths on bridges of the root namespace.
type netnsProvider struct{}

// Kind implements provider.
func (netnsProvider) Kind() string { return KindNetns }

// Preflight implements provider.
func (netnsProvider) Preflight(cfg Config) error {
	return needPrograms("dockerd", "consul", "unshare", "nsenter", "iptables", "bash")
}

// needPrograms checks that every program is in PATH.
func needPrograms(progs ...string) error {
	for _, prog := range progs {
		if _, err := exec.LookPath(prog); err != nil {
			return fmt.Errorf("lab: %s not found in PATH (install it with scripts/install-deps.sh): %w", prog, err)
		}
	}
	return nil
}

// EnsureNetwork implements provider: the two bridges and the firewall rules.
func (netnsProvider) EnsureNetwork(ctx context.Context, p *plan, log *slog.Logger) error {
	if err := checkBridges(p.cfg.Name, p.bridgeM, p.bridgeU); err != nil {
		return err
	}
	if err := ensureBridge(log, p.bridgeM, netip.PrefixFrom(p.mgmtGW, p.mgmt.Bits())); err != nil {
		return err
	}
	if err := ensureBridge(log, p.bridgeU, netip.PrefixFrom(p.gateway, p.subnet.Bits())); err != nil {
		return err
	}
	return ensureFirewall(p.cfg.Name)
}

// EnsureNode implements provider: the holder and the node's links.
func (netnsProvider) EnsureNode(ctx context.Context, p *plan, n *nodePlan) error {
	dir := p.nodeDir(n)
	pid, err := ensureHolder(ctx, dir, []string{"--net", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "--propagation", "private"},
		nodeHolderScript, n.Host, []string{"exec", "docker.pid", "docker.sock"})
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if err := ensureNodeLinks(pid, p.links(n), p.mgmtGW); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

// nodeHolderScript runs in the node's new namespaces: it gives the node a
// /run of its own, as a host has (Docker's plugin directory, containerd's
// runtime directory, the Docker socket at its standard path), names the
// host, and becomes the node's PID 1 ($1 is the node's state directory, $2
// its host name). PID 1 reaps orphans: bash reaps any child.
const nodeHolderScript = `set -e
mount -t tmpfs -o mode=0755 underlay-lab /run
mkdir -p -m 0700 /run/docker/plugins
mkdir -p -m 0711 /run/containerd
mkdir -p -m 1777 /run/lock
touch ` + privateRunMark + `
hostname "$2"
exec -a ` + holderName + ` bash -c 'while :; do sleep 3600 & wait; done' "$1"`

// privateRunMark is made in a node's own /run: a node held by a holder of
// an older lab has none, and shares the machine's /run.
const privateRunMark = "/run/.underlay-lab-node"

// ensureHolder starts a namespace holder for dir (made with unshare and
// the given flags, running script with dir and arg) unless one runs, and
// returns its pid. Files named stale are removed from dir first: runtime
// state of earlier daemons.
func ensureHolder(ctx context.Context, dir string, unshare []string, script, arg string, stale []string) (int, error) {
	if pid := holderPID(dir); pid != 0 {
		return pid, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	for _, s := range stale {
		if err := os.RemoveAll(filepath.Join(dir, s)); err != nil {
			return 0, fmt.Errorf("remove stale %s: %w", s, err)
		}
	}
	args := append(append([]string{"unshare"}, unshare...), "--", "bash", "-c", script, setupName, dir, arg)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = "/"
	if err := startDetached(cmd, filepath.Join(dir, "holder.log")); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pid := holderPID(dir); pid != 0 {
			os.WriteFile(filepath.Join(dir, "holder.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644)
			return pid, nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "holder.log"))
			return 0, fmt.Errorf("namespace holder did not start: %s", log)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// linkSuffix is node i's character in its links' names: the index in
// base 36 (1–9, a for node 10, …), one character, so that the longest lab
// name's links stay within the kernel's 15 characters.
func linkSuffix(i int) string { return strconv.FormatInt(int64(i), 36) }

// links are the node's eth0 (management) and eth1 (underlay parent).
func (p *plan) links(n *nodePlan) []nodeLink {
	idx := linkSuffix(n.Index)
	return []nodeLink{
		{host: p.bridgeM + idx, bridge: p.bridgeM, inside: "eth0", addr: netip.PrefixFrom(n.MgmtIP, p.mgmt.Bits())},
		{host: p.bridgeU + idx, bridge: p.bridgeU, inside: "eth1"},
	}
}

// Layout implements provider: everything in the node's state directory,
// which the root namespace shares.
func (netnsProvider) Layout(p *plan, n *nodePlan) layout {
	dir := p.nodeDir(n)
	sock := "unix://" + filepath.Join(dir, "docker.sock")
	listen := []string{sock}
	// At the standard path too, for what runs in the node (the stack's
	// agent), when the node has its own /run: never the machine's!
	if pid := holderPID(dir); pid != 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", pid, privateRunMark)); err == nil {
			listen = append(listen, NodeDockerHost)
		}
	}
	return layout{
		DockerListen: listen, DockerHost: sock,
		DockerData: filepath.Join(dir, "data"), DockerExec: filepath.Join(dir, "exec"), DockerPid: filepath.Join(dir, "docker.pid"),
		ConsulData: filepath.Join(dir, "consul"), AgentState: filepath.Join(dir, "agent-state"), LogDir: dir, UnderlayBin: p.cfg.UnderlayBin, Parent: "eth1",
	}
}

// Env implements provider: the caller's environment without anything that
// would point Docker, Consul or underlay elsewhere, with the lab's Docker
// engine first on PATH.
func (netnsProvider) Env(p *plan, n *nodePlan) []string {
	engine, _ := EngineBinDir(p.cfg.Engine) // validated with the config
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DOCKER_") || strings.HasPrefix(k, "CONSUL_") || strings.HasPrefix(k, "UNDERLAY_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "DOCKER_HOST="+p.dockerHost(n), "CONSUL_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(ConsulHTTPPort))
	return withPath(env, engine)
}

// Start implements provider: the daemon runs under nsenter (its parent,
// for as long as it lives), whose pid goes to a file in the node's directory.
func (pr netnsProvider) Start(ctx context.Context, p *plan, n *nodePlan, d daemon) error {
	dir := p.nodeDir(n)
	holder := holderPID(dir)
	if holder == 0 {
		return fmt.Errorf("node %s is stopped", n.Name)
	}
	// Whatever runs as that daemon in the node goes, started by the lab or
	// by hand, answering or hung.
	if left := killAll(append(daemonWrappers(dir, d.key), nodeProcs(holder, d.key)...), 10*time.Second); len(left) > 0 {
		return fmt.Errorf("node %s: old %s (pid %d) does not die", n.Name, d.key, left[0].pid)
	}
	if d.key == p.dockerd(n).key {
		l := pr.Layout(p, n)
		os.Remove(l.DockerPid)
		os.Remove(strings.TrimPrefix(l.DockerHost, "unix://"))
	}
	args := daemonArgs(holder, dir, d)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(pr.Env(p, n), d.env...)
	cmd.Dir = "/"
	if err := startDetached(cmd, filepath.Join(dir, d.log)); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	pidFile := strings.TrimSuffix(d.log, ".log") + ".wrapper.pid"
	return os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

// daemonArgs is the command line Start runs daemon d with in the node
// held by holder, whose state directory is dir: nsenter, in dir (which
// ownProc knows it by), running d.
func daemonArgs(holder int, dir string, d daemon) []string {
	return append(append(nsenterArgs(holder), "--wd="+dir, "--"), d.args...)
}

// Running implements provider.
func (netnsProvider) Running(ctx context.Context, p *plan, n *nodePlan, key string) bool {
	return len(daemonWrappers(p.nodeDir(n), key)) > 0
}

// Kill implements provider.
func (netnsProvider) Kill(ctx context.Context, p *plan, n *nodePlan, key string) error {
	holder := holderPID(p.nodeDir(n))
	if holder == 0 {
		return fmt.Errorf("node %s is stopped", n.Name)
	}
	ps := nodeProcs(holder, key)
	if len(ps) == 0 {
		return fmt.Errorf("node %s: %s not running", n.Name, key)
	}
	if left := killAll(ps, 10*time.Second); len(left) > 0 {
		return fmt.Errorf("node %s: %s (pid %d) does not die", n.Name, key, left[0].pid)
	}
	return nil
}

// nodeProcs lists the processes of the node held by holder (in its PID
// namespace) that run daemon key.
func nodeProcs(holder int, key string) []proc {
	ns := pidNS(holder)
	if ns == "" {
		return nil
	}
	return processes(func(args []string) bool { return daemonKey(args) == key && args[0] != "nsenter" }, func(pid int) bool { return pidNS(pid) == ns })
}

// pidNS names the PID namespace of pid; "" when it is gone.
func pidNS(pid int) string { return nsOf(pid, "pid") }

// Command implements provider.
func (pr netnsProvider) Command(ctx context.Context, p *plan, n *nodePlan, args []string) (*exec.Cmd, error) {
	pid := holderPID(p.nodeDir(n))
	if pid == 0 {
		return nil, fmt.Errorf("node %s of lab %s is stopped (run `underlay lab up --name %s`)", n.Name, p.cfg.Name, p.cfg.Name)
	}
	full := append(append(nsenterArgs(pid), "--"), args...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = pr.Env(p, n)
	return cmd, nil
}

// Probe implements provider.
func (netnsProvider) Probe(ctx context.Context, p *plan, n *nodePlan) (int, string) {
	pid := holderPID(p.nodeDir(n))
	if pid == 0 {
		return 0, "namespace holder not running"
	}
	return pid, ""
}

// Memory implements provider: every process in the nodes' PID namespaces
// (holder, dockerd, containerd, shims, Consul, the agent) and their
// descendants, which include the containers' processes in PID namespaces
// of their own.
func (netnsProvider) Memory(ctx context.Context, p *plan) (int64, error) {
	labNS := map[string]bool{}
	for i := range p.nodes {
		h := holderPID(p.nodeDir(&p.nodes[i]))
		if h == 0 {
			return 0, fmt.Errorf("lab %s: node %s has no holder process", p.cfg.Name, p.nodes[i].Name)
		}
		labNS[pidNS(h)] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	procs := map[int]procLink{}
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			procs[pid] = procLink{ns: pidNS(pid), ppid: statusField(pid, "PPid:")}
		}
	}
	var total int64
	for _, pid := range labProcesses(procs, labNS) {
		total += rssBytes(pid)
	}
	return total, nil
}

// dockerdPID is the root-namespace pid of the dockerd serving host; 0 when none.
func dockerdPID(host string) int {
	ps := processes(func(args []string) bool {
		return args[0] == "dockerd" && contains(args, host)
	})
	if len(ps) == 0 {
		return 0
	}
	return ps[0].pid
}
