package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/underlay/underlay/internal/lab/guest"
	"github.com/underlay/underlay/internal/lab/vm"
)

// holderName is argv[0] of every node's namespace holder; its last argument
// is the node's state directory.
const holderName = "underlay-lab-holder"

// setupName is $0 of the script that makes a holder's namespaces; the
// state directory follows it.
const setupName = "underlay-lab-setup"

// ownProc reports whether a command line is one the lab in dir starts in
// the root PID namespace, by its shape and the exact paths the lab gives
// it: a namespace holder (or the unshare and script making it) of a
// directory of the lab's, the nsenter under which a node's daemon runs
// (--wd=its node's directory), a VM node's QEMU (its pid file) and the
// VLAN port (its state directory). Naming the directory is not enough: a
// user's `tail -f` of a node's log is not the lab's to kill.
func ownProc(dir string) func(args []string) bool {
	dir = filepath.Clean(dir)
	// A node's directory, or the VM lab's net: directly under dir.
	sub := func(p string) bool { return filepath.IsAbs(p) && filepath.Dir(filepath.Clean(p)) == dir }
	return func(args []string) bool {
		if len(args) == 0 {
			return false
		}
		if args[0] == holderName {
			return len(args) == 4 && args[1] == "-c" && sub(args[3])
		}
		cmd := args
		switch filepath.Base(args[0]) {
		case "unshare", "bash":
			i := slices.Index(args, setupName)
			return i >= 2 && args[i-2] == "-c" && i+1 < len(args) && sub(args[i+1])
		case "nsenter":
			i := slices.Index(args, "--")
			if i < 0 {
				return false
			}
			for _, a := range args[1:i] {
				if wd, ok := strings.CutPrefix(a, "--wd="); ok && sub(wd) {
					return true
				}
			}
			// nsenter --net execs QEMU or the VLAN port: the same process.
			cmd = args[i+1:]
		}
		if len(cmd) > 0 && filepath.Base(cmd[0]) == vm.QEMU {
			node := filepath.Dir(flagValue(cmd, "-pidfile"))
			return sub(node) && qemuProc(node)(cmd)
		}
		return vlanPortProc(filepath.Join(dir, "net"))(cmd)
	}
}

// qemuProc matches the QEMU of the VM node in nodeDir, by its pid file
// there (vm.Spec.PIDFile), as the lab starts it (under nsenter --net,
// which execs it). Another QEMU naming the directory — a user's on the
// node's disk image — is not the node's: EnsureNode kills the one it finds.
func qemuProc(nodeDir string) func(args []string) bool {
	pidFile := filepath.Join(filepath.Clean(nodeDir), "qemu.pid")
	return func(args []string) bool {
		cmd := execd(args)
		return len(cmd) > 0 && filepath.Base(cmd[0]) == vm.QEMU && flagValue(cmd, "-pidfile") == pidFile
	}
}

// vlanPortProc matches the VLAN access port of the VM lab whose network
// state directory is netDir: `underlay lab vm-vlan-port … --state-dir
// netDir` (ensureVLANPort), under nsenter --net or as it execs. A `grep
// vm-vlan-port` of its log is not it: taken for it, the port is never started.
func vlanPortProc(netDir string) func(args []string) bool {
	netDir = filepath.Clean(netDir)
	return func(args []string) bool {
		cmd := execd(args)
		return len(cmd) > 2 && cmd[1] == "lab" && cmd[2] == vlanPortKey && flagValue(cmd, "--state-dir") == netDir
	}
}

// execd is the command an `nsenter … -- CMD…` command line runs (nsenter
// without --pid execs it, with the same process), args itself when it is
// not nsenter's, nil when nsenter names no command.
func execd(args []string) []string {
	if len(args) == 0 || filepath.Base(args[0]) != "nsenter" {
		return args
	}
	if i := slices.Index(args, "--"); i >= 0 {
		return args[i+1:]
	}
	return nil
}

// flagValue is the argument after the first flag in args, or "".
func flagValue(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// proc is one process and its command line.
type proc struct {
	pid  int
	args []string
}

// processes lists every process whose command line match accepts (and
// whose pid every keep accepts), but this process and its ancestors (a
// shell whose command line happens to name the lab must not be killed by
// the lab's Down). Zombies (empty command lines) are never listed.
func processes(match func(args []string) bool, keep ...func(pid int) bool) []proc {
	entries, _ := os.ReadDir("/proc")
	self := ancestors()
	var out []proc
next:
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || self[pid] {
			continue
		}
		for _, k := range keep {
			if !k(pid) {
				continue next
			}
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		if match(args) {
			out = append(out, proc{pid: pid, args: args})
		}
	}
	return out
}

// ancestors returns this process and its ancestors.
func ancestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !out[pid]; {
		out[pid] = true
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		// The parent's pid is the second field after the command name.
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if i < 0 || len(f) < 2 {
			break
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			break
		}
	}
	return out
}

// holderPID returns the pid of a node's namespace holder (PID 1 of the
// node's PID namespace, seen from the root), or 0.
func holderPID(nodeDir string) int {
	ps := processes(func(args []string) bool {
		return args[0] == holderName && args[len(args)-1] == nodeDir
	})
	for _, p := range ps {
		if isHolder(p.pid) {
			return p.pid
		}
	}
	return 0
}

// HolderNetNS names the network namespace ("net:[N]") of the holder of
// the lab state directory dir (a node's, or a VM lab's network): the
// namespace a helper the lab starts there must find itself in.
func HolderNetNS(dir string) (string, error) {
	// The caller runs in the holder's network namespace (that is what it
	// asks): only the PID namespace must be another.
	pid := 0
	for _, p := range processes(func(args []string) bool {
		return args[0] == holderName && args[len(args)-1] == dir
	}) {
		if holderIn(p.pid, "pid") {
			pid = p.pid
			break
		}
	}
	if pid == 0 {
		return "", fmt.Errorf("no namespace holder of %s runs", dir)
	}
	ns := nsOf(pid, "net")
	if ns == "" {
		return "", fmt.Errorf("read the network namespace of %s's holder (pid %d)", dir, pid)
	}
	return ns, nil
}

// isHolder reports whether pid, named like a holder, can be one: root's,
// in PID and network namespaces other than this process's. Any user can
// name a process so; taken for a holder, one in our namespaces would make
// the machine the node: every process its processes (Freeze, Start's
// kills), the machine's eth0 its eth0. A caller that may not read root's
// namespaces (lab status as a user) can neither enter nor signal them:
// for it, the name and owner are enough.
func isHolder(pid int) bool { return holderIn(pid, "pid", "net") }

// holderIn is isHolder for the namespaces of the given kinds.
func holderIn(pid int, kinds ...string) bool {
	for _, kind := range kinds {
		ns, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", kind))
		if errors.Is(err, fs.ErrPermission) {
			continue
		}
		if err != nil || ns == nsOf(os.Getpid(), kind) {
			return false
		}
	}
	return statusField(pid, "Uid:") == 0
}

// nsOf names the namespace of the given kind ("pid", "net") of pid; ""
// when it is gone.
func nsOf(pid int, kind string) string {
	ns, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", kind))
	return ns
}

// daemonWrappers lists the nsenter processes that run a node's daemon of
// the given key. nsenter stays the daemon's parent (it forks to enter the
// PID namespace), so it lives exactly as long as the daemon.
func daemonWrappers(nodeDir, key string) []proc {
	return processes(func(args []string) bool { return isWrapper(args, nodeDir, key) })
}

// killAll sends SIGKILL to every process in ps and waits until they are
// gone (or timeout passes), returning those still alive.
func killAll(ps []proc, timeout time.Duration) []proc {
	pids := make([]int, len(ps))
	for i, p := range ps {
		pids[i] = p.pid
	}
	left := guest.KillAndWait(pids, timeout)
	return slices.DeleteFunc(ps, func(p proc) bool { return !slices.Contains(left, p.pid) })
}

// otherRoots lists the state roots other than root whose lab named name
// runs: the lab a holder serves is the parent of its directory (a node's,
// or a VM lab's net), and that lab's parent is its root. Labs of one name
// share link names and firewall rules, whatever their roots.
func otherRoots(root, name string) []string {
	var dirs []string
	for _, p := range processes(func(args []string) bool { return args[0] == holderName && len(args) > 1 }) {
		if statusField(p.pid, "Uid:") == 0 {
			dirs = append(dirs, p.args[len(p.args)-1])
		}
	}
	return rootsOf(dirs, root, name)
}

// rootsOf is otherRoots for the holders' directories dirs.
func rootsOf(dirs []string, root, name string) []string {
	var out []string
	for _, d := range dirs {
		d = filepath.Clean(d)
		lab := filepath.Dir(d)
		if filepath.Base(lab) != name || !filepath.IsAbs(d) {
			continue
		}
		if r := filepath.Dir(lab); r != filepath.Clean(root) && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// killIfStill kills pid, found a while ago, only if find still finds it:
// the process may have ended during the wait and its PID gone to another.
func killIfStill(pid int, find func() int, timeout time.Duration) {
	if find() == pid {
		killAll([]proc{{pid: pid}}, timeout)
	}
}

// startDetached starts cmd in its own session with its output appended to
// logPath, and reaps it in the background; it outlives a CLI that exits.
func startDetached(cmd *exec.Cmd, logPath string) error {
	// Not through a symbolic link: a VM node's directory is the guest's to write.
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	go cmd.Wait()
	return nil
}

// nsenterArgs enters every namespace of the node held by pid.
func nsenterArgs(pid int) []string {
	return []string{"nsenter", "--target", strconv.Itoa(pid), "--net", "--mount", "--uts", "--pid"}
}
