package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Down removes everything the lab name made — processes, mounts, links,
// firewall rules and its state directory — found by name, so it works after
// a crash and on a half-made lab. It succeeds when there is nothing to remove.
func (l Labs) Down(ctx context.Context, name string, log *slog.Logger) error {
	if err := validName(name); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("lab: must run as root")
	}
	log = log.With("component", "lab", "lab", name)
	start := time.Now()
	dir := labDir(l.root(), name)
	var errs []error
	cgroups := containerCgroups(containerIDs(dir))
	// Killing a holder kills its whole PID namespace: the node's daemons
	// and containers. Then the lab's other processes (ownProc).
	holders := processes(func(args []string) bool { return args[0] == holderName && ownProc(dir)(args) })
	killAll(holders, 10*time.Second)
	log.Debug("holders killed", "took", time.Since(start))
	if left := killAll(labProcs(dir), 10*time.Second); len(left) > 0 {
		errs = append(errs, fmt.Errorf("process %d (%s) does not die", left[0].pid, strings.Join(left[0].args, " ")))
	}
	log.Debug("processes killed", "took", time.Since(start))
	if err := removeCgroups(cgroups); err != nil {
		errs = append(errs, err)
	}
	for _, m := range mountsUnder(dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	log.Debug("cgroups and mounts removed", "took", time.Since(start))
	if others := otherRoots(l.root(), name); len(others) > 0 {
		// Its links and rules are those of the same-named lab there too.
		errs = append(errs, fmt.Errorf("lab %s also runs from state root %s: the links and firewall rules of the name are left to it", name, strings.Join(others, ", ")))
	} else {
		if err := deleteLinks(name); err != nil {
			errs = append(errs, err)
		}
		if err := deleteFirewall(name); err != nil {
			errs = append(errs, err)
		}
	}
	log.Debug("links and rules removed", "took", time.Since(start))
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab %s down: %w", name, err)
	}
	if left := l.Leftovers(name); len(left) > 0 {
		return fmt.Errorf("lab %s down: left behind: %s", name, strings.Join(left, "; "))
	}
	log.Info("lab down", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// labProcs lists the processes of the lab in dir that Down kills: only
// those it started (ownProc), never one that merely names the directory.
func labProcs(dir string) []proc {
	return append(pidFileProcs(dir), processes(ownProc(dir))...)
}

// pidFileProcs returns the processes recorded in the lab's pid files that
// still run and are still the lab's (ownProc): a pid may have been reused,
// and a VM node's pid files are the guest's to write.
func pidFileProcs(dir string) []proc {
	// docker.pid is not among them: it holds a pid of the node's PID namespace.
	files, _ := filepath.Glob(filepath.Join(dir, "node*", "*.pid"))
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "docker.pid" })
	var out []proc
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cl) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
		if ownProc(dir)(args) {
			out = append(out, proc{pid: pid, args: args})
		}
	}
	return out
}

// Leftovers lists, by kind, anything of lab name that exists: processes,
// links, firewall rules, mounts and the state directory. After Down it is empty.
func (l Labs) Leftovers(name string) []string {
	dir := labDir(l.root(), name)
	var out []string
	for _, p := range processes(ownProc(dir)) {
		out = append(out, fmt.Sprintf("process %d: %s", p.pid, strings.Join(p.args, " ")))
	}
	if links, err := labLinks(name); err != nil {
		out = append(out, err.Error())
	} else {
		for _, l := range links {
			out = append(out, fmt.Sprintf("link %s (%s)", l.Attrs().Name, l.Type()))
		}
	}
	for tool, rules := range labRules(name) {
		for _, r := range rules {
			out = append(out, fmt.Sprintf("%s rule: %s", tool, strings.Join(r, " ")))
		}
	}
	for _, m := range mountsUnder(dir) {
		out = append(out, "mount "+m)
	}
	if _, err := os.Stat(dir); err == nil {
		out = append(out, "directory "+dir)
	}
	return out
}

// mountsUnder lists the root mount namespace's mount points under dir,
// deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/1/mountinfo")
	if err != nil {
		if f, err = os.Open("/proc/self/mountinfo"); err != nil {
			return nil
		}
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
