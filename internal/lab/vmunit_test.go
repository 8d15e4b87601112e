package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/underlay/underlay/internal/lab/guest"
	"github.com/underlay/underlay/internal/lab/vm"
)

func TestDaemonUnit(t *testing.T) {
	if got := daemonUnitName("dockerd --host"); got != "docker.service" {
		t.Errorf("dockerd's unit = %s", got)
	}
	if got := daemonUnitName("consul agent"); got != "ul-lab-consul-agent.service" {
		t.Errorf("consul's unit = %s", got)
	}
	d := daemon{key: "dockerd --host", args: []string{"dockerd", "--host", "unix:///run/docker.sock"}, log: "dockerd.log"}
	u := daemonUnit(d, "/usr/sbin/dockerd", []string{"PATH=/usr/bin:/bin", "A=b c"}, "/var/lib/underlay/lab/x/node1/dockerd.log")
	for _, want := range []string{
		"Type=notify\n",
		`Environment="PATH=/usr/bin:/bin"` + "\n",
		`Environment="A=b c"` + "\n",
		`Environment="UNDERLAY_LAB_DAEMON=dockerd --host"` + "\n",
		"ExecStart=/usr/sbin/dockerd --host unix:///run/docker.sock\n",
		"StandardOutput=append:/var/lib/underlay/lab/x/node1/dockerd.log\n",
		"Restart=no\n", "KillMode=process\n", "WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("dockerd's unit lacks %q:\n%s", want, u)
		}
	}
	c := daemonUnit(daemon{key: "consul agent", args: []string{"consul", "agent"}}, "/usr/local/bin/consul", nil, "/l")
	if !strings.Contains(c, "Type=exec\n") || strings.Contains(c, "KillMode") {
		t.Errorf("consul's unit:\n%s", c)
	}
}

func TestSystemdNeedsVM(t *testing.T) {
	cfg := Config{Name: "x", Nodes: 1, NoAgent: true, Systemd: true}.withDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--systemd") {
		t.Errorf("Validate of systemd namespace nodes = %v, want an error naming --systemd", err)
	}
}

// TestEnsureNodeKeepsVMOnCancel: an up interrupted (Ctrl-C, or another
// node's failure cancelling the nodes step) while it waits for a running
// VM to answer leaves that VM alone: only a VM that does not answer within
// the boot time is killed and booted again.
func TestEnsureNodeKeepsVMOnCancel(t *testing.T) {
	root := t.TempDir()
	p, err := newPlan(root, Config{Name: "vmc", Nodes: 1, VM: true, UnderlayBin: "/bin/true"}.withDefaults(), netip.MustParsePrefix("172.31.7.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	n := &p.nodes[0]
	dir := p.nodeDir(n)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := guest.WriteConfig(dir, guest.Config{Host: n.Host, Address: netip.PrefixFrom(n.MgmtIP, 24)}, "token"); err != nil {
		t.Fatal(err)
	}
	// A process the lab takes for node1's QEMU (this test's own): named
	// so, with node1's pid file (qemuProc).
	qemu := exec.Command("bash", "-c", "read -t 60 _", "-pidfile", filepath.Join(dir, "qemu.pid"))
	qemu.Args[0] = vm.QEMU
	in, err := qemu.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		qemu.Process.Kill()
		qemu.Wait()
	})
	if pid := p.qemuPID(n); pid != qemu.Process.Pid {
		t.Fatalf("qemuPID = %d, want the stand-in %d", pid, qemu.Process.Pid)
	}
	v := &vmProvider{}
	v.once.Do(func() { v.err = errors.New("no kernel in this test") }) // never builds one on the machine
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = v.EnsureNode(ctx, p, n)
	if !guest.Running(qemu.Process.Pid) {
		t.Errorf("EnsureNode with a cancelled context (%v) killed node1's running QEMU", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("EnsureNode = %v, want the cancellation", err)
	}
}

// TestGuestConfigStaysInTheNodeDir: lab up writes a VM node's files into
// its directory, which the guest writes too: a daemon.json the guest made
// a link to a host file is replaced, not written through (before, the
// host file became "{}").
func TestGuestConfigStaysInTheNodeDir(t *testing.T) {
	root := t.TempDir()
	cfg := Config{Name: "vmlink", Nodes: 1, VM: true, UnderlayBin: "/bin/true"}.withDefaults()
	p, err := newPlan(root, cfg, netip.MustParsePrefix("172.31.7.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	n := &p.nodes[0]
	outside := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(outside, []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.nodeDir(n), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(p.nodeDir(n), "daemon.json")); err != nil {
		t.Fatal(err)
	}
	if err := p.writeGuestConfig(n); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "root:x:0:0\n" {
		t.Errorf("writeGuestConfig wrote through daemon.json's link: the host's file holds %q", b)
	}
	if b, err := os.ReadFile(filepath.Join(p.nodeDir(n), "daemon.json")); err != nil || string(b) != "{}\n" {
		t.Errorf("daemon.json = %q, %v", b, err)
	}
}

// TestStartDetachedLogNotThroughALink: a daemon's log in a VM node's
// directory (QEMU's) that the guest made a link is not appended through.
func TestStartDetachedLogNotThroughALink(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "host.log")
	if err := os.WriteFile(outside, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "qemu.log")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	if err := startDetached(exec.Command("echo", "from the daemon"), link); err == nil {
		t.Error("startDetached opened its log through a link")
	}
}

// TestOpenLogStaysInTheNodeDir: a VM node's directory is the guest's to
// write (9p, root there): a console.log or agent.log the guest made a
// symbolic link to a host file is not read through by lab logs. Before,
// `lab logs --component console` opened the path with os.Open and printed
// the host file (/etc/shadow, read as root) to whoever ran it.
func TestOpenLogStaysInTheNodeDir(t *testing.T) {
	root := t.TempDir()
	cfg := Config{Name: "vmlog", Nodes: 1, VM: true, UnderlayBin: "/bin/true"}.withDefaults()
	if err := writeRecord(root, &record{Config: cfg, Management: netip.MustParsePrefix("172.31.8.0/24")}); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(root, "vmlog", "node1")
	if err := os.MkdirAll(node, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(node, "agent.log"), []byte("agent says\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"console.log", "dockerd.log"} {
		if err := os.Symlink(secret, filepath.Join(node, l)); err != nil {
			t.Fatal(err)
		}
	}
	// A FIFO would hang lab logs until the guest wrote to it.
	if err := syscall.Mkfifo(filepath.Join(node, "consul.log"), 0o644); err != nil {
		t.Fatal(err)
	}
	labs := At(root)
	f, err := labs.OpenLog("vmlog", "node1", "agent")
	if err != nil {
		t.Fatalf("open the agent's log: %v", err)
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(b) != "agent says\n" {
		t.Errorf("agent's log = %q, %v", b, err)
	}
	for _, c := range []string{"console", "dockerd", "consul"} {
		f, err := labs.OpenLog("vmlog", "node1", c)
		if err == nil {
			b, _ := io.ReadAll(f)
			f.Close()
			t.Errorf("%s's log, a link to a host file, was opened: read %q", c, b)
		}
	}
}

// TestWithLogQuotesTheEnd: a lab that fails while it is being made is
// removed with its logs, so the error of a daemon that did not come up
// quotes its log's last lines. Before, it named only the file, gone by
// the time anyone read the error. The quote is of whole lines, escaped
// for a terminal, and never read through a link a guest made.
func TestWithLogQuotesTheEnd(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, "dockerd.log")
	var b strings.Builder
	for i := range 400 {
		fmt.Fprintf(&b, "line %03d of the daemon\n", i)
	}
	b.WriteString("failed to start daemon: \x1b[2Jno space left\n")
	if err := os.WriteFile(long, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got := withLog(long)
	if !strings.HasPrefix(got, "(log: "+long+"; it ended:\n") || !strings.HasSuffix(got, `failed to start daemon: \x1b[2Jno space left)`) {
		t.Errorf("withLog = %q, want the path and the last line, escaped", got)
	}
	body := strings.TrimSuffix(strings.SplitN(got, "\n", 2)[1], ")")
	if len(body) > logTailBytes {
		t.Errorf("quoted %d bytes, want at most %d", len(body), logTailBytes)
	}
	if first := strings.SplitN(body, "\n", 2)[0]; !strings.HasPrefix(first, "line ") || !strings.HasSuffix(first, " of the daemon") {
		t.Errorf("first quoted line %q is not a whole line", first)
	}
	if strings.Contains(got, "line 000 ") {
		t.Error("quoted the log's start, want its end only")
	}

	empty := filepath.Join(dir, "consul.log")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := withLog(empty); got != "(log: "+empty+", empty)" {
		t.Errorf("withLog of an empty log = %q", got)
	}
	if got := withLog(filepath.Join(dir, "agent.log")); !strings.Contains(got, "not read: ") {
		t.Errorf("withLog of a missing log = %q, want why it was not read", got)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "console.log")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	if got := withLog(link); strings.Contains(got, "host secret") || !strings.Contains(got, "not read: ") {
		t.Errorf("withLog of a link to a host file = %q, want it not read", got)
	}
}
