package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationLabFaults: the fault API on a 1-node lab. A component's
// pid is the daemon itself (its command line, in the node's PID
// namespace); Stop and Cont stop and resume it; Kill leaves it gone and
// Start brings up another; Freeze stops every process of the node (dockerd
// stops answering) and Thaw resumes them; the management link taken down
// cuts the node's Consul off, and up restores it; the Consul server restarts
// with a leader again.
func TestIntegrationLabFaults(t *testing.T) {
	testenv.Require(t)
	l := testenv.StartLab(t, lab.Config{Nodes: 1, UnderlaySubnet: "10.194.0.0/16"})
	ctx := testenv.Context(t, 3*time.Minute)
	labs, name, n := lab.Labs{}, l.Name, l.Nodes[0]

	for _, c := range []struct{ component, arg0 string }{
		{lab.ComponentAgent, l.UnderlayBin}, {lab.ComponentDockerd, "dockerd"}, {lab.ComponentConsul, "consul"}, {lab.ComponentControl, l.UnderlayBin},
	} {
		// Up starts the agent and control without waiting for them: the
		// pid may still be nsenter's child before its exec (seen once,
		// control's, on 29), or nsenter may not have forked it yet ("has
		// no child in the node": seen once, control's, on a busy machine).
		testenv.Eventually(t, 10*time.Second, func() (bool, string) {
			pid, err := labs.PID(name, "node1", c.component)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", c.component, err)
			}
			args := procCmdline(pid)
			return len(args) > 0 && args[0] == c.arg0, fmt.Sprintf("%s: pid %d runs %q, want %s", c.component, pid, args, c.arg0)
		})
	}
	if _, err := labs.PID(name, "node1", "containerd"); err == nil {
		t.Error("an unknown component has a pid")
	}

	// Stop / Cont.
	pid, _ := labs.PID(name, "node1", lab.ComponentAgent)
	if err := labs.Stop(ctx, name, "node1", lab.ComponentAgent); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() (bool, string) {
		return procState(pid) == 'T', fmt.Sprintf("agent state %c, want T", procState(pid))
	})
	if err := labs.Cont(ctx, name, "node1", lab.ComponentAgent); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() (bool, string) {
		return procState(pid) != 'T', "agent still stopped"
	})

	// Kill / Start.
	if err := labs.Kill(ctx, name, "node1", lab.ComponentAgent); err != nil {
		t.Fatal(err)
	}
	if s := procState(pid); s != 0 {
		t.Errorf("killed agent %d still there (state %c)", pid, s)
	}
	if _, err := labs.PID(name, "node1", lab.ComponentAgent); err == nil {
		t.Error("a killed agent still has a pid")
	}
	if err := labs.Start(ctx, name, "node1", lab.ComponentAgent); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		again, err := labs.PID(name, "node1", lab.ComponentAgent)
		return err == nil && again != pid, fmt.Sprintf("agent pid %d (was %d): %v", again, pid, err)
	})

	// Freeze / Thaw: dockerd stops answering, then answers again.
	dpid, _ := labs.PID(name, "node1", lab.ComponentDockerd)
	frozen, err := labs.Freeze(ctx, name, "node1")
	if err != nil || frozen < 5 {
		t.Fatalf("froze %d processes: %v", frozen, err)
	}
	testenv.Eventually(t, 5*time.Second, func() (bool, string) {
		return procState(dpid) == 'T', fmt.Sprintf("dockerd state %c, want T", procState(dpid))
	})
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := n.Docker.Ping(pctx); err == nil {
		t.Error("a frozen node's dockerd answers")
	}
	cancel()
	if _, err := labs.Thaw(ctx, name, "node1"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		_, err := n.Docker.Ping(ctx)
		return err == nil, fmt.Sprintf("thawed dockerd: %v", err)
	})

	// Partition: the node's Consul, on its management address, is cut off.
	if err := labs.SetManagementLink(ctx, name, "node1", false); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		_, err := n.Consul.Status().Leader()
		return err != nil, "consul answers over a link that is down"
	})
	if err := labs.SetManagementLink(ctx, name, "node1", true); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		_, err := n.Consul.Status().Leader()
		return err == nil, fmt.Sprintf("consul after the link came back: %v", err)
	})

	// The Consul server.
	cpid, _ := labs.PID(name, "node1", lab.ComponentConsul)
	if err := labs.RestartConsulServers(ctx, name); err != nil {
		t.Fatal(err)
	}
	if again, err := labs.PID(name, "node1", lab.ComponentConsul); err != nil || again == cpid {
		t.Errorf("consul pid %d after its restart (was %d): %v", again, cpid, err)
	}
}

// procState is a process's state letter; 0 when it is gone or a zombie.
func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X' {
		return 0
	}
	return b[i+2]
}

func procCmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	var out []string
	for _, a := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
		out = append(out, string(a))
	}
	return out
}
