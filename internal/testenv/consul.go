package testenv

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/consul"
)

// Consul is a private Consul dev agent on loopback, started for one test, so
// a test may restart it without disturbing others.
type Consul struct {
	t       testing.TB
	bin     string
	ports   [4]int // http, serf_lan, serf_wan, server
	dataDir string
	cmd     *exec.Cmd
	done    chan struct{}
	// Token is the ACL master token when ACLs are on, else empty.
	Token     string
	extra     []string
	httpsPort int
}

// StartConsul starts a dev agent and stops it when t ends.
func StartConsul(t testing.TB) *Consul { return startConsul(t, "", nil) }

// StartConsulArgs starts a dev agent with extra flags, after the usual ones
// (a later flag wins), and stops it when t ends.
func StartConsulArgs(t testing.TB, args ...string) *Consul { return startConsul(t, "", args) }

// StartConsulHCL starts a dev agent with extra configuration (HCL), for a
// benchmark that needs other limits, and stops it when t ends.
func StartConsulHCL(t testing.TB, hcl string) *Consul {
	return startConsul(t, "", []string{"-hcl", hcl})
}

// StartConsulACL starts a dev agent with ACLs on and a deny-all default
// policy; token is its master token.
func StartConsulACL(t testing.TB, token string) *Consul {
	hcl := fmt.Sprintf(`acl { enabled = true, default_policy = "deny", tokens { master = %q, agent = %q } }`, token, token)
	return startConsul(t, token, []string{"-hcl", hcl})
}

// StartConsulTLS starts a dev agent that also serves HTTPS, requiring client
// certificates there, with a CA and certificates made by `consul tls`. It
// returns the agent and the directory holding consul-agent-ca.pem and
// dc1-client-consul-0{,-key}.pem.
func StartConsulTLS(t testing.TB) (*Consul, string) {
	t.Helper()
	dir := t.TempDir()
	for _, args := range [][]string{{"tls", "ca", "create"}, {"tls", "cert", "create", "-server", "-dc", "dc1"}, {"tls", "cert", "create", "-client", "-dc", "dc1"}} {
		cmd := exec.Command("consul", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("consul %v: %v\n%s", args, err, out)
		}
	}
	port := freePort(t)
	hcl := fmt.Sprintf(`ports { https = %d }
ca_file = %q
cert_file = %q
key_file = %q
verify_incoming_https = true`, port, filepath.Join(dir, "consul-agent-ca.pem"),
		filepath.Join(dir, "dc1-server-consul-0.pem"), filepath.Join(dir, "dc1-server-consul-0-key.pem"))
	c := startConsul(t, "", []string{"-hcl", hcl})
	c.httpsPort = port
	return c, dir
}

// HTTPSAddr is the agent's HTTPS address, when it serves one.
func (c *Consul) HTTPSAddr() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.httpsPort))
}

func startConsul(t testing.TB, token string, extra []string) *Consul {
	t.Helper()
	bin, err := exec.LookPath("consul")
	if err != nil {
		t.Fatalf("consul binary not found (install it with scripts/install-deps.sh): %v", err)
	}
	c := &Consul{t: t, bin: bin, Token: token, extra: extra}
	t.Cleanup(c.Stop)
	// A port found free can be taken by another test's process before
	// Consul binds it: then try again on other ports.
	for range 3 {
		c.dataDir = t.TempDir()
		for i := range c.ports {
			c.ports[i] = freePort(t)
		}
		if err = c.start(); err == nil {
			return c
		}
		c.Stop()
	}
	t.Fatal(err)
	return nil
}

// Addr is the agent's HTTP address, host:port.
func (c *Consul) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.ports[0])) }

// LogPath is the agent's log file (appended to across restarts).
func (c *Consul) LogPath() string { return filepath.Join(c.dataDir, "consul.log") }

// PID is the agent's process ID, 0 when it is stopped.
func (c *Consul) PID() int {
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Client returns an API client of the agent.
func (c *Consul) Client() *api.Client {
	cl, err := consul.NewClient(consul.Options{Addr: c.Addr(), Token: c.Token})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// Start starts the agent (again) and waits until it has a leader. After a
// Stop its ports may have been taken meanwhile (another test's agent or
// connection on a port the kernel handed out again): the agent then exits,
// and it is started again on the same ports until they are free.
func (c *Consul) Start() {
	c.t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		err := c.start()
		if err == nil {
			return
		}
		if !errors.Is(err, errExited) || time.Now().After(deadline) {
			c.t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// startTimeout bounds how long one start waits for its agent's leader.
const startTimeout = 30 * time.Second

// errExited: the agent started exited before it answered, most often as
// one of its ports was taken.
var errExited = errors.New("consul agent exited")

func (c *Consul) start() error {
	logf, err := os.OpenFile(c.LogPath(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	id, err := nodeID()
	if err != nil {
		logf.Close()
		return err
	}
	// The node ID tells this agent's answers from those of whatever else
	// listens on its HTTP port.
	cmd := exec.Command(c.bin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(c.ports[0]), "-serf-lan-port", strconv.Itoa(c.ports[1]),
		"-serf-wan-port", strconv.Itoa(c.ports[2]), "-server-port", strconv.Itoa(c.ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn", "-node-id", id)
	cmd.Args = append(cmd.Args, c.extra...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start consul: %w", err)
	}
	logf.Close()
	c.cmd, c.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(c.done) }()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-c.done:
			c.cmd = nil
			log, _ := os.ReadFile(c.LogPath())
			return fmt.Errorf("consul at %s: %w before it had a leader:\n%s", c.Addr(), errExited, log)
		default:
		}
		// Another agent that took the HTTP port while this one was down
		// answers too, with a leader of its own: only this agent's node
		// ID makes the answer this agent's.
		if c.ready(id) {
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(c.LogPath())
			return fmt.Errorf("consul at %s has no leader after %s:\n%s", c.Addr(), startTimeout, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ready says the agent answering on the HTTP port has node ID id and a
// leader.
func (c *Consul) ready(id string) bool {
	var leader string
	if get(c.Addr(), c.Token, "/v1/status/leader", &leader) != nil || leader == "" {
		return false
	}
	var self struct{ Config struct{ NodeID string } }
	return get(c.Addr(), c.Token, "/v1/agent/self", &self) == nil && self.Config.NodeID == id
}

// get reads a JSON answer of the agent at addr into v.
func get(addr, token, path string, v any) error {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	// Bounded: whatever took the port may never answer.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// nodeID is a random node ID, in the UUID form Consul wants.
func nodeID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("node ID: %w", err)
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// Stop kills the agent; a dev agent loses all its state.
func (c *Consul) Stop() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Kill()
	<-c.done
	c.cmd = nil
}

// Restart stops the agent, waits down, and starts it with empty state.
func (c *Consul) Restart(down time.Duration) {
	c.t.Helper()
	c.Stop()
	time.Sleep(down)
	c.Start()
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(fmt.Errorf("free port: %w", err))
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
