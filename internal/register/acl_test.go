package register_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationConsulACL runs the agent binary against a Consul whose ACLs
// deny everything by default: without a token nothing is written and the
// agent says why; with --consul-token-file it registers.
func TestIntegrationConsulACL(t *testing.T) {
	testenv.Require(t)
	h := &harness{t: t, docker: testenv.Docker(t), id: testenv.ID(t)}
	h.consul = testenv.StartConsulACL(t, "master-"+h.id)
	h.api = h.consul.Client()
	h.node = "it-" + h.id
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4})
	name := h.id + "-acl"
	testenv.RunContainer(t, h.docker, testenv.Container{Name: name, Networks: []string{n.Name}, Labels: h.labels(nil)})
	svcID := h.node + ":" + name + ":8080"

	dir := t.TempDir()
	run := func(extra ...string) (*exec.Cmd, string) {
		logPath := filepath.Join(dir, fmt.Sprintf("agent-%d.log", len(extra)))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		args := append([]string{"agent", "--node", h.node, "--consul-addr", h.consul.Addr(),
			"--label", "io.underlay.test=" + h.id, "--host-ip", "127.0.0.1", "--listen", "", "--networks=false", "--ipam=false"}, extra...)
		cmd := exec.Command(testenv.UnderlayBinary(t), args...)
		cmd.Env = append(os.Environ(), "CONSUL_HTTP_TOKEN=") // no token from the environment
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, logPath
	}

	noToken, logPath := run()
	testenv.Eventually(t, 15*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "Permission denied") || strings.Contains(string(b), "ACL not found"),
			"agent without a token does not report the ACL refusal:\n" + string(b)
	})
	if svcs := h.services(); len(svcs) != 0 {
		t.Fatalf("registered without a token: %v", svcs)
	}
	noToken.Process.Kill()
	noToken.Wait()

	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(h.consul.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run("--consul-token-file", tokenFile)
	h.waitServices(15*time.Second, svcID)
}

// TestIntegrationConsulTLS runs the agent binary against Consul's HTTPS port,
// which demands a client certificate signed by the agent CA.
func TestIntegrationConsulTLS(t *testing.T) {
	testenv.Require(t)
	h := &harness{t: t, docker: testenv.Docker(t), id: testenv.ID(t)}
	var certs string
	h.consul, certs = testenv.StartConsulTLS(t)
	h.api = h.consul.Client()
	h.node = "it-" + h.id
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4})
	name := h.id + "-tls"
	testenv.RunContainer(t, h.docker, testenv.Container{Name: name, Networks: []string{n.Name}, Labels: h.labels(nil)})

	cmd := exec.Command(testenv.UnderlayBinary(t), "agent", "--node", h.node,
		"--consul-addr", h.consul.HTTPSAddr(),
		"--consul-cacert", filepath.Join(certs, "consul-agent-ca.pem"),
		"--consul-client-cert", filepath.Join(certs, "dc1-client-consul-0.pem"),
		"--consul-client-key", filepath.Join(certs, "dc1-client-consul-0-key.pem"),
		"--label", "io.underlay.test="+h.id, "--host-ip", "127.0.0.1", "--listen", "", "--networks=false", "--ipam=false")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("agent output:\n%s", out.String())
		}
	})
	h.waitServices(15*time.Second, h.node+":"+name+":8080")
}
