package guest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func startServer(t *testing.T) Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Token: "secret", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan struct{})
	go func() { s.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return Client{Addr: ln.Addr().String(), Token: "secret"}
}

func TestExec(t *testing.T) {
	c := startServer(t)
	ctx := context.Background()
	var out, errb bytes.Buffer
	code, err := c.Exec(ctx, []string{"sh", "-c", "echo out; echo err >&2; cat; exit 3"}, []string{"PATH=/usr/bin:/bin"},
		strings.NewReader("from stdin\n"), &out, &errb)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 || out.String() != "out\nfrom stdin\n" || errb.String() != "err\n" {
		t.Errorf("exec: code %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	if code, err := c.Exec(ctx, []string{"/nonexistent/prog"}, nil, nil, io.Discard, io.Discard); err == nil || code != 127 {
		t.Errorf("exec of a missing program: code %d, err %v; want 127 and an error", code, err)
	}
	// Output larger than a frame arrives whole.
	out.Reset()
	if _, err := c.Exec(ctx, []string{"head", "-c", "3000000", "/dev/zero"}, nil, nil, &out, nil); err != nil || out.Len() != 3000000 {
		t.Errorf("large output: %d bytes, %v", out.Len(), err)
	}
}

func TestBadToken(t *testing.T) {
	c := startServer(t)
	c.Token = "wrong"
	if err := c.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), "bad token") {
		t.Errorf("ping with a bad token: %v", err)
	}
	if code, err := c.Exec(context.Background(), []string{"true"}, nil, nil, nil, nil); err == nil {
		t.Errorf("exec with a bad token ran: code %d", code)
	}
}

func TestDaemons(t *testing.T) {
	c := startServer(t)
	ctx := context.Background()
	log := filepath.Join(t.TempDir(), "d.log")
	// A key no other test process could carry.
	key := "sh -c"
	args := []string{"sh", "-c", "echo started; while :; do sleep 1; done", "ul-guest-test-" + filepath.Base(t.TempDir())}
	pid, err := c.Start(ctx, key, args, []string{"PATH=/usr/bin:/bin"}, log)
	if err != nil || pid == 0 {
		t.Fatalf("start: pid %d, %v", pid, err)
	}
	t.Cleanup(func() { c.Kill(ctx, key) })
	ok, got, err := c.Running(ctx, key)
	if err != nil || !ok || got != pid {
		t.Fatalf("running: %v pid %d (%v), want pid %d", ok, got, err, pid)
	}
	// Each start appends its line to the log; a kill before a daemon wrote
	// it would lose the line, so each is awaited before the next kill.
	waitStarted := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(log)
			if strings.Count(string(b), "started") == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("daemon log: %q, want %d lines", b, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitStarted(1)
	// A second start replaces the first.
	pid2, err := c.Start(ctx, key, args, []string{"PATH=/usr/bin:/bin"}, log)
	if err != nil || pid2 == pid {
		t.Fatalf("second start: pid %d (first %d), %v", pid2, pid, err)
	}
	if Running(pid) {
		t.Errorf("first daemon %d still runs after the second start", pid)
	}
	waitStarted(2)
	if err := c.Kill(ctx, key); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := c.Running(ctx, key); err != nil || ok {
		t.Errorf("running after kill: %v, %v", ok, err)
	}
}

func TestDaemonKey(t *testing.T) {
	for args, want := range map[string]string{
		"/usr/bin/dockerd --host unix:///run/docker.sock": "dockerd --host",
		"/var/lib/underlay/lab/x/underlay agent --node a": "underlay agent",
		"consul": "",
	} {
		if got := DaemonKey(strings.Fields(args)); got != want {
			t.Errorf("DaemonKey(%q) = %q, want %q", args, got, want)
		}
	}
}

func TestConfigRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c := Config{Host: "lab-node1", Bond: "bond0", BondMode: "active-backup", Members: []string{"eth0", "eth1"}, Miimon: 100}
	if err := WriteConfig(dir, c, "tok"); err != nil {
		t.Fatal(err)
	}
	got, tok, err := ReadConfig(dir)
	if err != nil || tok != "tok" || got.Host != c.Host || len(got.Members) != 2 {
		t.Errorf("ReadConfig = %+v, %q, %v", got, tok, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, TokenFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", st.Mode().Perm())
	}
}

// TestOverlongRequest: a request line over maxRequest, before any token
// was checked, is refused at that size. Before, the server read it whole
// into memory, however long, waiting for its newline: anyone reaching a
// node's management address could exhaust the VM's memory without the
// token.
func TestOverlongRequest(t *testing.T) {
	c := startServer(t)
	conn, err := net.Dial("tcp", c.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		// Ends when the server closes the connection.
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for sent := 0; sent <= 2*maxRequest; sent += len(chunk) {
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	res, err := readFrames(conn, nil, nil)
	if err != nil || !strings.Contains(res.Error, "bad request") || !strings.Contains(res.Error, "longer than") {
		t.Errorf("answer to a request line of over %d bytes: %+v, %v; want it refused as too long", 2*maxRequest, res, err)
	}
}

// TestSilentConnectionClosed: a connection that sends no request line
// is closed after RequestTimeout. Before, it was held open for good, a
// goroutine and a descriptor each: enough of them from anyone reaching
// the node left the lab's own requests unanswered.
func TestSilentConnectionClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Token: "secret", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), RequestTimeout: 200 * time.Millisecond}
	done := make(chan struct{})
	go func() { s.Serve(ctx, ln); close(done) }()
	defer func() { cancel(); <-done }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read on a connection that sent nothing: %v, want the server to close it (EOF)", err)
	}
}
