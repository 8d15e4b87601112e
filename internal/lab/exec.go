package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/underlay/underlay/internal/termtext"
)

// KillDockerd kills a node's dockerd with SIGKILL, as a crash would; Up
// restarts it.
func (l Labs) KillDockerd(name, node string) error {
	p, n, err := l.findNode(name, node)
	if err != nil {
		return err
	}
	return p.prov.Kill(context.Background(), p, n, p.dockerd(n).key)
}

// NodeEnv is how to work on one node from the root namespace.
type NodeEnv struct {
	// DockerHost and ConsulHTTPAddr reach the node from the root namespace.
	DockerHost     string
	ConsulHTTPAddr string
	// Nsenter is the command prefix that runs a command inside the node
	// (nsenter into a namespace node; underlay's guest client for a VM),
	// followed by "--" and the command.
	Nsenter []string
}

// Env returns how to reach node of lab name.
func (l Labs) Env(name, node string) (*NodeEnv, error) {
	p, n, err := l.findNode(name, node)
	if err != nil {
		return nil, err
	}
	cmd, err := p.prov.Command(context.Background(), p, n, []string{"CMD"})
	if err != nil {
		return nil, err
	}
	prefix := cmd.Args[:len(cmd.Args)-2] // without "--" and CMD
	return &NodeEnv{DockerHost: p.dockerHost(n), ConsulHTTPAddr: p.consulAddr(n), Nsenter: prefix}, nil
}

// Command returns a command running args inside node of lab name, with
// the node's DOCKER_HOST and CONSUL_HTTP_ADDR (127.0.0.1:8500, as on a
// real host) set. Its exit status is the command's.
func (l Labs) Command(ctx context.Context, name, node string, args ...string) (*exec.Cmd, error) {
	if len(args) == 0 {
		return nil, errors.New("no command to run")
	}
	p, n, err := l.findNode(name, node)
	if err != nil {
		return nil, err
	}
	return p.prov.Command(ctx, p, n, args)
}

// LogComponents are the logs LogPath knows, beyond those of VM nodes.
var LogComponents = []string{"agent", "control", "dockerd", "consul", "holder"}

// LogPath returns the log file of a node's component: agent, control (on
// managers), dockerd, consul, holder (namespace nodes) or console (VM
// nodes: the kernel's and init's output).
func (l Labs) LogPath(name, node, component string) (string, error) {
	p, err := l.loadPlan(name)
	if err != nil {
		return "", err
	}
	n, err := p.node(node)
	if err != nil {
		return "", err
	}
	switch {
	case component == "agent" || component == "control" || component == "dockerd" || component == "consul":
		return p.logPath(n, component), nil
	case component == "holder" && p.prov.Kind() == KindNetns, component == "console" && p.prov.Kind() == KindVM:
		return p.nodeDir(n) + "/" + component + ".log", nil
	}
	return "", fmt.Errorf("log %q: want agent, control, dockerd, consul, or holder (namespace nodes) or console (VM nodes)", component)
}

// OpenLog opens the log file of a node's component (LogPath) to read:
// only a regular file in the node's directory, never through a symbolic
// link, for a VM node's directory is the guest's to write (as
// guest.ReadNodeFile reads it).
func (l Labs) OpenLog(name, node, component string) (*os.File, error) {
	path, err := l.LogPath(name, node, component)
	if err != nil {
		return nil, err
	}
	return openNodeLog(path)
}

// openNodeLog opens path, a log in a node's directory, to read: only a
// regular file, never through a symbolic link.
func openNodeLog(path string) (*os.File, error) {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("open log directory: %w", err)
	}
	defer root.Close()
	// O_NONBLOCK: a FIFO put there opens without a writer, then is refused.
	f, err := root.OpenFile(filepath.Base(path), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open log %s: not a regular file", path)
	}
	return f, nil
}

// logTailBytes bounds how much of a log a failure quotes.
const logTailBytes = 2048

// withLog names the log of a daemon that did not come up, with its last
// lines: a lab that fails while it is being made is removed, its logs
// with it, so the error is the only place left to read why.
func withLog(path string) string {
	tail, err := logTail(path, logTailBytes)
	switch {
	case err != nil:
		return fmt.Sprintf("(log: %s; not read: %v)", path, err)
	case tail == "":
		return fmt.Sprintf("(log: %s, empty)", path)
	}
	return fmt.Sprintf("(log: %s; it ended:\n%s)", path, tail)
}

// logTail returns the whole lines among the last limit bytes of the log at
// path (openNodeLog), escaped for a terminal (termtext.Lines): a VM
// guest writes its logs, and may write anything.
func logTail(path string, limit int64) (string, error) {
	f, err := openNodeLog(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read log: %w", err)
	}
	from := max(fi.Size()-limit, 0)
	b := make([]byte, fi.Size()-from)
	n, err := f.ReadAt(b, from)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read log: %w", err)
	}
	b = b[:n]
	if from > 0 {
		// Cut into a line: keep from the next one on.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return termtext.Lines(strings.TrimRight(string(b), "\n")), nil
}

func (l Labs) findNode(name, node string) (*plan, *nodePlan, error) {
	p, err := l.loadPlan(name)
	if err != nil {
		return nil, nil, err
	}
	n, err := p.node(node)
	if err != nil {
		return nil, nil, err
	}
	return p, n, nil
}

// NsenterPrefix formats Nsenter for a shell.
func (e *NodeEnv) NsenterPrefix() string { return strings.Join(e.Nsenter, " ") }
