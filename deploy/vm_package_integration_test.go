package deploy_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// vmPackageSubnet is the underlay of TestIntegrationVMPackage's lab.
const vmPackageSubnet = "10.186.0.0/16"

// TestIntegrationVMPackage is the Debian package on a host that boots
// with systemd: a VM node (Debian's kernel, systemd as PID 1, a disk) gets
// the .deb of the binary under test installed with dpkg, whose postinst
// enables and starts the agent behind underlay-ipam.socket. With a
// cluster-IPAM network on a VLAN the agent makes (bond0.40) and a
// container with restart policy "always" on it, registered in Consul, the
// node reboots (systemctl reboot): it comes back by itself — no lab step
// runs — with the VLAN parent (which dockerd makes again, unmarked, when
// it restores solo before the agent runs: the agent's record of the
// parents it made has it marked as the agent's again), the shim, and the
// container running with an address allocated to it and registered with
// it. (Docker attaches a
// container to a swarm network anew at each start and asks for no
// particular address unless given one, --ip: the address may be new.)
// Then `dpkg -r` with solo running leaves no unit or socket, but the
// shim and the parent solo's endpoint hangs off, saying so and how to
// delete them. Once solo is gone, the package installed again and removed
// takes the shim but leaves the parent, which the network's Docker
// networks still name (its containers could not start without it), and
// says so; installed again, `underlay network rm` takes the network down,
// parent and all, and the package's removal leaves no shim or parent
// (only the settings, which are conffiles), and `dpkg -P` no settings and
// no enablement.
func TestIntegrationVMPackage(t *testing.T) {
	testenv.Require(t)
	testenv.Docker(t)
	bin := testenv.UnderlayBinary(t)
	start := time.Now()

	// The package, where the guest sees it (it shares the host's root,
	// not its /tmp).
	dist, err := os.MkdirTemp("/var/tmp", "ul-deb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dist) })
	build := exec.Command(filepath.Join(root(t), "scripts", "build-deb.sh"))
	build.Env = append(os.Environ(), "UNDERLAY_BIN="+bin, "DIST="+dist)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, out)
	}
	deb := filepath.Join(dist, "underlay_"+strings.Replace(version(t, bin), "-", "~", 1)+"_amd64.deb")

	l := testenv.StartLab(t, lab.Config{Nodes: 1, VM: true, Systemd: true, NoAgent: true,
		UnderlaySubnet: vmPackageSubnet, UnderlayBin: bin})
	n := l.Nodes[0]
	ctx := testenv.Context(t, 10*time.Minute)
	t.Logf("lab up (package built, VM booted with systemd) after %s", time.Since(start).Round(time.Second))
	sh := func(script string) (string, error) {
		out, err := l.Exec(ctx, n.Name, "sh", "-c", script)
		return strings.TrimSpace(string(out)), err
	}
	must := func(script string) string {
		t.Helper()
		out, err := sh(script)
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return out
	}
	agentLog := func() string {
		out, _ := sh("journalctl -u underlay-agent.service --no-pager -n 40")
		return out
	}
	// A step that fails inside a helper (a container's start timing out)
	// says nothing of the guest: its journals tell a hung plugin from a
	// slow guest. Cleanups run last first: this one before the lab's.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		out, _ := sh("journalctl -u underlay-agent.service -u docker.service --no-pager -n 120 -o short-precise")
		t.Logf("guest journal, agent and dockerd, last 120 lines:\n%s", out)
	})

	t0 := time.Now()
	must("dpkg -i " + deb)
	t.Logf("dpkg -i took %s", time.Since(t0).Round(100*time.Millisecond))
	if out := must("systemctl is-enabled underlay-agent.service underlay-ipam.socket"); out != "enabled\nenabled" {
		t.Fatalf("units after dpkg -i: %q, want both enabled", out)
	}
	testenv.Eventually(t, time.Minute, func() (bool, string) {
		out, err := sh("systemctl is-active underlay-agent.service underlay-ipam.socket")
		return err == nil, "agent and socket not active: " + out + "\n" + agentLog()
	})

	vlan, shim := "bond0.40", netspec.ShimLinkName("pool")
	l.CreateNetwork("pool", "--ipam", "cluster", "--parent", "bond0", "--vlan", "40", "--subnet", vmPackageSubnet,
		"--gateway", l.Gateway.String(), "--ip-range", "10.186.3.0/24")
	id := testenv.RunContainer(t, n.Docker, testenv.Container{Name: "solo", Networks: []string{"pool"}, RestartAlways: true,
		Env: []string{"SERVICE_NAME=solo", "SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_INTERVAL=1s"}})
	kv := consul.NewKV(n.Consul)
	spec, _, err := netspec.NewStore(kv).Get(ctx, "pool")
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := ipam.PoolOf(spec, false)
	var addr string
	settled := func(timeout time.Duration) {
		t.Helper()
		testenv.Eventually(t, timeout, func() (bool, string) {
			c, err := n.Docker.ContainerInspect(ctx, id)
			if err != nil {
				return false, "inspect solo: " + err.Error()
			}
			ep := c.NetworkSettings.Networks["pool"]
			if !c.State.Running || ep == nil || ep.IPAddress == "" {
				return false, fmt.Sprintf("solo not running with an address: %+v", c.State)
			}
			// Registered with that address only, and the address allocated
			// to a task (once: the allocator's keys are the addresses).
			reg := passingAddresses(t, l, "solo")
			if len(reg) != 1 || !reg[ep.IPAddress] {
				return false, fmt.Sprintf("solo (%s) registered passing as %v", ep.IPAddress, reg)
			}
			all, err := ipam.Allocations(ctx, kv, pool)
			if err != nil {
				return false, err.Error()
			}
			if a := all[netip.MustParseAddr(ep.IPAddress)]; a.Kind != ipam.KindTask {
				return false, fmt.Sprintf("solo's %s not allocated as a task address: %+v", ep.IPAddress, a)
			}
			out, err := sh("ip -d -o link show " + shim + " && ip -d -o link show " + vlan)
			if err != nil || !strings.Contains(out, "alias "+hostnet.ShimAlias("pool")) || !strings.Contains(out, "alias "+hostnet.OwnerAlias("pool")) {
				return false, fmt.Sprintf("shim %s or VLAN parent %s missing or unmarked: %v %s", shim, vlan, err, out)
			}
			if addr != "" && addr != ep.IPAddress {
				// Docker attaches a container to a swarm network anew at
				// each start, asking for no address unless it was given one
				// (--ip): a new address is Docker's, not the IPAM's doing.
				t.Logf("solo came back with %s (had %s)", ep.IPAddress, addr)
			}
			addr = ep.IPAddress
			return true, ""
		})
	}
	settled(2 * time.Minute)
	t.Logf("solo at %s, registered; shim and VLAN parent made", addr)

	// The reboot: the lab does nothing; systemd brings back dockerd,
	// Consul, the socket and the agent, dockerd restores solo.
	bootID := must("cat /proc/sys/kernel/random/boot_id")
	t0 = time.Now()
	l.Exec(ctx, n.Name, "systemctl", "reboot") // the connection may end with the node
	testenv.Eventually(t, 4*time.Minute, func() (bool, string) {
		id, err := sh("cat /proc/sys/kernel/random/boot_id")
		return err == nil && id != bootID, fmt.Sprintf("node not back from its reboot: %v %s", err, id)
	})
	t.Logf("node answered %s after systemctl reboot", time.Since(t0).Round(time.Second))
	settled(4 * time.Minute)
	t.Logf("solo back at %s, registered, shim and parent back, %s after systemctl reboot", addr, time.Since(t0).Round(time.Second))
	if out := must("systemctl is-active underlay-ipam.socket underlay-agent.service docker.service"); out != "active\nactive\nactive" {
		t.Errorf("units after the reboot: %q", out)
	}

	// Removal while solo runs: units stopped and gone, socket gone,
	// settings kept; the shim and the parent solo's endpoint hangs off
	// are left (deleting the parent would delete the endpoint), named
	// with solo, and the package says how to delete them later.
	removed := []string{
		"! systemctl is-active --quiet underlay-agent.service",
		"! systemctl is-active --quiet underlay-ipam.socket",
		"! test -e /lib/systemd/system/underlay-agent.service",
		"! test -e /lib/systemd/system/underlay-ipam.socket",
		"! test -e /lib/systemd/system/underlay-control.service",
		"! test -e /usr/bin/underlay",
		"! test -e /run/docker/plugins/underlay.sock",
		"ip link show bond0", // what the agent did not make stays
		"test -e /etc/underlay/agent.env",
	}
	out := must("dpkg -r underlay")
	for _, link := range []string{shim, vlan} {
		if !strings.Contains(out, "left "+link+": in use by container solo") {
			t.Errorf("dpkg -r with solo running did not report %s left for solo:\n%s", link, out)
		}
	}
	if !strings.Contains(out, "ip link delete") {
		t.Errorf("dpkg -r leaving links did not say how to delete them:\n%s", out)
	}
	for _, check := range append(removed, "ip link show "+shim, "ip link show "+vlan) {
		if out, err := sh(check); err != nil {
			t.Errorf("after dpkg -r with solo running: %s failed: %v %s", check, err, out)
		}
	}
	c, err := n.Docker.ContainerInspect(ctx, id)
	if err != nil || !c.State.Running || c.NetworkSettings.Networks["pool"] == nil || c.NetworkSettings.Networks["pool"].IPAddress != addr {
		t.Errorf("solo after dpkg -r: %v %+v", err, c.State)
	}

	// Solo gone, the package installed again (its agent takes the links
	// back, its owner kept in the state directory) and removed: the shim
	// goes; the parent, which the network's Docker networks still name,
	// stays, named with them.
	if err := n.Docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatalf("remove solo: %v", err)
	}
	install := func(which string) {
		must("dpkg -i " + deb)
		testenv.Eventually(t, time.Minute, func() (bool, string) {
			out, err := sh("systemctl is-active underlay-agent.service underlay-ipam.socket")
			return err == nil, "agent and socket not active after the " + which + " dpkg -i: " + out + "\n" + agentLog()
		})
	}
	install("second")
	out = must("dpkg -r underlay")
	if !strings.Contains(out, "removed "+shim) || strings.Contains(out, "removed "+vlan) || !strings.Contains(out, "Docker network") {
		t.Errorf("dpkg -r with no container but the network did not report the shim removed and the parent left for the network:\n%s", out)
	}
	for _, check := range append(removed, "! ip link show "+shim, "ip link show "+vlan) {
		if out, err := sh(check); err != nil {
			t.Errorf("after dpkg -r with the network: %s failed: %v %s", check, err, out)
		}
	}

	// Installed again, the network removed: its agent takes the parent
	// down with it, and the package's removal leaves no link of its own.
	install("third")
	l.RemoveNetwork("pool")
	testenv.Eventually(t, time.Minute, func() (bool, string) {
		out, err := sh("! ip link show " + vlan + " && ! ip link show " + shim)
		return err == nil, "parent or shim left after underlay network rm: " + out + "\n" + agentLog()
	})
	out = must("dpkg -r underlay")
	for _, check := range append(removed, "! ip link show "+shim, "! ip link show "+vlan) {
		if out, err := sh(check); err != nil {
			t.Errorf("after dpkg -r: %s failed: %v %s", check, err, out)
		}
	}

	must("dpkg -P underlay")
	for _, check := range []string{
		"! test -e /etc/underlay",
		"! test -e /var/lib/underlay/node-id",
		"! test -e /var/lib/underlay/link-owner",
		"! test -e /var/lib/underlay/" + hostnet.ParentsFileName,
		"! ls /etc/systemd/system/*.wants/underlay-* /etc/systemd/system/underlay-* 2>/dev/null | grep .",
		"! dpkg -s underlay",
	} {
		if out, err := sh(check); err != nil {
			t.Errorf("after dpkg -P: %s failed: %v %s", check, err, out)
		}
	}
	cs, _ := n.Docker.ContainerList(ctx, container.ListOptions{})
	t.Logf("%d containers left running; the test took %s", len(cs), time.Since(start).Round(time.Second))
}
