package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/underlay/underlay/internal/dockerhost"
)

// Dockerd is a private dockerd for one test, with its own data root, exec
// root, socket and pid file, so the test may kill and restart it. It runs
// in a network namespace of its own (kept across restarts): a dockerd
// started with --bridge none deletes any docker0 in its namespace, which
// must not be the machine's. Its containers use macvlan networks on
// parents made by VethParent.
type Dockerd struct {
	t     testing.TB
	dir   string
	netns string // path of the persistent network namespace
	cmd   *exec.Cmd
	done  chan struct{}
}

// StartDockerd starts a private dockerd holding the test image, and stops
// it (and so its containers) when t ends.
func StartDockerd(t testing.TB, from *client.Client) *Dockerd {
	t.Helper()
	if _, err := exec.LookPath("dockerd"); err != nil {
		t.Fatalf("dockerd not found (install it with scripts/install-deps.sh): %v", err)
	}
	// Short path: the socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "ul-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	nsName := "ul-pd" + ID(t)
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", nsName, err, out)
	}
	d := &Dockerd{t: t, dir: dir, netns: "/run/netns/" + nsName}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsName).Run() })
	d.Start()
	t.Cleanup(func() {
		d.stop(syscall.SIGTERM)
		// Overlay mounts of the private data root must go before the directory.
		exec.Command("sh", "-c", "grep -o ' "+dir+"[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l").Run()
		os.RemoveAll(dir)
	})
	loadTestImage(t, from, d.Client())
	return d
}

// Host is the daemon's DOCKER_HOST.
func (d *Dockerd) Host() string { return "unix://" + filepath.Join(d.dir, "docker.sock") }

// Client returns a client of the daemon, with API version negotiation.
func (d *Dockerd) Client() *client.Client {
	c, err := dockerhost.NewClientAt(d.Host())
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

// Start starts the daemon (again) and waits until it answers.
func (d *Dockerd) Start() {
	d.t.Helper()
	logf, err := os.OpenFile(filepath.Join(d.dir, "dockerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer logf.Close()
	// nsenter, not `ip netns exec`, which remounts /sys and breaks dockerd's cgroups.
	cmd := exec.Command("nsenter", "--net="+d.netns, "dockerd",
		"--host", d.Host(),
		"--data-root", filepath.Join(d.dir, "data"),
		"--exec-root", filepath.Join(d.dir, "exec"),
		"--pidfile", filepath.Join(d.dir, "docker.pid"),
		"--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("start dockerd: %v", err)
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(d.done) }()
	c, err := dockerhost.NewClientAt(d.Host())
	if err != nil {
		d.t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
			d.t.Fatalf("private dockerd not answering after 60s: %v\n%s", err, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// VethParent makes a veth pair whose first end, up inside the daemon's
// network namespace, can be a macvlan parent there. The peer stays in the
// root namespace, attached to nothing.
func (d *Dockerd) VethParent() string {
	d.t.Helper()
	name := VethParent(d.t, "")
	l, err := netlink.LinkByName(name)
	if err != nil {
		d.t.Fatal(err)
	}
	ns, err := netns.GetFromPath(d.netns)
	if err != nil {
		d.t.Fatal(err)
	}
	defer ns.Close()
	if err := netlink.LinkSetNsFd(l, int(ns)); err != nil {
		d.t.Fatalf("move %s into %s: %v", name, d.netns, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		d.t.Fatal(err)
	}
	defer h.Close()
	inside, err := h.LinkByName(name)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := h.LinkSetUp(inside); err != nil {
		d.t.Fatal(err)
	}
	return name
}

// Kill kills the daemon with SIGKILL, as a crash would.
func (d *Dockerd) Kill() { d.stop(syscall.SIGKILL) }

func (d *Dockerd) stop(sig syscall.Signal) {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	d.cmd = nil
}

// loadTestImage copies the test image from one daemon into another: there
// is no registry to pull from.
func loadTestImage(t testing.TB, from, to *client.Client) {
	t.Helper()
	ctx := Context(t, 2*time.Minute)
	rc, err := from.ImageSave(ctx, []string{TestImage})
	if err != nil {
		t.Fatalf("save %s: %v", TestImage, err)
	}
	defer rc.Close()
	resp, err := to.ImageLoad(ctx, rc, client.ImageLoadWithQuiet(true))
	if err != nil {
		t.Fatalf("load %s: %v", TestImage, err)
	}
	defer resp.Body.Close()
	if _, err := to.ImageInspect(ctx, TestImage); err != nil {
		t.Fatal(fmt.Errorf("image %s after load: %w", TestImage, err))
	}
}
