package activation

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    Passed
		wantErr string
	}{
		{name: "not activated", env: map[string]string{}},
		{name: "for another process", env: map[string]string{"LISTEN_PID": "99", "LISTEN_FDS": "1"}},
		{name: "one", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "1"}, want: Passed{Count: 1}},
		{name: "named", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "ipam:other"},
			want: Passed{Count: 2, Names: []string{"ipam", "other"}}},
		{name: "bad pid", env: map[string]string{"LISTEN_PID": "x42", "LISTEN_FDS": "1"}, wantErr: `LISTEN_PID="x42"`},
		{name: "bad count", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "-1"}, wantErr: `LISTEN_FDS="-1"`},
		// As sd_listen_fds: LISTEN_PID ours but no LISTEN_FDS is nothing
		// passed, LISTEN_FDS=0 (or empty) an error, so is a LISTEN_PID
		// that is no process ID even if not ours.
		{name: "no count", env: map[string]string{"LISTEN_PID": "42"}},
		{name: "zero count", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "0"}, wantErr: `LISTEN_FDS="0"`},
		{name: "empty count", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": ""}, wantErr: `LISTEN_FDS=""`},
		{name: "count too large", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "2147483645"}, wantErr: `LISTEN_FDS="2147483645"`},
		{name: "pid 0", env: map[string]string{"LISTEN_PID": "0", "LISTEN_FDS": "1"}, wantErr: `LISTEN_PID="0"`},
		{name: "empty pid", env: map[string]string{"LISTEN_PID": "", "LISTEN_FDS": "1"}, wantErr: `LISTEN_PID=""`},
		{name: "negative pid", env: map[string]string{"LISTEN_PID": "-42", "LISTEN_FDS": "1"}, wantErr: `LISTEN_PID="-42"`},
		// As sd_listen_fds_with_names: LISTEN_FDNAMES names exactly the
		// descriptors LISTEN_FDS counts, separators not coalesced.
		{name: "fewer names", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "ipam"}, wantErr: `names 1 descriptors, LISTEN_FDS=2`},
		{name: "more names", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "ipam:other"}, wantErr: `names 2 descriptors, LISTEN_FDS=1`},
		{name: "empty names", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": ""}, wantErr: `names 0 descriptors, LISTEN_FDS=1`},
		{name: "an empty name", env: map[string]string{"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "ipam:"},
			want: Passed{Count: 2, Names: []string{"ipam", ""}}},
		{name: "names of another process", env: map[string]string{"LISTEN_PID": "99", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(42, func(k string) (string, bool) {
				v, ok := tc.env[k]
				return v, ok
			})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse = %+v, %v; want an error naming %s", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.Count != tc.want.Count || !slices.Equal(got.Names, tc.want.Names) {
				t.Fatalf("Parse = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestTake runs this test binary as a socket-activated child, as systemd
// would: the listening socket as descriptor 3, LISTEN_FDS=1. The child
// takes it over and answers a connection made before it even started,
// waiting in the backlog as dockerd's would.
func TestTake(t *testing.T) {
	if os.Getenv("ACTIVATION_CHILD") != "" {
		child()
		return
	}
	path := filepath.Join(t.TempDir(), "underlay.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	f, err := ln.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	// Connected before the service runs: waits in the backlog.
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestTake$")
	cmd.Env = append(os.Environ(), "ACTIVATION_CHILD="+path, "LISTEN_FDS=1", "LISTEN_FDNAMES=ipam")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer cmd.Wait()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "served on "+path+" with no LISTEN_* left\n" {
		t.Fatalf("child answered %q, %v", line, err)
	}
}

// child is the socket-activated side of TestTake. systemd sets LISTEN_PID
// to the pid it forks; this process can only do it itself.
func child() {
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	path := os.Getenv("ACTIVATION_CHILD")
	ln, err := Take(path)
	if err != nil || ln == nil {
		fmt.Fprintf(os.Stderr, "Take(%s) = %v, %v\n", path, ln, err)
		os.Exit(1)
	}
	c, err := ln.Accept()
	if err != nil {
		os.Exit(1)
	}
	left := "no LISTEN_* left"
	if os.Getenv("LISTEN_FDS") != "" || os.Getenv("LISTEN_PID") != "" {
		left = "LISTEN_* left"
	}
	fmt.Fprintf(c, "served on %s with %s\n", ln.Addr(), left)
	c.Close()
	os.Exit(0)
}

// TestTakeNone: not socket-activated, Take gives no listener and no error.
func TestTakeNone(t *testing.T) {
	t.Setenv("LISTEN_PID", "") // restored after the test
	os.Unsetenv("LISTEN_PID")
	ln, err := Take("/run/docker/plugins/underlay.sock")
	if ln != nil || err != nil {
		t.Fatalf("Take = %v, %v; want nothing", ln, err)
	}
}

// TestTakeMoreThanPassed: LISTEN_FDS counts more descriptors than systemd
// passed (a stale environment, a wrong unit), so the one after its socket
// is the process's own file. Take refuses, naming the count and that
// descriptor, and closes nothing: the file stays open.
func TestTakeMoreThanPassed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "underlay.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	own, err := os.Create(filepath.Join(t.TempDir(), "own"))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	first := freeFDs(t, 2)
	for i, f := range []*os.File{lf, own} {
		if err := syscall.Dup3(int(f.Fd()), first+i, syscall.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(first + i)
	}

	got, err := take(first, Passed{Count: 2}, path)
	if got != nil {
		got.Close()
	}
	want := fmt.Sprintf("LISTEN_FDS=2, but descriptor %d", first+1)
	if got != nil || err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("take = %v, %v; want no listener and an error naming %q", got, err, want)
	}
	for fd := first; fd < first+2; fd++ {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			t.Errorf("descriptor %d closed by take: %v", fd, err)
		}
	}
}

// freeFDs finds n consecutive descriptor numbers not open in this process.
func freeFDs(t *testing.T, n int) int {
	t.Helper()
	for first := 100; first < 1000; first += n {
		free := true
		for fd := first; fd < first+n; fd++ {
			var st syscall.Stat_t
			if syscall.Fstat(fd, &st) == nil {
				free = false
			}
		}
		if free {
			return first
		}
	}
	t.Fatal("no free descriptors from 100 to 1000")
	return 0
}

// TestTakeUnsetsOnError: LISTEN_* that cannot be read are unset all the
// same, as sd_listen_fds(3) does with unset_environment "regardless of
// whether the function call itself succeeded or not": a child process
// (a hook, a helper the agent runs) must not read them as its own.
// Before, Take returned the error with the variables still set.
func TestTakeUnsetsOnError(t *testing.T) {
	for _, env := range [][3]string{
		{"x", "1", "a"},
		{strconv.Itoa(os.Getpid()), "two", "a"},
	} {
		t.Setenv("LISTEN_PID", env[0])
		t.Setenv("LISTEN_FDS", env[1])
		t.Setenv("LISTEN_FDNAMES", env[2])
		ln, err := Take("/run/docker/plugins/underlay.sock")
		if ln != nil || err == nil {
			t.Errorf("LISTEN_PID=%s LISTEN_FDS=%s: Take = %v, %v; want an error", env[0], env[1], ln, err)
		}
		for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			if s, set := os.LookupEnv(v); set {
				t.Errorf("LISTEN_PID=%s LISTEN_FDS=%s: after Take, %s=%q is still set", env[0], env[1], v, s)
			}
		}
	}
}
