package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/underlay/underlay/internal/testenv"
)

// root is the repository's root.
func root(tb testing.TB) string { return testenv.RepoRoot(tb) }

// version is what the underlay binary under test says it is.
func version(t testing.TB, bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "underlay ")
}

// TestIntegrationPackage builds the Debian package of the binary under
// test with scripts/build-deb.sh and checks it: exactly the files the
// README lists, the settings as conffiles, lintian without error or
// warning, and the units clean for `systemd-analyze verify` once
// installed.
func TestIntegrationPackage(t *testing.T) {
	testenv.Require(t)
	bin := testenv.UnderlayBinary(t)
	dist := t.TempDir()
	cmd := exec.Command(filepath.Join(root(t), "scripts", "build-deb.sh"))
	cmd.Env = append(os.Environ(), "UNDERLAY_BIN="+bin, "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, out)
	}
	deb := filepath.Join(dist, "underlay_"+strings.Replace(version(t, bin), "-", "~", 1)+"_amd64.deb")
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	var files []string
	for _, line := range strings.Split(run("dpkg-deb", "--contents", deb), "\n") {
		if f := strings.Fields(line); len(f) == 6 && !strings.HasSuffix(f[5], "/") {
			files = append(files, f[1]+" "+f[0]+" "+strings.TrimPrefix(f[5], "."))
		}
	}
	want := []string{
		"root/root -rw------- /etc/underlay/agent.env",
		"root/root -rw------- /etc/underlay/control.env",
		"root/root -rw-r--r-- /lib/systemd/system/underlay-agent.service",
		"root/root -rw-r--r-- /lib/systemd/system/underlay-control.service",
		"root/root -rw-r--r-- /lib/systemd/system/underlay-ipam.socket",
		"root/root -rwxr-xr-x /usr/bin/underlay",
		"root/root -rw-r--r-- /usr/share/doc/underlay/changelog.gz",
		"root/root -rw-r--r-- /usr/share/doc/underlay/copyright",
		"root/root -rw-r--r-- /usr/share/doc/underlay/third-party-licenses.gz",
		"root/root -rw-r--r-- /usr/share/lintian/overrides/underlay",
		"root/root -rw-r--r-- /usr/share/underlay/consul/agent.hcl",
		"root/root -rw-r--r-- /usr/share/underlay/consul/control.hcl",
		"root/root -rw-r--r-- /usr/share/underlay/consul/node-rm.hcl",
		"root/root -rw-r--r-- /usr/share/underlay/unit-env.awk",
	}
	if !slices.Equal(files, want) {
		t.Errorf("package files:\n%s\nwant:\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}
	if got := run("dpkg-deb", "--info", deb, "conffiles"); got != "/etc/underlay/agent.env\n/etc/underlay/control.env\n" {
		t.Errorf("conffiles: %q", got)
	}
	for _, field := range []string{"Package: underlay", "Architecture: amd64", "Depends: init-system-helpers"} {
		if info := run("dpkg-deb", "--info", deb); !strings.Contains(info, field) {
			t.Errorf("control lacks %q:\n%s", field, info)
		}
	}
	copyright := run("sh", "-c", "dpkg-deb --fsys-tarfile "+deb+" | tar -xO ./usr/share/doc/underlay/copyright")
	for _, w := range []string{"License: Apache-2.0", "Licensed under the Apache License, Version 2.0", "/usr/share/common-licenses/Apache-2.0"} {
		if !strings.Contains(copyright, w) {
			t.Errorf("copyright lacks %q:\n%s", w, copyright)
		}
	}

	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatalf("lintian not installed (scripts/install-deps.sh installs it): %v", err)
	}
	lint, _ := exec.Command("lintian", "--pedantic", "-E", deb).CombinedOutput()
	for _, line := range strings.Split(string(lint), "\n") {
		if strings.HasPrefix(line, "E:") || strings.HasPrefix(line, "W:") {
			t.Errorf("lintian: %s", line)
		}
	}

	// Installed: the package's files over a copy of this machine's units
	// (docker.service, the targets), verified as systemd would load them.
	inst := t.TempDir()
	run("mkdir", "-p", filepath.Join(inst, "lib/systemd"))
	run("cp", "-a", "/lib/systemd/system", filepath.Join(inst, "lib/systemd/"))
	run("dpkg-deb", "--extract", deb, inst)                               // the package's units win over any copied
	for _, f := range []string{"control.tokens", "control.peer-secret"} { // made by postinst
		if err := os.WriteFile(filepath.Join(inst, "etc/underlay", f), []byte("t\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	verify := exec.Command("systemd-analyze", "verify", "--root="+inst,
		"underlay-agent.service", "underlay-ipam.socket", "underlay-control.service")
	if out, err := verify.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The check is real: a unit whose program is missing fails it.
	if err := os.Remove(filepath.Join(inst, "usr/bin/underlay")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", "--root="+inst, "underlay-agent.service").CombinedOutput(); err == nil {
		t.Errorf("systemd-analyze verify passes a unit whose program is missing:\n%s", out)
	}
}

// TestIntegrationImage: the image scripts/build.sh made of the binary
// under test is FROM scratch with its OCI labels, runs as nobody by
// default, and runs the binary.
func TestIntegrationImage(t *testing.T) {
	testenv.Require(t)
	d := testenv.Docker(t)
	bin := testenv.UnderlayBinary(t)
	v := version(t, bin)
	ref := "underlay:" + v
	ctx := testenv.Context(t, time.Minute)
	img, err := d.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatalf("image %s (scripts/build.sh builds it): %v", ref, err)
	}
	labels := img.Config.Labels
	if labels["org.opencontainers.image.version"] != v || labels["org.opencontainers.image.source"] == "" ||
		len(labels["org.opencontainers.image.revision"]) != 40 || labels["org.opencontainers.image.licenses"] != "Apache-2.0" {
		t.Errorf("labels %v", labels)
	}
	if img.Config.User != "65534:65534" {
		t.Errorf("user %q, want nobody (65534:65534)", img.Config.User)
	}
	if len(img.RootFS.Layers) != 3 {
		t.Errorf("%d layers, want 3 (CA certificates, licences, binary) on scratch", len(img.RootFS.Layers))
	}
	resp, err := d.ContainerCreate(ctx, &container.Config{Image: ref, Cmd: []string{"version"}}, &container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer d.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true})
	if err := d.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	waitC, errC := d.ContainerWait(ctx, resp.ID, container.WaitConditionNotRunning)
	select {
	case w := <-waitC:
		if w.StatusCode != 0 {
			t.Fatalf("underlay version in the image exited %d", w.StatusCode)
		}
	case err := <-errC:
		t.Fatal(err)
	}
	logs, err := d.ContainerLogs(ctx, resp.ID, container.LogsOptions{ShowStdout: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	b := make([]byte, 256)
	n, _ := logs.Read(b)
	if !strings.Contains(string(b[:n]), "underlay "+v) {
		t.Errorf("underlay version in the image printed %q", b[:n])
	}
}
