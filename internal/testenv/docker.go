package testenv

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/vishvananda/netlink"
)

// Network describes a Docker network a test creates.
type Network struct {
	Name       string
	Subnet     string
	IPv6Subnet string // empty for IPv4 only
	// Parent is the macvlan parent; VethParent fills it with a new link.
	Parent string
}

// VethParent creates a veth pair in the root namespace whose first end can
// be a macvlan parent. The peer plays "the rest of the network": when
// peerAddr (CIDR) is given it holds that address, so processes of the root
// namespace, Consul's checks among them, reach the containers through it and
// packets for the subnet never follow the default route off the machine.
func VethParent(t testing.TB, peerAddr string) string {
	t.Helper()
	name := "ulv" + ID(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	t.Cleanup(func() { netlink.LinkDel(veth) })
	for _, n := range []string{name, name + "p"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
		if n == name+"p" && peerAddr != "" {
			addr, err := netlink.ParseAddr(peerAddr)
			if err != nil {
				t.Fatal(err)
			}
			if err := netlink.AddrAdd(l, addr); err != nil {
				t.Fatalf("address %s on %s: %v", peerAddr, n, err)
			}
		}
	}
	return name
}

// MacvlanNetwork creates a local macvlan network on a new veth parent and
// removes both when t ends. The parent's peer takes the subnet's .254, so
// the root namespace reaches the containers.
func MacvlanNetwork(t testing.TB, d *client.Client, n Network) Network {
	t.Helper()
	if n.Parent == "" {
		n.Parent = VethParent(t, peerAddress(n.Subnet))
	}
	opts := network.CreateOptions{
		Driver:  "macvlan",
		Options: map[string]string{"parent": n.Parent},
		IPAM:    &network.IPAM{Config: []network.IPAMConfig{{Subnet: n.Subnet}}},
		Labels:  map[string]string{"io.underlay.test": "1"},
	}
	if n.IPv6Subnet != "" {
		on := true
		opts.EnableIPv6 = &on
		opts.IPAM.Config = append(opts.IPAM.Config, network.IPAMConfig{Subnet: n.IPv6Subnet})
	}
	createNetwork(t, d, n.Name, opts)
	return n
}

// BridgeNetwork creates a user-defined bridge network.
func BridgeNetwork(t testing.TB, d *client.Client, name, subnet string) {
	t.Helper()
	createNetwork(t, d, name, network.CreateOptions{
		Driver: "bridge",
		IPAM:   &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet}}},
		Labels: map[string]string{"io.underlay.test": "1"},
	})
}

func createNetwork(t testing.TB, d *client.Client, name string, opts network.CreateOptions) {
	t.Helper()
	ctx := Context(t, 30*time.Second)
	if _, err := d.NetworkCreate(ctx, name, opts); err != nil {
		t.Fatalf("create network %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.NetworkRemove(ctx, name)
	})
}

// Container is what a test asks of RunContainer.
type Container struct {
	Name     string
	Labels   map[string]string
	Env      []string
	Networks []string // the first is the primary network
	// IPs are static addresses per network name, optional.
	IPs         map[string]string
	Exposed     []string // extra exposed ports, "9090/tcp"
	Publish     map[string]string
	Healthcheck *container.HealthConfig
	// RestartAlways sets the restart policy "always".
	RestartAlways bool
	// Entrypoint replaces the test image's (a start that must fail).
	Entrypoint []string
}

// RunContainer creates and starts a container of the test image, and
// force-removes it when t ends.
func RunContainer(t testing.TB, d *client.Client, c Container) string {
	t.Helper()
	id, err := StartContainer(t, d, c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// CreateContainer creates a container of the test image without starting
// it, and force-removes it when t ends.
func CreateContainer(t testing.TB, d *client.Client, c Container) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := createRemoved(ctx, t, d, c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// createRemoved creates a container that is force-removed when t ends.
func createRemoved(ctx context.Context, t testing.TB, d *client.Client, c Container) (string, error) {
	id, err := createContainer(ctx, d, c)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", c.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
	})
	return id, nil
}

// StartContainer is RunContainer for goroutines other than the test's own,
// which may not call t.Fatal: it returns the error instead.
func StartContainer(t testing.TB, d *client.Client, c Container) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := createRemoved(ctx, t, d, c)
	if err != nil {
		return "", err
	}
	if err := d.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return id, fmt.Errorf("start container %s: %w", c.Name, err)
	}
	return id, nil
}

// peerAddress is the .254 of an IPv4 /24, with its prefix.
func peerAddress(subnet24 string) string {
	return strings.TrimSuffix(subnet24, "0/24") + "254/24"
}

// DockerMajor returns the major version of the daemon c talks to (20 for
// 20.10, 28, 29): tests of what a version reports differently ask it.
func DockerMajor(t testing.TB, c *client.Client) int {
	t.Helper()
	v, err := c.ServerVersion(Context(t, 10*time.Second))
	if err != nil {
		t.Fatalf("docker version: %v", err)
	}
	major, _, _ := strings.Cut(v.Version, ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		t.Fatalf("docker version %q: no major version", v.Version)
	}
	return n
}
