package vm

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readCpio parses a newc archive back: name → (mode, data).
func readCpio(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		off += 110 + namesize
		align()
		data := string(b[off : off+size])
		off += size
		align()
		if name == "TRAILER!!!" {
			return out
		}
		out[name] = strconv.FormatInt(int64(mode), 8) + ":" + data
	}
}

func TestCpio(t *testing.T) {
	var buf bytes.Buffer
	w := &cpioWriter{w: &buf}
	w.Dir("bin")
	w.File("bin/busybox", 0o755, []byte("ELF..."))
	w.Symlink("bin/sh", "busybox")
	w.File("init", 0o755, []byte("#!/bin/sh\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"bin":         "40755:",
		"bin/busybox": "100755:ELF...",
		"bin/sh":      "120777:busybox",
		"init":        "100755:#!/bin/sh\n",
	}
	if d := cmp.Diff(want, readCpio(t, buf.Bytes())); d != "" {
		t.Errorf("archive (-want +got):\n%s", d)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive of %d bytes, not 4-aligned", buf.Len())
	}
}

func TestResolveModules(t *testing.T) {
	dep := `kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
`
	deps, err := parseModulesDep(strings.NewReader(dep))
	if err != nil {
		t.Fatal(err)
	}
	got, err := resolveModules(deps, []string{"virtio_pci", "9pnet_virtio", "9p"})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range got {
		pos[m] = i
	}
	if len(got) != len(deps) {
		t.Errorf("modules %v: want all %d of them, once", got, len(deps))
	}
	for m, ds := range deps {
		for _, d := range ds {
			if pos[d] > pos[m] {
				t.Errorf("%s loaded before its dependency %s: %v", m, d, got)
			}
		}
	}
	if _, err := resolveModules(deps, []string{"bonding"}); err == nil || !strings.Contains(err.Error(), "bonding") {
		t.Errorf("missing module: %v", err)
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"6.1.0-9-amd64", "6.1.0-10-amd64", true},
		{"6.1.0-10-amd64", "6.1.0-9-amd64", false},
		{"5.10.0-30-amd64", "6.1.0-1-amd64", true},
		{"6.1.0-57-amd64", "6.1.0-57-amd64", false},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("versionLess(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}

func TestTagUntag(t *testing.T) {
	frame := append(bytes.Repeat([]byte{0xaa}, 6), bytes.Repeat([]byte{0xbb}, 6)...)
	frame = append(frame, 0x08, 0x00, 1, 2, 3, 4)
	tagged, ok := Tag(frame, 40)
	if !ok || len(tagged) != len(frame)+4 || !bytes.Equal(tagged[12:16], []byte{0x81, 0x00, 0x00, 40}) {
		t.Fatalf("Tag = % x", tagged)
	}
	back, ok := Untag(tagged, 40, 0, false)
	if !ok || !bytes.Equal(back, frame) {
		t.Errorf("Untag(inline tag) = % x, %v", back, ok)
	}
	if _, ok := Untag(tagged, 41, 0, false); ok {
		t.Error("a VLAN 40 frame passed as VLAN 41")
	}
	if got, ok := Untag(frame, 40, 0x2028, true); !ok || !bytes.Equal(got, frame) {
		t.Errorf("tag in aux data (priority 1, VLAN 40): %v", ok)
	}
	if _, ok := Untag(frame, 40, 0, false); ok {
		t.Error("an untagged frame passed as VLAN 40")
	}
	if _, ok := Tag([]byte{1, 2}, 40); ok {
		t.Error("a runt frame was tagged")
	}
}

func TestArgs(t *testing.T) {
	args := strings.Join(Args(Spec{
		Name: "ul-x-node1", Boot: Boot{Kernel: "/k", Initrd: "/i"}, MemoryMiB: 1024, Append: []string{"ul.dir=/d"},
		NodeDir: "/d", Console: "/d/console.log", QMP: "/d/qmp.sock", PIDFile: "/d/qemu.pid", IfUp: "/l/qemu-ifup",
		NICs: []NIC{{ID: "nic0", Tap: "n1e0", MAC: MAC(4, 1, 0)}, {ID: "nic1", Tap: "n1e1", MAC: MAC(4, 1, 1)}},
	}), " ")
	for _, want := range []string{
		"-accel tcg", "-smp 1", "-m 1024", "-kernel /k -initrd /i",
		"apparmor=0", "ul.dir=/d",
		"local,path=/,mount_tag=hostroot,security_model=none,readonly=on",
		"local,path=/d,mount_tag=node,",
		"-netdev tap,id=nic0,ifname=n1e0,script=/l/qemu-ifup,downscript=no -device virtio-net-pci,netdev=nic0,mac=52:54:00:04:01:00,csum=off",
		"mac=52:54:00:04:01:01",
		"-qmp unix:/d/qmp.sock,server=on,wait=off",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU args lack %q:\n%s", want, args)
		}
	}
}

func TestQMPAnswer(t *testing.T) {
	r := bufio.NewReader(strings.NewReader(`{"event": "NIC_RX_FILTER_CHANGED", "data": {}}
{"return": {}}
{"error": {"class": "DeviceNotFound", "desc": "Device 'nic9' not found"}}
`))
	if ret, err := qmpAnswer(r); err != nil || string(ret) != "{}" {
		t.Errorf("answer after an event: %s, %v", ret, err)
	}
	if _, err := qmpAnswer(r); err == nil || !strings.Contains(err.Error(), "nic9") {
		t.Errorf("error answer: %v", err)
	}
}

// TestVLANPortRunsOnlyInTheLabsNamespace: the VLAN access port turns on
// forwarding where it runs, so it must refuse any namespace but the lab's
// (the machine's above all). Before, Run wrote ip_forward first and asked
// nothing; then it compared with PID 1's namespace, which root may not
// read where PID 1 holds more capabilities (a container): every VM lab
// failed to come up.
func TestVLANPortRunsOnlyInTheLabsNamespace(t *testing.T) {
	lab, machine := "net:[4026532500]", "net:[4026531840]"
	if err := inLabNetNS(machine, lab); err == nil || !strings.Contains(err.Error(), machine) || !strings.Contains(err.Error(), lab) {
		t.Errorf("in the machine's namespace: %v, want refused naming both", err)
	}
	if err := inLabNetNS(machine, ""); err == nil {
		t.Error("lab's namespace unknown: no error")
	}
	if err := inLabNetNS(lab, lab); err != nil {
		t.Errorf("in the lab's namespace: %v", err)
	}
}
