package guest

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// daemonMarker is the environment variable that marks a daemon's process
// with its key, so the server finds its daemons by scanning /proc, even
// after it was restarted.
const daemonMarker = "UNDERLAY_LAB_DAEMON"

// Server is a node's control server.
type Server struct {
	Token string
	Log   *slog.Logger
	// RequestTimeout bounds the wait for a connection's request line; 0
	// means DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// DefaultRequestTimeout bounds the wait for a connection's request line.
const DefaultRequestTimeout = 30 * time.Second

// maxRequest bounds a request line: a command's arguments and whole
// environment, which Linux bounds at 2 MiB by default.
const maxRequest = 4 << 20

// errLongRequest: a request line over maxRequest.
var errLongRequest = fmt.Errorf("request line longer than %d bytes", maxRequest)

// readRequest reads the request line, at most maxRequest bytes of it: it
// comes before the token is checked, from anyone reaching the node.
func readRequest(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > maxRequest {
			return nil, errLongRequest
		}
		line = append(line, frag...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
	}
}

// Serve answers connections on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			s.handle(ctx, conn)
		}()
	}
}

func (s *Server) handle(ctx context.Context, conn net.Conn) {
	br := bufio.NewReader(conn)
	var mu sync.Mutex
	// Held open without a request, a connection would keep its goroutine
	// and descriptor for good; the lab's requests come at once.
	timeout := cmp.Or(s.RequestTimeout, DefaultRequestTimeout)
	conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := readRequest(br)
	conn.SetReadDeadline(time.Time{}) // an exec's stdin may take its time
	if errors.Is(err, errLongRequest) {
		writeResult(conn, &mu, Result{ExitCode: -1, Error: "bad request: " + err.Error()})
		// Closed with the rest of the line unread, the connection would be
		// reset, and the answer maybe lost with it: the client is told
		// first, and a little more of the line is read meanwhile.
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		io.CopyN(io.Discard, conn, maxRequest)
		return
	}
	if err != nil {
		return
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		writeResult(conn, &mu, Result{ExitCode: -1, Error: "bad request: " + err.Error()})
		return
	}
	if subtle.ConstantTimeCompare([]byte(req.Token), []byte(s.Token)) != 1 {
		s.Log.Warn("request with a bad token", "remote", conn.RemoteAddr().String())
		writeResult(conn, &mu, Result{ExitCode: -1, Error: "bad token"})
		return
	}
	var res Result
	switch req.Op {
	case OpPing:
	case OpExec:
		res = s.exec(ctx, conn, br, &mu, req)
	case OpStart:
		res = s.start(req)
	case OpRunning:
		if ps := daemons(req.Key); len(ps) > 0 {
			res.Running, res.PID = true, ps[0]
		}
	case OpKill:
		if left := killDaemons(req.Key, 10*time.Second); len(left) > 0 {
			res.Error = fmt.Sprintf("daemon %q (pid %d) does not die", req.Key, left[0])
		}
	default:
		res.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	writeResult(conn, &mu, res)
}

// exec runs a command with its output framed onto conn. Without stdin, a
// client that goes away kills the command.
func (s *Server) exec(ctx context.Context, conn net.Conn, br *bufio.Reader, mu *sync.Mutex, req Request) Result {
	if len(req.Args) == 0 {
		return Result{ExitCode: -1, Error: "no command"}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, req.Args[0], req.Args[1:]...)
	cmd.Env, cmd.Dir = req.Env, req.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdout = frameWriter{mu: mu, w: conn, kind: frameStdout}
	cmd.Stderr = frameWriter{mu: mu, w: conn, kind: frameStderr}
	if req.Stdin {
		cmd.Stdin = br
	} else {
		go func() {
			io.Copy(io.Discard, br) // returns when the client closes
			cancel()
		}()
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return Result{}
	case errors.As(err, &ee):
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return Result{ExitCode: code}
	default:
		return Result{ExitCode: 127, Error: err.Error()}
	}
}

// start starts a daemon detached, in its own session, with its output
// appended to req.Log, after killing any daemon of the same key.
func (s *Server) start(req Request) Result {
	if len(req.Args) == 0 || req.Key == "" {
		return Result{Error: "start needs a key and a command"}
	}
	if left := killDaemons(req.Key, 10*time.Second); len(left) > 0 {
		return Result{Error: fmt.Sprintf("old %s (pid %d) does not die", req.Key, left[0])}
	}
	logf, err := os.OpenFile(req.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return Result{Error: fmt.Sprintf("log of %s: %v", req.Key, err)}
	}
	defer logf.Close()
	cmd := exec.Command(req.Args[0], req.Args[1:]...)
	cmd.Env = append(append([]string{}, req.Env...), daemonMarker+"="+req.Key)
	cmd.Dir = req.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Result{Error: fmt.Sprintf("start %s: %v", req.Key, err)}
	}
	s.Log.Info("daemon started", "key", req.Key, "pid", cmd.Process.Pid)
	go func() {
		err := cmd.Wait()
		s.Log.Info("daemon exited", "key", req.Key, "pid", cmd.Process.Pid, "err", err)
	}()
	return Result{PID: cmd.Process.Pid, Running: true}
}

// daemons lists the pids of running processes started as daemon key: the
// marker in their environment and key matching their command line (their
// children inherit the marker but not the command line).
func daemons(key string) []int {
	entries, _ := os.ReadDir("/proc")
	want := []byte(daemonMarker + "=" + key + "\x00")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cl) == 0 || !Running(pid) {
			continue
		}
		if DaemonKey(strings.Split(string(bytes.TrimRight(cl, "\x00")), "\x00")) == key {
			out = append(out, pid)
		}
	}
	return out
}

// DaemonKey names a daemon by its program's base name and first argument:
// "dockerd --host", "consul agent", "underlay agent".
func DaemonKey(args []string) string {
	if len(args) < 2 {
		return ""
	}
	return filepath.Base(args[0]) + " " + args[1]
}

// killDaemons kills daemon key's processes and waits up to timeout for
// them to go, returning those left.
func killDaemons(key string, timeout time.Duration) []int {
	return KillAndWait(daemons(key), timeout)
}

// KillAndWait sends SIGKILL to every pid and waits until they are gone (or
// timeout passes), returning those still alive. The lab's host side kills
// its processes with it too.
func KillAndWait(pids []int, timeout time.Duration) []int {
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(timeout)
	for {
		var alive []int
		for _, pid := range pids {
			if Running(pid) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Running reports whether pid is a process that is not a zombie.
func Running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X')
}

// ServeNode runs the control server of the node whose state directory is
// nodeDir, on its management address, until ctx ends.
func ServeNode(ctx context.Context, nodeDir string, log *slog.Logger) error {
	log = log.With("component", "lab_guest")
	c, token, err := ReadConfig(nodeDir)
	if err != nil {
		return err
	}
	if token == "" {
		return errors.New("empty guest token")
	}
	ln, err := net.Listen("tcp", c.Listen())
	if err != nil {
		return fmt.Errorf("control server: %w", err)
	}
	log.Info("control server listening", "addr", c.Listen())
	s := &Server{Token: token, Log: log}
	return s.Serve(ctx, ln)
}

// DaemonEnv is the environment entry that marks a daemon of key: a
// daemon started otherwise (a systemd unit) carries it to be found too.
func DaemonEnv(key string) string { return daemonMarker + "=" + key }
