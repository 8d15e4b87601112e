package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// QEMU is the emulator VM nodes run in.
const QEMU = "qemu-system-x86_64"

// NIC is one network card of a VM: its QEMU netdev id, the tap it is
// plugged into on the host and its MAC address.
type NIC struct {
	ID  string
	Tap string
	MAC string
}

// Spec is one VM.
type Spec struct {
	Name      string
	Boot      Boot
	Append    []string // kernel arguments beyond the defaults
	MemoryMiB int
	// NodeDir is shared read-write with the guest under the 9p tag "node".
	NodeDir string
	// Console, QMP and PIDFile are files QEMU writes: the serial console,
	// the monitor's socket, its pid.
	Console, QMP, PIDFile string
	NICs                  []NIC
	// IfUp is the script QEMU runs with each tap's name once it made it
	// (it plugs the tap into the lab's bridge).
	IfUp string
	// Disk, when set, is a raw disk image the guest sees as /dev/vda.
	Disk string
	// Reboot lets the guest reboot in the same QEMU; otherwise a reboot
	// ends QEMU.
	Reboot bool
}

// KernelArgs are the kernel arguments every VM node boots with: the serial
// console, no reboot loop on panic, no AppArmor (dockerd would want
// apparmor_parser), and no speculative-execution mitigations, which cost a
// lot under emulation and protect nothing in a throw-away lab VM.
var KernelArgs = []string{"console=ttyS0", "quiet", "panic=-1", "apparmor=0", "mitigations=off"}

// Args is QEMU's command line for s. Emulation is TCG with one vCPU: nested
// KVM does not work on the machines this runs on, and two vCPUs were slower.
func Args(s Spec) []string {
	args := []string{QEMU,
		"-name", s.Name,
		"-accel", "tcg,tb-size=256",
		"-cpu", "max", "-smp", "1", "-m", strconv.Itoa(s.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "file:" + s.Console,
		"-kernel", s.Boot.Kernel, "-initrd", s.Boot.Initrd,
		"-append", strings.Join(append(append([]string{}, KernelArgs...), s.Append...), " "),
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path=" + s.NodeDir + ",mount_tag=node,security_model=none,multidevs=remap",
		"-qmp", "unix:" + s.QMP + ",server=on,wait=off",
		"-pidfile", s.PIDFile,
	}
	if !s.Reboot {
		args = append(args, "-no-reboot")
	}
	if s.Disk != "" {
		// cache=unsafe: the host's page cache is the disk's; it outlives
		// the guest, and a throw-away node needs no flush to the host's disk.
		args = append(args, "-drive", "file="+s.Disk+",format=raw,if=virtio,cache=unsafe")
	}
	// csum=off: the guest sends whole checksums (and no TSO frames), for
	// its frames may leave the bridge through a user-space VLAN port, where
	// a partial checksum would arrive as a wrong one.
	for _, n := range s.NICs {
		args = append(args,
			"-netdev", "tap,id="+n.ID+",ifname="+n.Tap+",script="+s.IfUp+",downscript=no",
			"-device", "virtio-net-pci,netdev="+n.ID+",mac="+n.MAC+",csum=off")
	}
	return args
}

// SetLink sets a NIC's link up or down through QEMU's monitor at socket:
// the guest sees its carrier come or go, as when a cable is plugged or
// pulled.
func SetLink(ctx context.Context, socket, nic string, up bool) error {
	_, err := qmp(ctx, socket, "set_link", map[string]any{"name": nic, "up": up})
	if err != nil {
		return fmt.Errorf("set link %s of %s: %w", nic, socket, err)
	}
	return nil
}

// qmp runs one command on a QMP socket and returns its "return" value.
func qmp(ctx context.Context, socket, command string, args map[string]any) (json.RawMessage, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	r := bufio.NewReader(conn)
	if _, err := r.ReadBytes('\n'); err != nil { // the greeting
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	enc := json.NewEncoder(conn)
	for _, c := range []map[string]any{{"execute": "qmp_capabilities"}, {"execute": command, "arguments": args}} {
		if c["arguments"] == nil {
			delete(c, "arguments")
		}
		if err := enc.Encode(c); err != nil {
			return nil, err
		}
		ret, err := qmpAnswer(r)
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", c["execute"], err)
		}
		if c["execute"] == command {
			return ret, nil
		}
	}
	return nil, errors.New("unreachable")
}

// qmpAnswer reads lines until the answer to the last command, skipping
// asynchronous events.
func qmpAnswer(r *bufio.Reader) (json.RawMessage, error) {
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		var m struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, err
		}
		switch {
		case m.Event != "":
			continue
		case m.Error != nil:
			return nil, fmt.Errorf("%s: %s", m.Error.Class, m.Error.Desc)
		default:
			return m.Return, nil
		}
	}
}

// MAC is the address of NIC nic of node node in a lab whose management
// subnet's third octet is labByte: unique among the machine's labs, and
// locally administered (QEMU's 52:54:00 prefix).
func MAC(labByte, node, nic int) string {
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", labByte, node, nic)
}
