package lab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// KillDockerd kills a node's dockerd with SIGKILL, as a crash would; Up
// restarts it.
func KillDockerd(name, node string) error {
	p, err := loadPlan(DefaultStateRoot, name)
	if err != nil {
		return err
	}
	n, err := p.node(node)
	if err != nil {
		return err
	}
	pid := dockerdPID(p.dockerHost(n))
	if pid == 0 {
		return fmt.Errorf("node %s: dockerd not running", n.Name)
	}
	if left := killAll([]proc{{pid: pid}}, 10*time.Second); len(left) > 0 {
		return fmt.Errorf("node %s: dockerd %d does not die", n.Name, pid)
	}
	return nil
}

// NodeEnv is how to work on one node from the root namespace.
type NodeEnv struct {
	// DockerHost and ConsulHTTPAddr reach the node from the root namespace
	// and from inside it.
	DockerHost     string
	ConsulHTTPAddr string
	// Nsenter is the command prefix that enters the node's namespaces.
	Nsenter []string
}

// Env returns how to reach node of lab name.
func Env(name, node string) (*NodeEnv, error) {
	p, n, pid, err := findNode(name, node)
	if err != nil {
		return nil, err
	}
	return &NodeEnv{DockerHost: p.dockerHost(n), ConsulHTTPAddr: p.consulAddr(n), Nsenter: nsenterArgs(pid)}, nil
}

// Command returns a command running args inside node of lab name, in all
// its namespaces, with the node's DOCKER_HOST and CONSUL_HTTP_ADDR
// (127.0.0.1:8500, as on a real host) set.
func Command(ctx context.Context, name, node string, args ...string) (*exec.Cmd, error) {
	if len(args) == 0 {
		return nil, errors.New("no command to run")
	}
	p, n, pid, err := findNode(name, node)
	if err != nil {
		return nil, err
	}
	full := append(append(nsenterArgs(pid), "--"), args...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = p.nodeEnv(n)
	return cmd, nil
}

// LogPath returns the log file of a node's component: agent, control (on
// managers), dockerd, consul or holder.
func LogPath(name, node, component string) (string, error) {
	p, err := loadPlan(DefaultStateRoot, name)
	if err != nil {
		return "", err
	}
	n, err := p.node(node)
	if err != nil {
		return "", err
	}
	switch component {
	case "agent", "control", "dockerd", "consul", "holder":
		return p.nodeDir(n) + "/" + component + ".log", nil
	}
	return "", fmt.Errorf("log %q: want agent, control, dockerd, consul or holder", component)
}

func findNode(name, node string) (*plan, *nodePlan, int, error) {
	p, err := loadPlan(DefaultStateRoot, name)
	if err != nil {
		return nil, nil, 0, err
	}
	n, err := p.node(node)
	if err != nil {
		return nil, nil, 0, err
	}
	pid := holderPID(p.nodeDir(n))
	if pid == 0 {
		return nil, nil, 0, fmt.Errorf("node %s of lab %s is stopped (run `underlay lab up --name %s`)", n.Name, name, name)
	}
	return p, n, pid, nil
}

// NsenterPrefix formats Nsenter for a shell.
func (e *NodeEnv) NsenterPrefix() string { return strings.Join(e.Nsenter, " ") }
