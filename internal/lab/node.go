package lab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/client"
)

// holderScript runs in the node's new namespaces: it gives the node a /run
// of its own, as a host has (Docker's plugin directory, containerd's
// runtime directory, the Docker socket at its standard path), names the
// host, and becomes the node's PID 1 ($1 is the node's state directory, $2
// its host name). PID 1 reaps orphans: bash reaps any child.
const holderScript = `set -e
mount -t tmpfs -o mode=0755 underlay-lab /run
mkdir -p -m 0700 /run/docker/plugins
mkdir -p -m 0711 /run/containerd
mkdir -p -m 1777 /run/lock
touch ` + privateRunMark + `
hostname "$2"
exec -a ` + holderName + ` bash -c 'while :; do sleep 3600 & wait; done' "$1"`

// ensureHolder starts the node's namespace holder unless it runs, and
// returns its pid. A new holder is a freshly booted host: runtime state
// left by earlier daemons is removed first.
func (p *plan) ensureHolder(ctx context.Context, n *nodePlan) (int, error) {
	dir := p.nodeDir(n)
	if pid := holderPID(dir); pid != 0 {
		return pid, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("node %s: %w", n.Name, err)
	}
	for _, stale := range []string{"exec", "docker.pid", "docker.sock"} {
		if err := os.RemoveAll(filepath.Join(dir, stale)); err != nil {
			return 0, fmt.Errorf("node %s: remove stale %s: %w", n.Name, stale, err)
		}
	}
	cmd := exec.Command("unshare", "--net", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
		"--propagation", "private", "--", "bash", "-c", holderScript, "underlay-lab-setup", dir, n.Host)
	cmd.Dir = "/"
	if err := startDetached(cmd, filepath.Join(dir, "holder.log")); err != nil {
		return 0, fmt.Errorf("node %s: %w", n.Name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pid := holderPID(dir); pid != 0 {
			os.WriteFile(filepath.Join(dir, "holder.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644)
			return pid, nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "holder.log"))
			return 0, fmt.Errorf("node %s: namespace holder did not start: %s", n.Name, log)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// links are the node's eth0 (management) and eth1 (underlay parent).
func (p *plan) links(n *nodePlan) []nodeLink {
	idx := strconv.Itoa(n.Index)
	return []nodeLink{
		{host: p.bridgeM + idx, bridge: p.bridgeM, inside: "eth0", addr: netip.PrefixFrom(n.MgmtIP, p.mgmt.Bits())},
		{host: p.bridgeU + idx, bridge: p.bridgeU, inside: "eth1"},
	}
}

// daemon is one long-running program of a node.
type daemon struct {
	key  string // daemonKey of args
	args []string
	env  []string // added to the node's environment
	log  string   // file name in the node's directory
	pid  string   // pid file (of the nsenter wrapper) in the node's directory
}

// privateRunMark is made in a node's own /run: a node held by a holder of
// an older lab has none, and shares the machine's /run.
const privateRunMark = "/run/.underlay-lab-node"

// dockerd is the node's dockerd. Its socket is in the node's directory for
// the root namespace and, when the node has its own /run (never the
// machine's!), at the standard path too, for what runs in the node (the
// stack's agent).
func (p *plan) dockerd(n *nodePlan, holder int) daemon {
	dir := p.nodeDir(n)
	d := daemon{
		key: "dockerd --host",
		args: []string{"dockerd", "--host", p.dockerHost(n),
			"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
			"--pidfile", filepath.Join(dir, "docker.pid"),
			"--iptables=false", "--ip6tables=false", "--bridge", "none"},
		// Swarm tasks use the images loaded into the node; without this,
		// dockerd first tries (and, with no way out of the lab, times out)
		// pulling them from a registry.
		env: []string{"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1"},
		log: "dockerd.log", pid: "dockerd.wrapper.pid",
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", holder, privateRunMark)); err == nil {
		d.args = append(d.args, "--host", NodeDockerHost)
	}
	return d
}

func (p *plan) consul(n *nodePlan) daemon {
	ip := n.MgmtIP.String()
	args := []string{"consul", "agent", "-node", n.Host, "-data-dir", filepath.Join(p.nodeDir(n), "consul"),
		"-bind", ip, "-advertise", ip, "-client", "127.0.0.1 " + ip, "-ui", "-grpc-port", "-1", "-retry-interval", "1s"}
	if n.ConsulServer {
		args = append(args, "-server", "-bootstrap-expect", strconv.Itoa(p.cfg.ConsulServers))
	}
	for i := 0; i < p.cfg.ConsulServers; i++ {
		if s := p.nodes[i]; s.Index != n.Index {
			args = append(args, "-retry-join", s.MgmtIP.String())
		}
	}
	return daemon{key: "consul agent", args: args, log: "consul.log", pid: "consul.wrapper.pid"}
}

func (p *plan) agent(n *nodePlan) daemon {
	return daemon{
		key:  filepath.Base(p.cfg.UnderlayBin) + " agent",
		args: append([]string{p.cfg.UnderlayBin, "agent", "--listen", AgentListen, "--node", n.Host}, p.cfg.AgentArgs...),
		log:  "agent.log", pid: "agent.wrapper.pid",
	}
}

// control runs `underlay control` on a manager: the autoscaler and the
// dashboard, with leader election among the managers. It listens on the
// node's management IP, which the machine running the lab reaches; reads
// are open, scaling needs the lab's token (ControlTokensFile), and
// followers pass scaling requests on to the leader signed with the lab's
// peer secret (ControlPeerSecretFile).
func (p *plan) control(n *nodePlan) daemon {
	addr := p.controlAddr(n)
	return daemon{
		key: filepath.Base(p.cfg.UnderlayBin) + " control",
		args: []string{p.cfg.UnderlayBin, "control", "--listen", addr, "--advertise", addr, "--leader-election",
			"--token-file", filepath.Join(p.dir(), ControlTokensFile),
			"--peer-secret-file", filepath.Join(p.dir(), ControlPeerSecretFile)},
		log: "control.log", pid: "control.wrapper.pid",
	}
}

// controlAddr is where a manager's control instance listens.
func (p *plan) controlAddr(n *nodePlan) string {
	return netip.AddrPortFrom(n.MgmtIP, ControlPort).String()
}

// start starts d inside the node held by holder, killing what is left of
// an earlier run of it first.
func (p *plan) start(n *nodePlan, holder int, d daemon) error {
	dir := p.nodeDir(n)
	if left := killAll(daemonWrappers(dir, d.key), 10*time.Second); len(left) > 0 {
		return fmt.Errorf("node %s: old %s (pid %d) does not die", n.Name, d.key, left[0].pid)
	}
	args := append(nsenterArgs(holder), "--wd="+dir, "--")
	args = append(args, d.args...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(p.nodeEnv(n), d.env...)
	cmd.Dir = "/"
	if err := startDetached(cmd, filepath.Join(dir, d.log)); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return os.WriteFile(filepath.Join(dir, d.pid), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

// ensureDockerd starts the node's dockerd unless it answers, and waits
// until it does.
func (p *plan) ensureDockerd(ctx context.Context, n *nodePlan, holder int) error {
	c, err := p.dockerClient(n)
	if err != nil {
		return err
	}
	defer c.Close()
	if pingDocker(ctx, c) == nil {
		return nil
	}
	dir := p.nodeDir(n)
	// A dockerd that runs without answering (hung, or started by hand) goes too.
	sock := p.dockerHost(n)
	killAll(processes(func(args []string) bool {
		return filepath.Base(args[0]) == "dockerd" && contains(args, sock)
	}), 10*time.Second)
	os.Remove(filepath.Join(dir, "docker.pid"))
	os.Remove(p.socket(n))
	if err := p.start(n, holder, p.dockerd(n, holder)); err != nil {
		return err
	}
	return poll(ctx, 60*time.Second, func() error { return pingDocker(ctx, c) }, func(err error) error {
		return fmt.Errorf("node %s: dockerd not answering after 60s: %w (log: %s)", n.Name, err, filepath.Join(dir, "dockerd.log"))
	})
}

// ensureConsul starts the node's Consul agent unless it answers, and
// waits until it does.
func (p *plan) ensureConsul(ctx context.Context, n *nodePlan, holder int) error {
	if consulAnswers(ctx, p.consulAddr(n)) == nil {
		return nil
	}
	if err := p.start(n, holder, p.consul(n)); err != nil {
		return err
	}
	return poll(ctx, 30*time.Second, func() error { return consulAnswers(ctx, p.consulAddr(n)) }, func(err error) error {
		return fmt.Errorf("node %s: consul not answering after 30s: %w (log: %s)", n.Name, err, filepath.Join(p.nodeDir(n), "consul.log"))
	})
}

// ensureAgent starts the node's underlay agent unless it runs, and on a
// manager its underlay control.
func (p *plan) ensureAgent(n *nodePlan, holder int) (started bool, err error) {
	ds := []daemon{p.agent(n)}
	if n.Role == RoleManager {
		for _, f := range []string{ControlTokensFile, ControlPeerSecretFile} {
			if _, err := p.secret(f); err != nil {
				return false, fmt.Errorf("control: %w", err)
			}
		}
		ds = append(ds, p.control(n))
	}
	for _, d := range ds {
		if len(daemonWrappers(p.nodeDir(n), d.key)) > 0 {
			continue
		}
		if err := p.start(n, holder, d); err != nil {
			return started, err
		}
		started = true
	}
	return started, nil
}

func (p *plan) dockerClient(n *nodePlan) (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.WithHost(p.dockerHost(n)), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client of %s: %w", n.Name, err)
	}
	return c, nil
}

func pingDocker(ctx context.Context, c *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := c.Ping(ctx)
	return err
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func consulAnswers(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/agent/self", nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("consul at %s: %s", addr, resp.Status)
	}
	return nil
}

// poll calls try until it succeeds, ctx ends or timeout passes; then
// failed wraps the last error.
func poll(ctx context.Context, timeout time.Duration, try func() error, failed func(error) error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := try()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return failed(err)
		}
		select {
		case <-ctx.Done():
			return failed(errors.Join(err, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func contains(args []string, s string) bool {
	for _, a := range args {
		if a == s || strings.Contains(a, s) {
			return true
		}
	}
	return false
}
