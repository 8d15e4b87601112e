package scalebench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times; it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcSample is one reading of a process's resources.
type ProcSample struct {
	At  time.Time
	CPU time.Duration // user + system time since the process started
	RSS int64         // resident set size, bytes
}

// ReadProc reads pid's CPU time and resident memory from /proc.
func ReadProc(pid int) (ProcSample, error) {
	at := time.Now()
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return ProcSample{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	cpu, err := ParseStatCPU(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return ProcSample{}, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	return ProcSample{At: at, CPU: cpu, RSS: ParseStatusKiB(status, "VmRSS:") * 1024}, nil
}

// ParseStatCPU returns utime+stime of a /proc/PID/stat line. The command
// name, in parentheses, may hold spaces and parentheses: fields are
// counted from the last ')'.
func ParseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat %q: no command name", stat)
	}
	// After ')': state(3) ppid(4) … utime(14) stime(15), so utime is the
	// 12th field after the name.
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("stat %q: %d fields after the name, want at least 13", stat, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat %q: CPU time %q: %w", stat, s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// ParseStatusKiB returns the number on the /proc/PID/status line starting
// with key (VmRSS: and the like are in KiB); 0 when there is none.
func ParseStatusKiB(status []byte, key string) int64 {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// CPUShare is the CPU a process used between two samples, as a fraction
// of one core (1.5: one and a half cores busy on average).
func CPUShare(from, to ProcSample) float64 {
	wall := to.At.Sub(from.At)
	if wall <= 0 {
		return 0
	}
	return float64(to.CPU-from.CPU) / float64(wall)
}

// ChildOf returns the first process whose parent is ppid, 0 when none:
// the lab runs each daemon under an nsenter whose pid it records, and the
// daemon is that nsenter's only child.
func ChildOf(ppid int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err == nil && ParseStatusKiB(b, "PPid:") == int64(ppid) {
			return pid
		}
	}
	return 0
}

// MemAvailable is the machine's MemAvailable (/proc/meminfo), in bytes:
// what can still be given to processes without swapping.
func MemAvailable() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("read meminfo: %w", err)
	}
	kib := ParseStatusKiB(b, "MemAvailable:")
	if kib == 0 {
		return 0, fmt.Errorf("no MemAvailable in /proc/meminfo")
	}
	return kib * 1024, nil
}
