package vm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
)

// VLANPort is an access port of one VLAN on a trunk, in user space: frames
// tagged VID on the trunk link come out of the tap untagged, and frames
// sent into the tap go onto the trunk tagged VID. It lets a network
// namespace route a VLAN on a kernel with neither 802.1Q nor bridge VLAN
// filtering (the lab's router of the underlay VLAN).
type VLANPort struct {
	// Trunk is the link the tagged frames pass on (a veth whose peer is a
	// port of the lab's bridge).
	Trunk string
	// Tap is made by Run and gets Addr: the router's address on the VLAN.
	Tap  string
	VID  int
	Addr netip.Prefix
	// NetNS names the lab's network namespace ("net:[N]"), the only one
	// Run works in.
	NetNS string
	Log   *slog.Logger
}

// Linux constants the syscall package lacks.
const (
	solPacket         = 263
	packetAuxdata     = 8
	packetOutgoing    = 4
	tpStatusVLANValid = 1 << 4
	ethPAll           = 0x0003
	ethP8021Q         = 0x8100
	tunSetIff         = 0x400454ca
	iffTap            = 0x0002
	iffNoPI           = 0x1000
)

// Run forwards frames until ctx ends. It makes the tap, gives it Addr,
// and turns on IPv4 forwarding in the network namespace it runs in.
func (v VLANPort) Run(ctx context.Context) error {
	if v.VID < 1 || v.VID > 4094 {
		return fmt.Errorf("VLAN %d: want 1 to 4094", v.VID)
	}
	// Forwarding is turned on only in the lab's namespace: in the
	// machine's own it would stay on, routing between the machine's links.
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("read this process's network namespace: %w", err)
	}
	if err := inLabNetNS(self, v.NetNS); err != nil {
		return err
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	tap, err := openTap(v.Tap)
	if err != nil {
		return err
	}
	defer tap.Close()
	if err := v.setUp(); err != nil {
		return err
	}
	trunk, err := netlink.LinkByName(v.Trunk)
	if err != nil {
		return fmt.Errorf("trunk %s: %w", v.Trunk, err)
	}
	netlink.LinkSetUp(trunk)
	netlink.SetPromiscOn(trunk)
	fd, err := packetSocket(trunk.Attrs().Index)
	if err != nil {
		return fmt.Errorf("packet socket on %s: %w", v.Trunk, err)
	}
	defer syscall.Close(fd)
	v.log().Info("VLAN access port up", "trunk", v.Trunk, "tap", v.Tap, "vlan", v.VID, "addr", v.Addr)
	errc := make(chan error, 2)
	go func() { errc <- v.fromTrunk(ctx, fd, tap) }()
	go func() { errc <- v.toTrunk(fd, tap) }()
	select {
	case <-ctx.Done():
		tap.Close()
		return nil
	case err := <-errc:
		return err
	}
}

// inLabNetNS refuses any network namespace self but the lab's, lab. (PID
// 1's namespace, the machine's, is no reference: where PID 1 holds
// capabilities root lacks, as in a container, root may not read it.)
func inLabNetNS(self, lab string) error {
	if lab == "" {
		return errors.New("the lab's network namespace is unknown: the VLAN access port runs only there")
	}
	if self != lab {
		return fmt.Errorf("the VLAN access port runs only in the lab's network namespace %s, not %s (nsenter --net)", lab, self)
	}
	return nil
}

func (v VLANPort) setUp() error {
	l, err := netlink.LinkByName(v.Tap)
	if err != nil {
		return fmt.Errorf("tap %s: %w", v.Tap, err)
	}
	if v.Addr.IsValid() {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: v.Addr.Addr().AsSlice(), Mask: net.CIDRMask(v.Addr.Bits(), v.Addr.Addr().BitLen())}}
		if err := netlink.AddrReplace(l, a); err != nil {
			return fmt.Errorf("address %s on %s: %w", v.Addr, v.Tap, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("tap %s up: %w", v.Tap, err)
	}
	return nil
}

// fromTrunk passes the VLAN's frames from the trunk to the tap, untagged.
func (v VLANPort) fromTrunk(ctx context.Context, fd int, tap *os.File) error {
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for ctx.Err() == nil {
		n, oobn, _, from, err := syscall.Recvmsg(fd, buf, oob, 0)
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
			continue // the receive timeout: look at ctx again
		}
		if err != nil {
			return fmt.Errorf("read trunk %s: %w", v.Trunk, err)
		}
		if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == packetOutgoing {
			continue // our own frames, seen leaving
		}
		tci, tagged := auxVLAN(oob[:oobn])
		frame, ok := Untag(buf[:n], v.VID, tci, tagged)
		if !ok {
			continue
		}
		if _, err := tap.Write(frame); err != nil && ctx.Err() == nil {
			v.log().Debug("write to tap", "err", err)
		}
	}
	return nil
}

// toTrunk passes frames from the tap to the trunk, tagged.
func (v VLANPort) toTrunk(fd int, tap *os.File) error {
	buf := make([]byte, 65536)
	for {
		n, err := tap.Read(buf)
		if err != nil {
			return fmt.Errorf("read tap %s: %w", v.Tap, err)
		}
		frame, ok := Tag(buf[:n], v.VID)
		if !ok {
			continue
		}
		if _, err := syscall.Write(fd, frame); err != nil {
			v.log().Debug("write to trunk", "err", err)
		}
	}
}

// Untag returns frame without its 802.1Q tag when it belongs to VLAN vid,
// the tag being either in the frame or, as the kernel delivers it to
// packet sockets, in the auxiliary data (tci, tagged).
func Untag(frame []byte, vid int, tci uint16, tagged bool) ([]byte, bool) {
	if len(frame) < 14 {
		return nil, false
	}
	if tagged {
		return frame, int(tci&0x0fff) == vid
	}
	if binary.BigEndian.Uint16(frame[12:14]) != ethP8021Q || len(frame) < 18 {
		return nil, false
	}
	if int(binary.BigEndian.Uint16(frame[14:16])&0x0fff) != vid {
		return nil, false
	}
	out := make([]byte, 0, len(frame)-4)
	out = append(out, frame[:12]...)
	return append(out, frame[16:]...), true
}

// Tag inserts an 802.1Q tag of VLAN vid (priority 0) after the MAC addresses.
func Tag(frame []byte, vid int) ([]byte, bool) {
	if len(frame) < 14 {
		return nil, false
	}
	out := make([]byte, 0, len(frame)+4)
	out = append(out, frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, ethP8021Q)
	out = binary.BigEndian.AppendUint16(out, uint16(vid))
	return append(out, frame[12:]...), true
}

// auxVLAN reads the VLAN tag the kernel took off a received frame.
func auxVLAN(oob []byte) (tci uint16, ok bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if m.Header.Level != solPacket || m.Header.Type != packetAuxdata || len(m.Data) < 20 {
			continue
		}
		// struct tpacket_auxdata: status, len, snaplen (u32); mac, net,
		// vlan_tci, vlan_tpid (u16), in host byte order.
		status := *(*uint32)(unsafe.Pointer(&m.Data[0]))
		tci := *(*uint16)(unsafe.Pointer(&m.Data[16]))
		return tci, status&tpStatusVLANValid != 0
	}
	return 0, false
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket opens a raw packet socket bound to link ifindex, with
// auxiliary data (the VLAN tag) on and a short receive timeout.
func packetSocket(ifindex int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, int(htons(ethPAll)))
	if err != nil {
		return -1, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: ifindex}); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.SetsockoptInt(fd, solPacket, packetAuxdata, 1); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	tv := syscall.NsecToTimeval(int64(500 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// openTap makes (or attaches to) tap name; it lives as long as the file.
func openTap(name string) (*os.File, error) {
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var req [40]byte
	copy(req[:15], name)
	binary.NativeEndian.PutUint16(req[16:], iffTap|iffNoPI)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), tunSetIff, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		syscall.Close(fd)
		return nil, fmt.Errorf("make tap %s: %w", name, errno)
	}
	// Non-blocking before wrapping, so reads go through Go's poller and
	// Close interrupts them.
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// log is Log, or a discarding logger, with the port's component.
func (v *VLANPort) log() *slog.Logger {
	if v.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return v.Log.With("component", "lab_vlan_port")
}
