package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
)

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    string
		wantErr string
	}{
		{name: "default", want: "1m0s"},
		{name: "from environment", env: map[string]string{"UNDERLAY_RESYNC": "30s"}, want: "30s"},
		{name: "flag wins", env: map[string]string{"UNDERLAY_RESYNC": "30s"}, args: []string{"--resync", "5s"}, want: "5s"},
		{name: "bad value names the variable", env: map[string]string{"UNDERLAY_RESYNC": "10x"}, wantErr: `UNDERLAY_RESYNC="10x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			resync := fs.Duration("resync", 60e9, "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := applyEnv(fs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := resync.String(); got != tt.want {
				t.Errorf("resync = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseLabelFilters(t *testing.T) {
	got, err := parseLabelFilters([]string{"a=1", "b", "c=x=y"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "1", "b": "", "c": "x=y"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := parseLabelFilters([]string{"=v"}); err == nil || !strings.Contains(err.Error(), `"=v"`) {
		t.Errorf("err = %v, want one naming \"=v\"", err)
	}
}

// TestAgentBadFlags checks that bad flags fail before anything connects,
// with a message naming the value.
func TestAgentBadFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"agent", "--host-ip", "not-an-ip"}, `--host-ip "not-an-ip"`},
		{[]string{"agent", "--label", "=x"}, `--label "=x"`},
		{[]string{"agent", "--resync", "0s"}, "--resync 0s"},
		{[]string{"agent", "--deregister", "sometimes", "--node", "n", "--host-ip", "127.0.0.1", "--consul-addr", "127.0.0.1:1"}, `"sometimes"`},
		{[]string{"agent", "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"agent", "--consul-token", "a", "--consul-token-file", "/x"}, "not both"},
		{[]string{"agent", "--ipam", "--networks=false"}, "--ipam needs --networks"},
		{[]string{"agent", "--networks=false", "--ipam=true"}, "(drop --networks=false, or add --ipam=false)"},
		{[]string{"agent", "--pprof", "0.0.0.0:6060"}, `--pprof: profiler address "0.0.0.0:6060": "0.0.0.0" is not a loopback address`},
		{[]string{"agent", "--allowed-host", "http://node1.example"}, `--allowed-host: allowed host "http://node1.example"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(context.Background(), tt.args, IOStreams{Out: &out, ErrOut: &errOut})
			if code == 0 || !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want failure naming %q", code, errOut.String(), tt.wantErr)
			}
		})
	}
}

// TestNodeRemoveRefusesEmpty: `node rm ""` (or all spaces, as a shell
// variable left unset in quotes gives) is refused before anything is
// read: it names no node.
func TestNodeRemoveRefusesEmpty(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")
	for _, arg := range []string{"", "  "} {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), []string{"node", "rm", arg, "--consul-addr", "127.0.0.1:1"}, IOStreams{Out: &out, ErrOut: &errOut})
		want := fmt.Sprintf("node rm %q: give the node's swarm node ID or name, not an empty string", arg)
		if code == 0 || !strings.Contains(errOut.String(), want) {
			t.Errorf("node rm %q: exit %d, stderr %q; want failure with %q", arg, code, errOut.String(), want)
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := Run(context.Background(), []string{"version"}, IOStreams{Out: &out, ErrOut: &out}); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if !strings.HasPrefix(out.String(), "underlay ") {
		t.Errorf("version printed %q", out.String())
	}
}

// TestAgentBadIntervals checks that intervals, timeouts and counts that make
// no sense fail before the agent does anything, naming the flag and its
// value: a zero interval made a ticker panic once the node had claimed its
// identity, and a zero leak grace reclaimed addresses still being handed
// to containers. The context is already cancelled, so that a value let
// through ends the run at once instead of waiting for Docker.
func TestAgentBadIntervals(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--network-sync", "0s"}, "--network-sync 0s"},
		{[]string{"--network-sync", "-30s"}, "--network-sync -30s"},
		{[]string{"--ipam-sweep", "0s"}, "--ipam-sweep 0s"},
		{[]string{"--ipam-leak-grace", "0s"}, "--ipam-leak-grace 0s"},
		{[]string{"--ipam-leak-grace", "-1m"}, "--ipam-leak-grace -1m0s"},
		{[]string{"--ipam-node-timeout", "-1s"}, "--ipam-node-timeout -1s"},
		// A leak grace of a few seconds reclaimed the address of a
		// container still starting; a node timeout of seconds reclaimed a
		// live node's addresses at a blip of its agent or of the swarm.
		{[]string{"--ipam-leak-grace", "1ns"}, "--ipam-leak-grace 1ns: at least 10s"},
		{[]string{"--ipam-leak-grace", "9s"}, "--ipam-leak-grace 9s: at least 10s"},
		{[]string{"--ipam-node-timeout", "1s"}, "--ipam-node-timeout 1s: 0 (never) or at least 1m0s"},
		{[]string{"--ipam-node-timeout", "59s"}, "--ipam-node-timeout 59s: 0 (never) or at least 1m0s"},
		{[]string{"--task-metrics", "-10s"}, "--task-metrics -10s"},
		{[]string{"--doctor-interval", "-1m"}, "--doctor-interval -1m0s"},
		// Readers cap a report's period at the maximum (stale after twice
		// it): a longer one would be read as shorter than it is.
		{[]string{"--doctor-interval", "2h"}, "--doctor-interval 2h0m0s: at most 1h0m0s"},
		// A few nanoseconds were taken: every node's agent then listed
		// Consul's KV and Docker's objects without pause.
		{[]string{"--network-sync", "5ns"}, "--network-sync 5ns: at least 100ms"},
		{[]string{"--resync", "1µs"}, "--resync 1µs: at least 100ms"},
		{[]string{"--ipam-sweep", "99ms"}, "--ipam-sweep 99ms: at least 100ms"},
		{[]string{"--task-metrics", "1ns"}, "--task-metrics 1ns: at least 100ms"},
		{[]string{"--doctor-interval", "10ms"}, "--doctor-interval 10ms: at least 100ms"},
		{[]string{"--workers", "0"}, "--workers 0"},
		{[]string{"--workers", "-4"}, "--workers -4"},
		// Every worker is started at once: a stray digit or two ran the
		// agent out of memory with no word of the flag.
		{[]string{"--workers", "50000000"}, "--workers 50000000: want 1 to 4096"},
		{[]string{"--deregister", "sometimes"}, `--deregister "sometimes"`},
		// The plugin was never served (retried every 10 s, logged), or
		// served where dockerd does not look for it.
		{[]string{"--ipam-socket", ""}, `--ipam-socket ""`},
		{[]string{"--ipam-socket", "underlay.sock"}, `--ipam-socket "underlay.sock"`},
		// The node's name is a segment of Consul KV keys (older agents'
		// underlay/doctor/NODE, underlay/metrics/NODE) and of its service
		// IDs: a '/' split the keys (its task metrics never counted), a
		// newline or space broke ips' and inspect's tables.
		{[]string{"--node", "rack1/n1"}, `--node "rack1/n1": '/' is not allowed`},
		{[]string{"--node", "n1\nn2"}, `--node "n1\nn2": '\n' is not allowed`},
		{[]string{"--node", " "}, `--node " ": ' ' is not allowed`},
		{[]string{"--node", "-n1"}, `--node "-n1": want a letter or digit first`},
		{[]string{"--node", strings.Repeat("n", 65)}, `: 65 characters, want at most 64`},
		// Listened on only once Docker and Consul answered: the agent ran
		// without /healthz for as long as they did not, then exited.
		{[]string{"--listen", "localhost"}, `--listen "localhost": want HOST:PORT`},
		{[]string{"--listen", "127.0.0.1:70000"}, `--listen "127.0.0.1:70000": port "70000"`},
		{[]string{"--listen", ":"}, `--listen ":": no port`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stderr := runAgentCancelled(tt.args)
			if code == 0 || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want failure naming %q", code, stderr, tt.wantErr)
			}
		})
	}
}

// TestAgentTestTimers: test labs check reclamation in seconds; with the
// hidden --ipam-test-timers the agent takes timers below the safe
// minimums, and says so. The context is cancelled: the agent stops at
// its first wait for Docker.
func TestAgentTestTimers(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	args := []string{"agent", "--consul-addr", "127.0.0.1:1", "--state-dir", "", "--ipam-test-timers",
		"--ipam-leak-grace", "5s", "--ipam-node-timeout", "3s"}
	if code := Run(ctx, args, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 ||
		!strings.Contains(errOut.String(), "IPAM timers below their safe minimums") {
		t.Errorf("exit %d, stderr %q; want 0 and a warning", code, errOut.String())
	}
}

// TestRunErrorNeutralisesControls: an error's text may carry what a
// remote server answered (Consul's or control's error bodies) and Consul
// keys any agent's token writes; printed as it was, an escape sequence in
// it rewrote the terminal and a carriage return overwrote the line. Its
// control characters are now printed escaped; its newlines stay, so a
// multi-line error still reads as lines.
func TestRunErrorNeutralisesControls(t *testing.T) {
	body := "boom\x1b[2J\rforged\u009b\u202e\nsecond line\x9b"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, body, http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, errOut.String())
	}
	got := errOut.String()
	if !strings.HasPrefix(got, "underlay: ") || !utf8.ValidString(got) || strings.ContainsFunc(got, func(r rune) bool { return r != '\n' && !unicode.IsGraphic(r) }) ||
		!strings.Contains(got, `boom\x1b[2J\rforged\u009b\u202e`+"\nsecond line"+`\x9b`) {
		t.Errorf("stderr %q: want the error with its control characters escaped, its newline kept", got)
	}
}

// TestParseSwarmNameAllow: --swarm-name-allow SVC=NAME (repeatable) lets
// a task of Swarm service SVC also register as NAME under --swarm-names;
// each side must be a name the agent registers under, or the pair would
// never apply, and a bad value is refused naming it.
func TestParseSwarmNameAllow(t *testing.T) {
	got, err := parseSwarmNameAllow([]string{"stack_api=stack_web", "stack_api=api", "stack_worker=stack_web", "stack_api=stack_web", "a=b=c"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"stack_api": {"stack_web", "api"}, "stack_worker": {"stack_web"}, "a": {"b=c"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	if got, err := parseSwarmNameAllow(nil); got != nil || err != nil {
		t.Errorf("no flag: %v, %v; want nil, nil (none allowed)", got, err)
	}
	for _, tc := range []struct{ in, wantErr string }{
		{"stack_api", `--swarm-name-allow "stack_api": want SVC=NAME`},
		{"", `--swarm-name-allow "": want SVC=NAME`},
		{"=stack_web", `--swarm-name-allow "=stack_web": want SVC=NAME`},
		{"stack_api=", `--swarm-name-allow "stack_api=": want SVC=NAME`},
		{"stack_api=..", `--swarm-name-allow "stack_api=..": name "..": not usable as a Consul service name`},
		{"stack_api=web/", `--swarm-name-allow "stack_api=web/": name "web/": not usable`},
		{"stack_api=web\n", `--swarm-name-allow "stack_api=web\n": name "web\n": not usable`},
		{"./api=stack_web", `--swarm-name-allow "./api=stack_web": Swarm service "./api": not usable`},
		{"api\x1b=stack_web", `--swarm-name-allow "api\x1b=stack_web": Swarm service "api\x1b": not usable`},
		// "a=b, c=d": a space after the comma names no Swarm service.
		{" stack_api=stack_web", `--swarm-name-allow " stack_api=stack_web": Swarm service " stack_api": not usable as a Consul service name`},
		{"stack_api=web ", `--swarm-name-allow "stack_api=web ": name "web ": not usable as a Consul service name: Consul's HTTP API could not look it up, or it would read as another name`},
	} {
		if _, err := parseSwarmNameAllow([]string{"stack_api=stack_web", tc.in}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: err = %v, want one containing %q", tc.in, err, tc.wantErr)
		}
	}
}

// TestAgentBadTags: the agent's --tags (tags added to every service)
// were registered as given, unchecked, where SERVICE_TAGS's are checked:
// a no-break space, a control character or a bidi override went to
// every service of the node. The agent now refuses them at start, naming
// the tag and the character.
func TestAgentBadTags(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")
	for _, tc := range []struct {
		name     string
		env      string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "fine", args: []string{"--tags", "a, b,web api"}},
		{name: "no-break space", args: []string{"--tags", "a,we\u00a0b"}, wantCode: 1, wantErr: `--tags: tag "we\u00a0b": U+00A0 (a space other than U+0020)`},
		{name: "bidi override", args: []string{"--tags", "x\u202ey"}, wantCode: 1, wantErr: `--tags: tag "x\u202ey": U+202E`},
		{name: "from the environment", env: "a,b\x1b[2J", wantCode: 1, wantErr: `--tags: tag "b\x1b[2J": U+001B (a control character)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("UNDERLAY_TAGS", tc.env)
			}
			code, stderr := runAgentCancelled(tc.args)
			if code != tc.wantCode || !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d naming %q", code, stderr, tc.wantCode, tc.wantErr)
			}
		})
	}
}

// TestAgentSwarmNameAllow: the agent takes --swarm-name-allow, repeated
// or comma-separated, from its flags or UNDERLAY_SWARM_NAME_ALLOW; it
// refuses a bad value before connecting to anything, and says that the
// flag does nothing without --swarm-names. The context is cancelled: the
// agent stops at its first wait for Docker.
func TestAgentSwarmNameAllow(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")
	const noEffect = "--swarm-name-allow has no effect without --swarm-names"
	for _, tc := range []struct {
		name      string
		env       string
		args      []string
		wantCode  int
		wantErr   string
		wantNoErr string
	}{
		{name: "repeated", args: []string{"--swarm-names", "--swarm-name-allow", "stack_api=stack_web", "--swarm-name-allow", "stack_api=api"}, wantNoErr: noEffect},
		{name: "comma-separated", args: []string{"--swarm-names", "--swarm-name-allow", "stack_api=stack_web,stack_worker=stack_web"}, wantNoErr: noEffect},
		{name: "from the environment", env: "stack_api=stack_web,stack_api=api", args: []string{"--swarm-names"}, wantNoErr: noEffect},
		{name: "without --swarm-names", args: []string{"--swarm-name-allow", "stack_api=stack_web"}, wantErr: noEffect},
		{name: "bad value", args: []string{"--swarm-names", "--swarm-name-allow", "stack_api"}, wantCode: 1, wantErr: `--swarm-name-allow "stack_api": want SVC=NAME`},
		{name: "a stray comma", args: []string{"--swarm-names", "--swarm-name-allow", "stack_api=stack_web,"}, wantCode: 1, wantErr: `--swarm-name-allow "": want SVC=NAME`},
		{name: "bad value from the environment", env: "stack_api=..", args: []string{"--swarm-names"}, wantCode: 1, wantErr: `--swarm-name-allow "stack_api=..": name ".."`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("UNDERLAY_SWARM_NAME_ALLOW", tc.env)
			}
			code, stderr := runAgentCancelled(tc.args)
			if code != tc.wantCode || !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d naming %q", code, stderr, tc.wantCode, tc.wantErr)
			}
			if tc.wantNoErr != "" && strings.Contains(stderr, tc.wantNoErr) {
				t.Errorf("stderr %q; want nothing of %q", stderr, tc.wantNoErr)
			}
		})
	}
}

// runAgentCancelled runs `underlay agent` with args after flags that keep
// it off the machine (Consul at 127.0.0.1:1, no state directory), its
// context already ended: it checks its flags, then stops at its first
// wait. It returns the exit code and what it wrote to stderr.
func runAgentCancelled(args []string) (int, string) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	args = append([]string{"agent", "--consul-addr", "127.0.0.1:1", "--state-dir", ""}, args...)
	code := Run(ctx, args, IOStreams{Out: &out, ErrOut: &errOut})
	return code, errOut.String()
}

// TestLoggerEscapes logs, in both formats, what a container label may
// hold (a bidi override, U+3164 shown as nothing) and ordinary values
// (ASCII, accented letters, CJK, a backslash): the first are escaped,
// the second written as slog's own handlers write them.
func TestLoggerEscapes(t *testing.T) {
	logAll := func(log *slog.Logger) {
		log.Info("registered", "component", "register", "service", "web\u202egnp.exe", "tag", "web\u3164")
		log.Info("récupéré 網站", "component", "register", "service", "nœud-é", "path", `C:\x`,
			"err", errors.New("read \"a b\": 失敗"), slog.Group("g", "n", 3))
	}
	for _, tc := range []struct {
		format string
		plain  func(io.Writer) slog.Handler
		want   string
	}{
		{"text", func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
			`level=INFO msg=registered component=register service="web\u202egnp.exe" tag="web\u3164"`},
		{"json", func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
			`{"level":"INFO","msg":"registered","component":"register","service":"web\u202egnp.exe","tag":"web\u3164"}`},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var got, plain bytes.Buffer
			log, err := (&globalFlags{logLevel: "info", logFormat: tc.format}).logger(&got)
			if err != nil {
				t.Fatal(err)
			}
			logAll(log)
			logAll(slog.New(tc.plain(&plain)))
			lines := strings.Split(noLogTime(got.String()), "\n")
			if lines[0] != tc.want {
				t.Errorf("spoofing values logged as\n%s\nwant\n%s", lines[0], tc.want)
			}
			if want := strings.Split(noLogTime(plain.String()), "\n")[1]; lines[1] != want {
				t.Errorf("ordinary values logged as\n%s\nslog writes\n%s", lines[1], want)
			}
		})
	}
}

// noLogTime is lines of logs without their time attribute.
func noLogTime(lines string) string {
	return regexp.MustCompile(`(?m)^(time=\S+ |\{"time":"[^"]*",)`).ReplaceAllStringFunc(lines, func(s string) string {
		if strings.HasPrefix(s, "{") {
			return "{"
		}
		return ""
	})
}
