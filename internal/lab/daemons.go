package lab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/dockerhost"
)

// ensureDockerd starts the node's dockerd unless it answers, and waits
// until it does.
func (p *plan) ensureDockerd(ctx context.Context, n *nodePlan) error {
	c, err := p.dockerClient(n)
	if err != nil {
		return err
	}
	defer c.Close()
	if pingDocker(ctx, c) == nil {
		return nil
	}
	d := p.dockerd(n)
	if err := p.prov.Start(ctx, p, n, d); err != nil {
		return err
	}
	timeout := p.wait(n, 60*time.Second)
	restarts := 0
	var gone time.Time // since when dockerd has not run
	return poll(ctx, timeout, func() error {
		err := pingDocker(ctx, c)
		// dockerd gives up on the containerd it starts after a fixed
		// time, which an emulated node on a loaded host can pass: it
		// is started again, as systemd's Restart= would; once seen gone
		// for a while, as a VM's guest may not answer for a moment.
		switch {
		case err == nil || restarts == maxDockerdRestarts || p.prov.Running(ctx, p, n, d.key):
			gone = time.Time{}
		case gone.IsZero():
			gone = time.Now()
		case time.Since(gone) >= dockerdGoneFor:
			restarts++
			gone = time.Time{}
			if serr := p.prov.Start(ctx, p, n, d); serr != nil {
				return errors.Join(err, serr)
			}
		}
		return err
	}, func(err error) error {
		return fmt.Errorf("node %s: dockerd not answering after %s (started again %d times): %w %s", n.Name, timeout, restarts, err, withLog(p.logPath(n, "dockerd")))
	})
}

// maxDockerdRestarts bounds how often ensureDockerd starts again a dockerd
// that exited before answering, once seen gone for dockerdGoneFor.
const (
	maxDockerdRestarts = 3
	dockerdGoneFor     = 3 * time.Second
)

// ensureConsul starts the node's Consul agent unless it answers, and
// waits until it does.
func (p *plan) ensureConsul(ctx context.Context, n *nodePlan) error {
	if consulAnswers(ctx, p.consulAddr(n)) == nil {
		return nil
	}
	if err := p.prov.Start(ctx, p, n, p.consul(n)); err != nil {
		return err
	}
	timeout := p.wait(n, 30*time.Second)
	return poll(ctx, timeout, func() error { return consulAnswers(ctx, p.consulAddr(n)) }, func(err error) error {
		return fmt.Errorf("node %s: consul not answering after %s: %w %s", n.Name, timeout, err, withLog(p.logPath(n, "consul")))
	})
}

// ensureAgent starts the node's underlay agent unless it runs, and on a
// manager its underlay control.
func (p *plan) ensureAgent(ctx context.Context, n *nodePlan) (started bool, err error) {
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
		if p.prov.Running(ctx, p, n, d.key) {
			continue
		}
		if err := p.prov.Start(ctx, p, n, d); err != nil {
			return started, err
		}
		started = true
	}
	return started, nil
}

// logPath is the log file of a node's component.
func (p *plan) logPath(n *nodePlan, component string) string {
	return filepath.Join(p.layout(n).LogDir, component+".log")
}

// dockerHost is the DOCKER_HOST of a node, from the root namespace.
func (p *plan) dockerHost(n *nodePlan) string { return p.layout(n).DockerHost }

// consulAddr is a node's Consul HTTP address as the root namespace reaches it.
func (p *plan) consulAddr(n *nodePlan) string {
	return netip.AddrPortFrom(n.MgmtIP, ConsulHTTPPort).String()
}

func (p *plan) dockerClient(n *nodePlan) (*client.Client, error) {
	c, err := dockerhost.NewClientAt(p.dockerHost(n))
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
