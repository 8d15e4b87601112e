// Package activation takes over the listening sockets systemd passes to a
// socket-activated service (sd_listen_fds(3)): LISTEN_PID names this
// process, LISTEN_FDS counts the descriptors from 3 on, LISTEN_FDNAMES
// names them.
//
// The agent uses it for underlay-ipam.socket: systemd holds the IPAM
// plugin's socket from early boot, before dockerd starts, so dockerd finds
// the plugin while it restores containers and while the agent restarts.
//
// It imports only the standard library; its one I/O edge is the process's
// inherited file descriptors and environment.
package activation

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// firstFD is SD_LISTEN_FDS_START.
const firstFD = 3

// Passed is what systemd passed: count descriptors from firstFD on, with
// their names (FileDescriptorName=; nil when LISTEN_FDNAMES is unset).
type Passed struct {
	Count int
	Names []string
}

// Parse reads the LISTEN_* variables through lookup (os.LookupEnv) for
// process pid, as sd_listen_fds_with_names(3) does (systemd's
// src/libsystemd/sd-daemon/sd-daemon.c): no LISTEN_PID, one naming another
// process (the variables were inherited), or no LISTEN_FDS means nothing
// was passed; a LISTEN_PID that is no process ID (a positive number), a
// LISTEN_FDS that is no count of 1 or more, and a LISTEN_FDNAMES naming
// another number of descriptors than LISTEN_FDS counts are errors.
func Parse(pid int, lookup func(string) (string, bool)) (Passed, error) {
	p, ok := lookup("LISTEN_PID")
	if !ok {
		return Passed{}, nil
	}
	forPID, err := strconv.Atoi(p)
	if err != nil || forPID <= 0 {
		return Passed{}, fmt.Errorf("LISTEN_PID=%q: not a process id", p)
	}
	if forPID != pid {
		return Passed{}, nil
	}
	fds, ok := lookup("LISTEN_FDS")
	if !ok {
		return Passed{}, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n <= 0 || n > math.MaxInt32-firstFD {
		return Passed{}, fmt.Errorf("LISTEN_FDS=%q: not a count of descriptors (1 or more)", fds)
	}
	s, ok := lookup("LISTEN_FDNAMES")
	if !ok {
		return Passed{Count: n}, nil
	}
	// Split as systemd does (strv_split_full, separators not coalesced):
	// an empty value names no descriptor.
	var names []string
	if s != "" {
		names = strings.Split(s, ":")
	}
	if len(names) != n {
		return Passed{}, fmt.Errorf("LISTEN_FDNAMES=%q names %d descriptors, LISTEN_FDS=%d counts %d", s, len(names), n, n)
	}
	return Passed{Count: n, Names: names}, nil
}

// Take returns the listener systemd passed this process for the Unix
// socket at path, or nil when it passed none for it (not socket-activated:
// the caller listens itself). Descriptors passed for other sockets are
// closed. It takes none, and closes none, when one of the descriptors
// LISTEN_FDS counts is not a socket (see take). It unsets the LISTEN_*
// variables, so that child processes do not take them for theirs, also
// when they cannot be read (as sd_listen_fds(3) does).
func Take(path string) (net.Listener, error) {
	passed, err := Parse(os.Getpid(), os.LookupEnv)
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if err != nil {
		return nil, err
	}
	return take(firstFD, passed, path)
}

// take takes passed's descriptors, numbered from first on. A count larger
// than what systemd passed (a stale environment, a wrong unit) would make
// the process's own files systemd's, closed once taken: it takes none
// unless every one is a socket.
func take(first int, passed Passed, path string) (net.Listener, error) {
	for fd := first; fd < first+passed.Count; fd++ {
		if err := checkSocket(fd); err != nil {
			return nil, fmt.Errorf("LISTEN_FDS=%d, but descriptor %d %w: not what systemd passed, none of the %d taken or closed", passed.Count, fd, err, passed.Count)
		}
	}
	var found net.Listener
	var errs []error
	for i := range passed.Count {
		fd := first + i
		syscall.CloseOnExec(fd)
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i < len(passed.Names) {
			name = passed.Names[i]
		}
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f) // dups fd
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("descriptor %d (%s) from systemd: %w", fd, name, err))
			continue
		}
		if found == nil && ln.Addr().Network() == "unix" && ln.Addr().String() == path {
			found = ln
			continue
		}
		ln.Close()
	}
	if found == nil && passed.Count > 0 {
		errs = append(errs, fmt.Errorf("systemd passed %d descriptors, none a Unix socket listening on %s", passed.Count, path))
	}
	return found, errors.Join(errs...)
}

// checkSocket says whether descriptor fd is an open socket.
func checkSocket(fd int) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fmt.Errorf("is not open (%w)", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return fmt.Errorf("is not a socket (mode %#o)", st.Mode&syscall.S_IFMT)
	}
	return nil
}
