package scalebench

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		err        string
	}{
		{"plain", "42 (underlay) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0", 3 * time.Second, ""},
		{"name with spaces and parens", "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 0 0", 30 * time.Millisecond, ""},
		{"truncated", "7 (x) R 1 2", 0, "fields after the name"},
		{"no name", "7 x R", 0, "no command name"},
		{"bad number", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 many 2 0", 0, `CPU time "many"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatCPU([]byte(tc.stat))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := "Name:\tunderlay\nPPid:\t17\nVmRSS:\t   20480 kB\n"
	if got := ParseStatusKiB([]byte(status), "VmRSS:"); got != 20480 {
		t.Errorf("VmRSS %d, want 20480", got)
	}
	if got := ParseStatusKiB([]byte(status), "PPid:"); got != 17 {
		t.Errorf("PPid %d, want 17", got)
	}
	if got := ParseStatusKiB([]byte(status), "VmSwap:"); got != 0 {
		t.Errorf("absent VmSwap %d, want 0", got)
	}
}

// TestReadProcSelf reads this process: it has used some CPU and holds
// some memory, and its parent's first child search finds a process.
func TestReadProcSelf(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.CPU < 0 {
		t.Errorf("self: %+v", s)
	}
	if _, err := ReadProc(-1); err == nil {
		t.Error("pid -1 read without error")
	}
	if ChildOf(os.Getppid()) == 0 {
		t.Errorf("no child of this test's parent %d found", os.Getppid())
	}
	if m, err := MemAvailable(); err != nil || m <= 0 {
		t.Errorf("MemAvailable %d, %v", m, err)
	}
}

func TestCPUShare(t *testing.T) {
	t0 := time.Unix(100, 0)
	from := ProcSample{At: t0, CPU: time.Second}
	to := ProcSample{At: t0.Add(4 * time.Second), CPU: 3 * time.Second}
	if got := CPUShare(from, to); got != 0.5 {
		t.Errorf("2 s of CPU in 4 s: %v, want 0.5", got)
	}
	if got := CPUShare(to, to); got != 0 {
		t.Errorf("no time passed: %v, want 0", got)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(101-i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 0.1: time.Millisecond} {
		if got := Percentile(ds, p); got != want {
			t.Errorf("p%v %v, want %v", p, got, want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none %v, want 0", got)
	}
}

func TestTableWrite(t *testing.T) {
	tb := Table{Header: []string{"nodes", "lab up"}}
	tb.Add("3", "4.1 s")
	tb.Add("10", "12.0 s", "extra")
	var b strings.Builder
	if err := tb.Write(&b); err != nil {
		t.Fatal(err)
	}
	want := "nodes  lab up\n-----  ------  -----\n3      4.1 s\n10     12.0 s  extra\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestInts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		err  string
	}{
		{"", []int{7}, ""},
		{"3 6 10", []int{3, 6, 10}, ""},
		{" 100,500  1000 ", []int{100, 500, 1000}, ""},
		{"3 six", nil, `"six" in "3 six"`},
		{"0", nil, `"0" in "0": want a positive`},
		{"-5", nil, `"-5"`},
	} {
		got, err := Ints(tc.in, []int{7})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Ints(%q): err %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Ints(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	t.Setenv("SCALEBENCH_TEST_N", "4 5")
	if _, err := EnvInt("SCALEBENCH_TEST_N", 1); err == nil || !strings.Contains(err.Error(), "SCALEBENCH_TEST_N") {
		t.Errorf("two numbers for one: err %v, want one naming the variable", err)
	}
}
