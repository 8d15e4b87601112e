package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/lab/guest"
	"github.com/underlay/underlay/internal/lab/vm"
)

// VM nodes' network, as a guide's hosts: two NICs bonded, the management
// network untagged on the bond, VLANs tagged on it.
const (
	// VMBond is the bond of a VM node's two NICs (active-backup).
	VMBond = "bond0"
	// UnderlayVLAN is the VLAN of the underlay subnet, routed by the lab;
	// VM nodes' underlay parent is bond0.40.
	UnderlayVLAN = 40
	// SpareVLAN is a second VLAN on the trunk, with no router.
	SpareVLAN = 41
	// VMMemoryMiB is each VM node's memory.
	VMMemoryMiB = 1024
	// vmBootTimeout bounds a VM's boot to its control server answering.
	vmBootTimeout = 3 * time.Minute
)

// Names inside the lab's network namespace (only the management veth's
// root side is in the root namespace).
const (
	vmBridge   = "br0"
	vmMgmtPeer = "mgmt0"
)

// vmProvider runs nodes as QEMU VMs booting Debian's kernel (TCG, one
// vCPU), their userland the host's, shared read-only. The lab's network
// lives in a network namespace of its own, held by a holder process: a
// bridge (the switch) whose ports are the VMs' taps (trunk ports carrying
// the untagged management network and the tagged VLANs), a veth to the
// root namespace (which holds the management gateway, as for namespace
// nodes) and a VLAN access port for VLAN 40 whose tap holds the underlay
// gateway: the lab's namespace is the underlay's router, and the root
// namespace routes the underlay subnet through it.
type vmProvider struct {
	once sync.Once
	boot vm.Boot
	err  error
}

// Kind implements provider.
func (*vmProvider) Kind() string { return KindVM }

// Preflight implements provider.
func (*vmProvider) Preflight(cfg Config) error {
	if err := needPrograms(vm.QEMU, "dockerd", "consul", "unshare", "nsenter", "iptables", "bash", "ip"); err != nil {
		return err
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("lab: VM nodes need /dev/net/tun: %w", err)
	}
	if _, err := vm.FindKernel(); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

func (v *vmProvider) prepared(ctx context.Context) (vm.Boot, error) {
	v.once.Do(func() { v.boot, v.err = vm.Prepare(ctx, vm.DefaultCacheDir) })
	return v.boot, v.err
}

// vmParent is a VM node's underlay parent.
func vmParent() string { return VMBond + "." + strconv.Itoa(UnderlayVLAN) }

func (p *plan) netDir() string       { return filepath.Join(p.dir(), "net") }
func (p *plan) routerIP() netip.Addr { return p.mgmtGW.Next() }

// vmBinary is the lab's copy of the underlay binary that VM nodes run
// (installBinary): <lab>/bin/<hash>/underlay, the hash named in
// <lab>/bin/current.
func (p *plan) vmBinary() string {
	b, _ := os.ReadFile(filepath.Join(p.dir(), "bin", "current"))
	return filepath.Join(p.dir(), "bin", strings.TrimSpace(string(b)), "underlay")
}

// trunk names of the VLAN access port in the lab's namespace: the veth
// pair (one end a bridge port, the other read by the port) and its tap.
func vlanLinks(vid int) (port, trunk, tap string) {
	s := strconv.Itoa(vid)
	return "vl" + s + "p", "vl" + s + "t", "vl" + s
}

// tapName is the tap of NIC nic of node n, in the lab's namespace.
func tapName(n *nodePlan, nic int) string { return fmt.Sprintf("n%de%d", n.Index, nic) }

// EnsureNetwork implements provider.
func (v *vmProvider) EnsureNetwork(ctx context.Context, p *plan, log *slog.Logger) error {
	if err := os.MkdirAll(p.netDir(), 0o755); err != nil {
		return err
	}
	if err := installBinary(p.cfg.UnderlayBin, filepath.Join(p.dir(), "bin")); err != nil {
		return err
	}
	if err := writeIfUp(p); err != nil {
		return err
	}
	if _, err := v.prepared(ctx); err != nil {
		return err
	}
	// Its own PID namespace too: killing the holder (its PID 1) then kills
	// the sleep it waits on, which would otherwise keep the namespace.
	holder, err := ensureHolder(ctx, p.netDir(), []string{"--net", "--pid", "--fork"}, netHolderScript, p.cfg.Name, nil)
	if err != nil {
		return fmt.Errorf("lab network namespace: %w", err)
	}
	if err := p.ensureVMNetwork(log, holder); err != nil {
		return err
	}
	if err := ensureFirewall(p.cfg.Name); err != nil {
		return err
	}
	return p.ensureVLANPort(ctx, holder)
}

// netHolderScript holds the lab's network namespace ($1 the lab's net
// state directory).
const netHolderScript = `exec -a ` + holderName + ` bash -c 'while :; do sleep 3600 & wait; done' "$1"`

// ensureVMNetwork makes the bridge, the management veth to the root
// namespace and the VLAN access port's veth, and routes the underlay
// subnet from the root namespace to the lab's router.
func (p *plan) ensureVMNetwork(log *slog.Logger, holder int) error {
	h, err := handleAt(holder)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, name := range []string{"lo"} {
		if l, err := h.LinkByName(name); err == nil {
			h.LinkSetUp(l)
		}
	}
	br, err := ensureBridgeAt(h, vmBridge, netip.PrefixFrom(p.routerIP(), p.mgmt.Bits()))
	if err != nil {
		return err
	}
	if _, err := h.LinkByName(vmMgmtPeer); err != nil {
		if old, err := netlink.LinkByName(p.bridgeM); err == nil {
			if err := checkStaleVeth(old); err != nil {
				return err
			}
			netlink.LinkDel(old)
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.bridgeM}, PeerName: vmMgmtPeer, PeerNamespace: netlink.NsPid(holder)}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s: %w", p.bridgeM, err)
		}
	}
	if err := enslaveUp(h, vmMgmtPeer, br); err != nil {
		return err
	}
	root, err := netlink.LinkByName(p.bridgeM)
	if err != nil {
		return fmt.Errorf("veth %s: %w", p.bridgeM, err)
	}
	// The lab's one link in the root namespace: no IPv6 there (disableIPv6).
	if err := disableIPv6(log, procSys(), haveIP6tables(), p.bridgeM); err != nil {
		return err
	}
	if err := netlink.AddrReplace(root, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(p.mgmtGW, p.mgmt.Bits()))}); err != nil {
		return fmt.Errorf("address %s on %s: %w", p.mgmtGW, p.bridgeM, err)
	}
	if err := netlink.LinkSetUp(root); err != nil {
		return fmt.Errorf("bring up %s: %w", p.bridgeM, err)
	}
	port, trunk, _ := vlanLinks(UnderlayVLAN)
	if _, err := h.LinkByName(port); err != nil {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: trunk}); err != nil {
			return fmt.Errorf("create veth %s: %w", port, err)
		}
	}
	if err := enslaveUp(h, port, br); err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: root.Attrs().Index, Dst: ipNet(p.subnet), Gw: p.routerIP().AsSlice()}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("route %s via %s: %w", p.subnet, p.routerIP(), err)
	}
	return nil
}

// ensureBridgeAt makes a bridge with addr in the namespace of h, up.
func ensureBridgeAt(h *netlink.Handle, name string, addr netip.Prefix) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if l, err = h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
	}
	if err := h.AddrReplace(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return nil, fmt.Errorf("address %s on %s: %w", addr, name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("bring up %s: %w", name, err)
	}
	return l, nil
}

// enslaveUp makes link name a port of br, up.
func enslaveUp(h *netlink.Handle, name string, br netlink.Link) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
			return fmt.Errorf("plug %s into %s: %w", name, br.Attrs().Name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	return nil
}

// vlanPortKey finds the VLAN access port's process.
const vlanPortKey = "vm-vlan-port"

// ensureVLANPort starts the VLAN 40 access port in the lab's namespace
// unless it runs, and waits for its tap (the underlay's router).
func (p *plan) ensureVLANPort(ctx context.Context, holder int) error {
	_, trunk, tap := vlanLinks(UnderlayVLAN)
	running := processes(vlanPortProc(p.netDir()))
	if len(running) == 0 {
		args := []string{"nsenter", "--target", strconv.Itoa(holder), "--net", "--", p.vmBinary(), "lab", vlanPortKey,
			"--trunk", trunk, "--tap", tap, "--vlan", strconv.Itoa(UnderlayVLAN),
			"--addr", netip.PrefixFrom(p.gateway, p.subnet.Bits()).String(), "--state-dir", p.netDir()}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = "/"
		if err := startDetached(cmd, filepath.Join(p.netDir(), "vlan-port.log")); err != nil {
			return err
		}
	}
	h, err := handleAt(holder)
	if err != nil {
		return err
	}
	defer h.Close()
	return poll(ctx, 20*time.Second, func() error {
		l, err := h.LinkByName(tap)
		if err != nil {
			return err
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("%s is down", tap)
		}
		return nil
	}, func(err error) error {
		return fmt.Errorf("VLAN %d access port: %w (log: %s)", UnderlayVLAN, err, filepath.Join(p.netDir(), "vlan-port.log"))
	})
}

// writeIfUp writes the script QEMU runs for each tap it makes: plug it
// into the lab's bridge, up.
func writeIfUp(p *plan) error {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return err
	}
	script := "#!/bin/sh\n# QEMU runs this with each tap it made: plug it into the lab's bridge.\nexec " + ip + ` link set "$1" master ` + vmBridge + " up\n"
	return os.WriteFile(filepath.Join(p.dir(), "qemu-ifup"), []byte(script), 0o755)
}

// installBinary copies the underlay binary into dir/<hash>/underlay and
// names the hash in dir/current. VM nodes run that copy: a test binary in a
// /tmp the guests do not see, or a rebuild, changes nothing under them —
// a file changed in place under the guests' overlay of the host's root
// reads as a mix of old and new (a new build gets a new directory; the
// base name, which names the agent daemon, stays "underlay").
func installBinary(src, dir string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read underlay binary: %w", err)
	}
	sum := sha256.Sum256(b)
	hash := hex.EncodeToString(sum[:])[:16]
	dst := filepath.Join(dir, hash, "underlay")
	if _, err := os.Stat(dst); err != nil {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst+".tmp", b, 0o755); err != nil {
			return fmt.Errorf("copy underlay binary: %w", err)
		}
		if err := os.Rename(dst+".tmp", dst); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "current.tmp"), []byte(hash+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(filepath.Join(dir, "current.tmp"), filepath.Join(dir, "current"))
}

// guestClient reaches node n's control server.
func (p *plan) guestClient(n *nodePlan) (guest.Client, error) {
	_, token, err := guest.ReadConfig(p.nodeDir(n))
	if err != nil {
		return guest.Client{}, err
	}
	return guest.Client{Addr: netip.AddrPortFrom(n.MgmtIP, guest.Port).String(), Token: token}, nil
}

// qemuPID is the pid of node n's QEMU; 0 when it does not run.
func (p *plan) qemuPID(n *nodePlan) int {
	ps := processes(qemuProc(p.nodeDir(n)))
	if len(ps) == 0 {
		return 0
	}
	return ps[0].pid
}

// EnsureNode implements provider: a running VM whose control server
// answers is left alone; one that does not answer within the boot time is
// killed and booted again.
func (v *vmProvider) EnsureNode(ctx context.Context, p *plan, n *nodePlan) error {
	dir := p.nodeDir(n)
	if pid := p.qemuPID(n); pid != 0 {
		if c, err := p.guestClient(n); err == nil {
			if poll(ctx, vmBootTimeout, func() error { return c.Ping(ctx) }, func(err error) error { return err }) == nil {
				return nil
			}
		}
		// An up interrupted while it waited (Ctrl-C, another node's
		// failure) says nothing of this VM, which may be booting.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		killIfStill(pid, func() int { return p.qemuPID(n) }, 10*time.Second)
	}
	boot, err := v.prepared(ctx)
	if err != nil {
		return err
	}
	holder := holderPID(p.netDir())
	if holder == 0 {
		return errors.New("the lab's network namespace is gone")
	}
	if err := p.writeGuestConfig(n); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	for _, stale := range []string{"qmp.sock", "qemu.pid", "console.log"} {
		os.Remove(filepath.Join(dir, stale))
	}
	spec := vm.Spec{
		Name: "ul-" + p.cfg.Name + "-" + n.Name, Boot: boot, MemoryMiB: VMMemoryMiB,
		Append:  guest.KernelArgs(p.vmBinary(), dir),
		NodeDir: dir, Console: filepath.Join(dir, "console.log"), QMP: filepath.Join(dir, "qmp.sock"),
		PIDFile: filepath.Join(dir, "qemu.pid"), IfUp: filepath.Join(p.dir(), "qemu-ifup"),
	}
	if p.cfg.Systemd {
		disk := filepath.Join(dir, "disk.img")
		if err := makeDisk(ctx, disk); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := v.writeBootUnits(p, n); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		// The kernel's NIC names stay (eth0, eth1 in the bond): udev
		// cannot rename links that are up.
		spec.Disk, spec.Reboot = disk, true
		spec.Append = append(spec.Append, "ul.disk=/dev/vda", "net.ifnames=0")
	}
	labByte := int(p.mgmt.Addr().As4()[2])
	for k := range 2 {
		spec.NICs = append(spec.NICs, vm.NIC{ID: "nic" + strconv.Itoa(k), Tap: tapName(n, k), MAC: vm.MAC(labByte, n.Index, k)})
	}
	args := append([]string{"nsenter", "--target", strconv.Itoa(holder), "--net", "--"}, vm.Args(spec)...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = "/"
	if err := startDetached(cmd, filepath.Join(dir, "qemu.log")); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	c, err := p.guestClient(n)
	if err != nil {
		return err
	}
	return poll(ctx, vmBootTimeout, func() error {
		if !guest.Running(cmd.Process.Pid) {
			log, _ := os.ReadFile(filepath.Join(dir, "qemu.log"))
			return fmt.Errorf("qemu exited: %s", bytes.TrimSpace(log))
		}
		return c.Ping(ctx)
	}, func(err error) error {
		return fmt.Errorf("node %s: VM did not come up: %w %s", n.Name, err, withLog(filepath.Join(dir, "console.log")))
	})
}

// writeGuestConfig tells the guest who it is, keeping the node's token.
func (p *plan) writeGuestConfig(n *nodePlan) error {
	dir := p.nodeDir(n)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_, token, err := guest.ReadConfig(dir)
	if err != nil || token == "" {
		b := make([]byte, 16)
		rand.Read(b)
		token = hex.EncodeToString(b)
	}
	if err := guest.WriteNodeFile(dir, "daemon.json", []byte("{}\n"), 0o644); err != nil {
		return err
	}
	c := guest.Config{
		Host: n.Host, Address: netip.PrefixFrom(n.MgmtIP, p.mgmt.Bits()), Gateway: p.routerIP(),
		Bond: VMBond, BondMode: "active-backup", Members: []string{"eth0", "eth1"}, Miimon: 100,
		TmpFS: []string{"/var/lib/docker", "/var/lib/containerd"}, Systemd: p.cfg.Systemd,
	}
	if p.cfg.Systemd {
		c.TmpFS = nil // on the disk (the initramfs mounts them)
	}
	return guest.WriteConfig(dir, c, token)
}

// diskSize is a systemd node's disk (sparse: it takes what is written).
const diskSize = 4 << 30

// makeDisk makes a systemd node's disk, ext4, unless it exists: it keeps
// the node's writes across reboots and QEMU restarts, until lab down.
func makeDisk(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	if err := os.WriteFile(tmp, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(tmp, diskSize); err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	// Inode tables and journal written now, on the host: the guest's lazy
	// init would take its emulated CPU for minutes.
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-i", "65536", "-O", "^metadata_csum",
		"-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mkfs.ext4 %s: %v: %s", tmp, err, bytes.TrimSpace(out))
	}
	return os.Rename(tmp, path)
}

// Layout implements provider: state on the guest's tmpfs, logs in the
// node's directory (shared with the guest at the same path), dockerd also
// on the management address (plain TCP: the lab's network is private to
// this machine), underlay from the lab's copy.
func (*vmProvider) Layout(p *plan, n *nodePlan) layout {
	tcp := "tcp://" + netip.AddrPortFrom(n.MgmtIP, 2375).String()
	return layout{
		DockerListen: []string{"unix:///run/docker.sock", tcp}, DockerHost: tcp,
		DockerData: "/var/lib/docker", DockerExec: "/run/docker", DockerPid: "/run/docker.pid",
		DockerExtra: []string{"--config-file", filepath.Join(p.nodeDir(n), "daemon.json"), "--tls=false"},
		ConsulData:  "/var/lib/underlay-lab/consul", AgentState: "/var/lib/underlay-lab/agent", LogDir: p.nodeDir(n), UnderlayBin: p.vmBinary(),
		Parent: vmParent(), Slow: 3,
	}
}

// Env implements provider: a fresh environment (the host's would point at
// host-only paths), the lab's Docker engine first on PATH.
func (*vmProvider) Env(p *plan, n *nodePlan) []string {
	engine, _ := EngineBinDir(p.cfg.Engine)
	return withPath([]string{"HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"DOCKER_HOST=unix:///run/docker.sock", "CONSUL_HTTP_ADDR=127.0.0.1:" + strconv.Itoa(ConsulHTTPPort)}, engine)
}

// Start implements provider: a daemon of a systemd node is an enabled
// unit, which comes back at boot.
func (v *vmProvider) Start(ctx context.Context, p *plan, n *nodePlan, d daemon) error {
	c, err := p.guestClient(n)
	if err != nil {
		return err
	}
	if p.cfg.Systemd {
		return v.startUnit(ctx, c, p, n, d)
	}
	if _, err := c.Start(ctx, d.key, d.args, append(v.Env(p, n), d.env...), filepath.Join(p.layout(n).LogDir, d.log)); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

// Running implements provider.
func (*vmProvider) Running(ctx context.Context, p *plan, n *nodePlan, key string) bool {
	c, err := p.guestClient(n)
	if err != nil {
		return false
	}
	ok, _, err := c.Running(ctx, key)
	return err == nil && ok
}

// Kill implements provider.
func (v *vmProvider) Kill(ctx context.Context, p *plan, n *nodePlan, key string) error {
	if !v.Running(ctx, p, n, key) {
		return fmt.Errorf("node %s: %s not running", n.Name, key)
	}
	c, err := p.guestClient(n)
	if err != nil {
		return err
	}
	return c.Kill(ctx, key)
}

// Command implements provider: underlay's guest client, whose environment
// becomes the command's and whose exit status is the command's.
func (v *vmProvider) Command(ctx context.Context, p *plan, n *nodePlan, args []string) (*exec.Cmd, error) {
	if p.qemuPID(n) == 0 {
		return nil, fmt.Errorf("node %s of lab %s is stopped (run `underlay lab up --name %s`)", n.Name, p.cfg.Name, p.cfg.Name)
	}
	full := append([]string{p.vmBinary(), "lab", "vm-exec", "--node-dir", p.nodeDir(n),
		"--addr", netip.AddrPortFrom(n.MgmtIP, guest.Port).String(), "--"}, args...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = v.Env(p, n)
	return cmd, nil
}

// Probe implements provider.
func (*vmProvider) Probe(ctx context.Context, p *plan, n *nodePlan) (int, string) {
	pid := p.qemuPID(n)
	if pid == 0 {
		return 0, "VM not running"
	}
	c, err := p.guestClient(n)
	if err == nil {
		err = c.Ping(ctx)
	}
	if err != nil {
		return pid, "VM not answering (booting, or its network is down)"
	}
	return pid, ""
}

// Memory implements provider: QEMU (the guest's memory in use and the
// emulator's code cache), the VLAN access port and the holder: the
// processes the lab starts (ownProc), not a `tail -f` of a console log or
// a `lab exec` client.
func (*vmProvider) Memory(ctx context.Context, p *plan) (int64, error) {
	var total int64
	for _, pr := range processes(ownProc(p.dir())) {
		total += rssBytes(pr.pid)
	}
	return total, nil
}

// SetLink plugs (up) or pulls (down) NIC nic (0 or 1, the guest's eth0 and
// eth1) of a VM node: the guest sees its carrier come or go, and the lab's
// switch port goes up or down with it (so the bridge forgets the MAC
// addresses learnt on it, as a switch does).
func (l Labs) SetLink(ctx context.Context, name, node string, nic int, up bool) error {
	p, n, err := l.findNode(name, node)
	if err != nil {
		return err
	}
	if p.prov.Kind() != KindVM {
		return fmt.Errorf("lab %s: NICs can be pulled on VM nodes only", name)
	}
	if nic < 0 || nic > 1 {
		return fmt.Errorf("NIC %d: want 0 or 1", nic)
	}
	holder := holderPID(p.netDir())
	if holder == 0 {
		return errors.New("the lab's network namespace is gone")
	}
	h, err := handleAt(holder)
	if err != nil {
		return err
	}
	defer h.Close()
	tap, err := h.LinkByName(tapName(n, nic))
	if err != nil {
		return fmt.Errorf("tap of %s NIC %d: %w", n.Name, nic, err)
	}
	if !up {
		if err := vm.SetLink(ctx, filepath.Join(p.nodeDir(n), "qmp.sock"), "nic"+strconv.Itoa(nic), false); err != nil {
			return err
		}
		return h.LinkSetDown(tap)
	}
	if err := h.LinkSetUp(tap); err != nil {
		return err
	}
	return vm.SetLink(ctx, filepath.Join(p.nodeDir(n), "qmp.sock"), "nic"+strconv.Itoa(nic), true)
}

// writeBootUnits writes the units of a systemd node's dockerd and Consul
// into its directory, where Init installs and enables them before systemd
// starts: they start with the boot, with no request to a systemd busy
// booting (under emulation a daemon-reload then takes longer than
// systemctl waits).
func (v *vmProvider) writeBootUnits(p *plan, n *nodePlan) error {
	for _, d := range []daemon{p.dockerd(n), p.consul(n)} {
		name, text, err := v.unitOf(p, n, d)
		if err != nil {
			return err
		}
		// The guest may have made units a link to the host's
		// /etc/systemd/system: WriteNodeFile stays in the node's directory.
		if err := guest.WriteNodeFile(p.nodeDir(n), guest.UnitsDir+"/"+name, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// unitOf is daemon d's unit on node n: its name and text.
func (v *vmProvider) unitOf(p *plan, n *nodePlan, d daemon) (string, string, error) {
	env := append(v.Env(p, n), d.env...)
	bin, err := lookPathIn(envValue(env, "PATH"), d.args[0])
	if err != nil {
		return "", "", err
	}
	return daemonUnitName(d.key), daemonUnit(d, bin, env, filepath.Join(p.layout(n).LogDir, d.log)), nil
}

// startUnitScript installs unit $1 from its standard input (reloading
// systemd only when it changed), enables it by its link (no request to
// systemd) and starts it unless it runs. systemctl's requests are retried:
// a systemd busy booting may not answer in time.
const startUnitScript = `set -e
f=/etc/systemd/system/$1
cat >"$f.new"
if cmp -s "$f.new" "$f"; then rm "$f.new"; else mv "$f.new" "$f"; systemctl daemon-reload; fi
mkdir -p /etc/systemd/system/multi-user.target.wants
ln -sfn "../$1" "/etc/systemd/system/multi-user.target.wants/$1"
for i in 1 2 3; do systemctl start --no-block "$1" && exit 0; sleep 2; done
exit 1
`

// startUnit writes daemon d of a systemd node as an enabled unit and
// starts it unless it runs.
func (v *vmProvider) startUnit(ctx context.Context, c guest.Client, p *plan, n *nodePlan, d daemon) error {
	unit, text, err := v.unitOf(p, n, d)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	var out bytes.Buffer
	code, err := c.Exec(ctx, []string{"sh", "-c", startUnitScript, "sh", unit}, v.Env(p, n), strings.NewReader(text), &out, &out)
	if err == nil && code != 0 {
		err = fmt.Errorf("exit status %d: %s", code, bytes.TrimSpace(out.Bytes()))
	}
	if err != nil {
		return fmt.Errorf("node %s: start %s as %s: %w", n.Name, d.key, unit, err)
	}
	return nil
}

// daemonUnitName is the unit of a daemon on a systemd node: dockerd is
// docker.service, as on a host (the package's units order themselves by
// it); the others are ul-lab-<key>.service.
func daemonUnitName(key string) string {
	if key == "dockerd --host" {
		return "docker.service"
	}
	return "ul-lab-" + strings.Join(strings.Fields(strings.ReplaceAll(key, "/", "-")), "-") + ".service"
}

// daemonUnit is the unit file of daemon d (its program at bin) with
// environment env and its output appended to log. Restart=no: a daemon
// the lab kills stays dead until lab up, as on other nodes.
func daemonUnit(d daemon, bin string, env []string, log string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by underlay lab.\n[Unit]\nDescription=underlay lab: %s\n", d.key)
	typ := "exec"
	if d.key == "dockerd --host" {
		// dockerd tells systemd when it is ready, so that units ordered
		// after docker.service wait for it.
		typ = "notify"
		b.WriteString("After=network-online.target\n")
	}
	fmt.Fprintf(&b, "\n[Service]\nType=%s\n", typ)
	for _, e := range append(slices.Clone(env), guest.DaemonEnv(d.key)) {
		k, v, _ := strings.Cut(e, "=")
		fmt.Fprintf(&b, "Environment=%s\n", guest.EnvLine(k, v))
	}
	args := append([]string{bin}, d.args[1:]...)
	fmt.Fprintf(&b, "ExecStart=%s\nStandardOutput=append:%s\nStandardError=append:%s\nRestart=no\n", guest.ExecLine(args), log, log)
	if d.key == "dockerd --host" {
		// As Debian's docker.service: containers outlive a dockerd restart.
		b.WriteString("TimeoutStartSec=0\nDelegate=yes\nKillMode=process\nLimitNOFILE=1048576\nLimitNPROC=infinity\nTasksMax=infinity\n")
	}
	b.WriteString("\n[Install]\nWantedBy=multi-user.target\n")
	return b.String()
}

// lookPathIn finds program name in the directories of path (a PATH value).
func lookPathIn(path, name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		f := filepath.Join(dir, name)
		if st, err := os.Stat(f); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return f, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH %s", name, path)
}

// envValue is the value of k in env (the last one set).
func envValue(env []string, k string) string {
	v := ""
	for _, e := range env {
		if key, val, ok := strings.Cut(e, "="); ok && key == k {
			v = val
		}
	}
	return v
}
