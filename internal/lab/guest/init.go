package guest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// NodeTag is the 9p mount tag of the node's state directory.
const NodeTag = "node"

// Init is PID 1 of a VM node: it mounts, names the host, loads bonding,
// makes the bond with the management address, then runs the control
// server (serve is its command line) as a child, restarting it if it
// dies, and reaps every orphan. It never returns; trouble is printed on
// the console (the node's console.log on the host).
func Init(nodeDir string, serve []string) {
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "underlay-init: "+format+"\n", args...)
	}
	c, err := boot(nodeDir, logf)
	if err != nil {
		logf("boot failed: %v", err)
		reapForever(nil, logf)
	}
	if c.Systemd {
		err := execSystemd(nodeDir, serve, logf)
		logf("systemd: %v", err)
		reapForever(nil, logf)
	}
	reapForever(serve, logf)
}

func boot(nodeDir string, logf func(string, ...any)) (Config, error) {
	start := time.Now()
	// Only what reading the node's config needs: with systemd it mounts
	// the rest itself.
	if err := mountKernelFS(); err != nil {
		return Config{}, err
	}
	if err := mount(NodeTag, nodeDir, "9p", 0, "trans=virtio,version=9p2000.L,msize=262144"); err != nil {
		return Config{}, err
	}
	c, _, err := ReadConfig(nodeDir)
	if err != nil {
		return c, err
	}
	if err := mountBase(c.Systemd); err != nil {
		return c, err
	}
	if err := setup(c); err != nil {
		return c, err
	}
	logf("node %s up in %s: %s on %s (%v), gateway %s", c.Host, time.Since(start).Round(time.Millisecond), c.Address, c.Bond, c.Members, c.Gateway)
	return c, nil
}

func setup(c Config) error {
	for _, dir := range c.TmpFS {
		if err := mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
			return err
		}
	}
	if err := syscall.Sethostname([]byte(c.Host)); err != nil {
		return fmt.Errorf("set host name: %w", err)
	}
	os.WriteFile("/etc/hostname", []byte(c.Host+"\n"), 0o644)
	// bonding makes a bond0 of its own when loaded without max_bonds=0.
	if out, err := exec.Command("modprobe", "bonding", "max_bonds=0").CombinedOutput(); err != nil {
		return fmt.Errorf("modprobe bonding: %v: %s", err, out)
	}
	return network(c)
}

type mountPoint struct {
	src, dir, fstype, opts string
	flags                  uintptr
}

// mountKernelFS mounts /proc, /sys and /dev.
func mountKernelFS() error {
	for _, m := range []mountPoint{
		{"proc", "/proc", "proc", "", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC},
		{"sysfs", "/sys", "sysfs", "", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755", syscall.MS_NOSUID},
	} {
		if err := mount(m.src, m.dir, m.fstype, m.flags, m.opts); err != nil {
			return err
		}
	}
	return nil
}

// mountBase mounts what a Docker host needs beyond the kernel's file
// systems: systemd mounts all of it but /tmp by itself.
func mountBase(systemd bool) error {
	// A container marker left in the host's root would mislead programs
	// that check it (systemd would think it runs in a container), and the
	// host's policy-rc.d (Docker images carry one) would keep packages from
	// starting their services: a node is a host, not an image build.
	os.Remove("/.dockerenv")
	os.Remove("/usr/sbin/policy-rc.d")
	tmp := mountPoint{"tmpfs", "/tmp", "tmpfs", "mode=1777", syscall.MS_NOSUID | syscall.MS_NODEV}
	if systemd {
		return mount(tmp.src, tmp.dir, tmp.fstype, tmp.flags, tmp.opts)
	}
	for _, m := range []mountPoint{
		{"devpts", "/dev/pts", "devpts", "gid=5,mode=0620,ptmxmode=0666", syscall.MS_NOSUID | syscall.MS_NOEXEC},
		{"tmpfs", "/dev/shm", "tmpfs", "mode=1777", syscall.MS_NOSUID | syscall.MS_NODEV},
		{"mqueue", "/dev/mqueue", "mqueue", "", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", "", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC},
		{"tmpfs", "/run", "tmpfs", "mode=0755", syscall.MS_NOSUID | syscall.MS_NODEV},
		tmp,
	} {
		if err := mount(m.src, m.dir, m.fstype, m.flags, m.opts); err != nil {
			return err
		}
	}
	return nil
}

func mount(src, dir, fstype string, flags uintptr, opts string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	if err := syscall.Mount(src, dir, fstype, flags, opts); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, dir, err)
	}
	return nil
}

// network brings lo up and makes the bond of c.Members with the
// management address and default route.
func network(c Config) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	bond := netlink.NewLinkBond(netlink.LinkAttrs{Name: c.Bond})
	bond.Mode = netlink.StringToBondMode(c.BondMode)
	bond.Miimon = c.Miimon
	if err := netlink.LinkAdd(bond); err != nil {
		return fmt.Errorf("create %s: %w", c.Bond, err)
	}
	for _, name := range c.Members {
		l, err := waitLink(name, 10*time.Second)
		if err != nil {
			return err
		}
		netlink.LinkSetDown(l)
		if err := netlink.LinkSetMasterByIndex(l, bond.Index); err != nil {
			return fmt.Errorf("enslave %s to %s: %w", name, c.Bond, err)
		}
	}
	if err := netlink.LinkSetUp(bond); err != nil {
		return fmt.Errorf("%s up: %w", c.Bond, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.Address.Addr().AsSlice(), Mask: net.CIDRMask(c.Address.Bits(), 32)}}
	if err := netlink.AddrAdd(bond, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", c.Address, c.Bond, err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: bond.Index, Gw: c.Gateway.AsSlice()}); err != nil {
		return fmt.Errorf("default route via %s: %w", c.Gateway, err)
	}
	return nil
}

func waitLink(name string, timeout time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(timeout)
	for {
		l, err := netlink.LinkByName(name)
		if err == nil {
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("NIC %s: %w", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reapForever runs serve (when not nil) as a child, restarting it a second
// after it exits, and reaps every process that ends up a child of PID 1.
func reapForever(serve []string, logf func(string, ...any)) {
	server := 0
	for {
		if server == 0 && len(serve) > 0 {
			cmd := exec.Command(serve[0], serve[1:]...)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Start(); err != nil {
				logf("start control server: %v", err)
				time.Sleep(time.Second)
				continue
			}
			server = cmd.Process.Pid
		}
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.ECHILD) {
			time.Sleep(time.Second)
			continue
		}
		if pid == server && server != 0 {
			logf("control server exited (%v); restarting", ws)
			server = 0
			time.Sleep(time.Second)
		}
	}
}
