package register_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/underlay/underlay/internal/testenv"
)

// burst starts count containers named PREFIX-i on netName, at most 10 at a
// time, and returns the service IDs the agent should register for them.
func (h *harness) burst(netName, prefix string, from, count int) (ids []string, serviceIDs []string) {
	h.t.Helper()
	ids = make([]string, count)
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	for i := range count {
		name := fmt.Sprintf("%s-%d", prefix, from+i)
		serviceIDs = append(serviceIDs, h.node+":"+name+":8080")
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id, err := testenv.StartContainer(h.t, h.docker, testenv.Container{Name: name, Networks: []string{netName}, Labels: h.labels(nil)})
			if err != nil {
				h.t.Error(err)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	return ids, serviceIDs
}

func (h *harness) remove(ids ...string) {
	h.t.Helper()
	for _, id := range ids {
		if err := h.docker.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true}); err != nil {
			h.t.Fatal(err)
		}
	}
}

func TestIntegrationConsulRestartMidBurst(t *testing.T) {
	h := newHarness(t)
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4})
	h.startAgent(nil)

	first, firstSvcs := h.burst(n.Name, h.id, 0, 10)
	h.waitServices(20*time.Second, firstSvcs...)

	// Consul goes away (a dev agent forgets everything) while containers
	// start and stop; the agent must notice, retry and rebuild it all.
	var second []string
	var secondSvcs []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		second, secondSvcs = h.burst(n.Name, h.id, 10, 10)
		h.remove(first[:3]...)
	}()
	h.consul.Restart(2 * time.Second)
	<-done

	want := append(append([]string{}, firstSvcs[3:]...), secondSvcs...)
	h.waitServices(30*time.Second, want...)

	h.remove(append(first[3:], second...)...)
	h.waitServices(20 * time.Second)
}

func TestIntegrationAgentKilledMidBurst(t *testing.T) {
	h := newHarness(t)
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4})
	bin := testenv.UnderlayBinary(t)
	logPath := filepath.Join(t.TempDir(), "agent.log")
	start := func() *exec.Cmd {
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd := exec.Command(bin, "agent", "--node", h.node, "--consul-addr", h.consul.Addr(),
			"--label", "io.underlay.test="+h.id, "--host-ip", "127.0.0.1", "--listen", "", "--networks=false", "--ipam=false", "--log-level", "debug")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("agent log:\n%s", b)
		}
	})

	agent := start()
	first, firstSvcs := h.burst(n.Name, h.id, 0, 10)
	// Kill -9 while the next burst is being registered.
	done := make(chan struct{})
	var second []string
	var secondSvcs []string
	go func() {
		defer close(done)
		second, secondSvcs = h.burst(n.Name, h.id, 10, 10)
	}()
	time.Sleep(300 * time.Millisecond)
	agent.Process.Kill()
	agent.Wait()
	<-done
	// While it is down: some containers go, some come.
	h.remove(first[:4]...)
	third, thirdSvcs := h.burst(n.Name, h.id, 20, 5)

	agent = start()
	defer func() { agent.Process.Kill(); agent.Wait() }()
	want := append(append(append([]string{}, firstSvcs[4:]...), secondSvcs...), thirdSvcs...)
	h.waitServices(30*time.Second, want...)

	h.remove(append(append(first[4:], second...), third...)...)
	h.waitServices(20 * time.Second)
}

func TestIntegrationDockerRestart(t *testing.T) {
	h := newHarness(t)
	pd := testenv.StartDockerd(t, h.docker)
	h.docker = pd.Client() // the agent and the containers use the private daemon
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4, Parent: pd.VethParent()})
	h.startAgent(nil)

	always := testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-always", Networks: []string{n.Name}, Labels: h.labels(nil), RestartAlways: true})
	testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-once", Networks: []string{n.Name}, Labels: h.labels(nil)})
	alwaysID, onceID := h.node+":"+h.id+"-always:8080", h.node+":"+h.id+"-once:8080"
	h.waitServices(10*time.Second, alwaysID, onceID)

	// A crashed daemon comes back without live-restore: it stops the
	// containers it finds and restarts only those with a restart policy.
	// The agent missed all of it and must reconnect and resync.
	pd.Kill()
	time.Sleep(2 * time.Second)
	pd.Start()
	// First the daemon's part (the container running again), then the
	// agent's: a failure says which one did not happen. The daemon's is
	// given three minutes: the kernel tears namespaces down one at a time
	// on one work queue for the whole machine, and with the IPAM package's
	// labs torn down beside this test, the killed container's took over a
	// minute in stop 49's full run (the container ran 5 s after a minute's
	// wait ended).
	testenv.Eventually(t, 3*time.Minute, func() (bool, string) {
		c, err := h.docker.ContainerInspect(context.Background(), always)
		if err != nil {
			return false, fmt.Sprintf("the restarted dockerd: inspect %s: %v", always, err)
		}
		// The kernel tears the killed container's network namespace down
		// in the background; until it has, its macvlan holds the MAC
		// the restart gives the new one, and dockerd gives the restart up
		// for good. Docker's and the kernel's race, not the agent's: the
		// container is started again, as its operator would.
		if !c.State.Running && strings.Contains(c.State.Error, "address already in use") {
			t.Logf("dockerd's restart of %s failed on the old namespace's MAC (%s); starting it again", always, c.State.Error)
			h.docker.ContainerStart(context.Background(), always, container.StartOptions{})
		}
		return c.State.Running, fmt.Sprintf("the restarted dockerd has not started %s again: %+v", always, *c.State)
	})
	h.waitServices(60*time.Second, alwaysID)

	inspect, err := h.docker.ContainerInspect(context.Background(), always)
	if err != nil {
		t.Fatal(err)
	}
	svc := h.services()[alwaysID]
	if want := inspect.NetworkSettings.Networks[n.Name].IPAddress; svc == nil || svc.Address != want {
		t.Errorf("after the restart %s is registered as %+v, want address %s", alwaysID, svc, want)
	}
	if !strings.Contains(h.logText(), "docker event stream ended") {
		t.Errorf("agent log does not show the lost event stream:\n%s", h.logText())
	}
}
