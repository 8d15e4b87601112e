package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/scale/adapter"
	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/unregistered"
)

// stackFile is the part of a compose file the checks read.
type stackFile struct {
	Services map[string]struct {
		Image       string
		Command     []string
		User        string
		Privileged  bool
		CapAdd      []string          `yaml:"cap_add"`
		CapDrop     []string          `yaml:"cap_drop"`
		Networks    []string          `yaml:"networks"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []struct{ Type, Source, Target string }
		Secrets     []struct{ Source, Target string }
		Deploy      struct {
			Mode      string
			Placement struct{ Constraints []string }
			Update    struct{ Order string } `yaml:"update_config"`
		}
	}
	Networks map[string]struct {
		External bool
		Name     string
	}
	Secrets map[string]struct{ External bool }
}

func parseStack(t *testing.T) stackFile {
	t.Helper()
	var s stackFile
	if err := yaml.Unmarshal(Stack, &s); err != nil {
		t.Fatalf("stack.yml: %v", err)
	}
	return s
}

// TestStackAgent: the agent is a global service on the host's network, with
// NET_ADMIN and no other capability, never privileged, with
// the Docker socket, Docker's plugin directory, Consul from the
// environment and its token from a secret.
func TestStackAgent(t *testing.T) {
	s := parseStack(t)
	a, ok := s.Services["agent"]
	if !ok {
		t.Fatal("no agent service")
	}
	if a.Deploy.Mode != "global" {
		t.Errorf("agent mode %q, want global", a.Deploy.Mode)
	}
	if !slices.Equal(a.Networks, []string{"host"}) || s.Networks["host"].Name != "host" || !s.Networks["host"].External {
		t.Errorf("agent networks %v (%+v), want the external network host", a.Networks, s.Networks)
	}
	if a.Privileged {
		t.Error("agent is privileged")
	}
	if !slices.Equal(a.CapAdd, []string{"NET_ADMIN"}) || !slices.Equal(a.CapDrop, []string{"ALL"}) {
		t.Errorf("agent capabilities: add %v drop %v, want NET_ADMIN only", a.CapAdd, a.CapDrop)
	}
	mounts := map[string]string{}
	for _, v := range a.Volumes {
		mounts[v.Source] = v.Target
	}
	if mounts["/var/run/docker.sock"] != "/var/run/docker.sock" || mounts["/run/docker/plugins"] != "/run/docker/plugins" {
		t.Errorf("agent mounts %v, want the Docker socket and plugin directory", mounts)
	}
	if !strings.Contains(a.Environment["CONSUL_HTTP_ADDR"], "${CONSUL_HTTP_ADDR") {
		t.Errorf("agent's Consul address %q does not come from the environment", a.Environment["CONSUL_HTTP_ADDR"])
	}
	if len(a.Secrets) != 1 || a.Secrets[0].Source != SecretAgentConsulToken || !s.Secrets[SecretAgentConsulToken].External ||
		!slices.Contains(a.Command, "/run/secrets/"+a.Secrets[0].Target) {
		t.Errorf("agent secrets %+v, command %v: want the Consul token from %s", a.Secrets, a.Command, SecretAgentConsulToken)
	}
	if a.Deploy.Update.Order != "stop-first" {
		t.Errorf("agent update order %q, want stop-first (one agent per plugin socket)", a.Deploy.Update.Order)
	}
}

// TestStackControl: control runs on managers only, elects a leader, takes
// its bearer tokens and Consul token from secrets, on ControlPort.
func TestStackControl(t *testing.T) {
	s := parseStack(t)
	c, ok := s.Services["control"]
	if !ok {
		t.Fatal("no control service")
	}
	if c.Deploy.Mode != "replicated" || !slices.Contains(c.Deploy.Placement.Constraints, "node.role == manager") {
		t.Errorf("control mode %q, constraints %v: want replicated on managers", c.Deploy.Mode, c.Deploy.Placement.Constraints)
	}
	cmd := strings.Join(c.Command, " ")
	for _, want := range []string{"control", "--leader-election", "--token-file /run/secrets/control_tokens",
		"--consul-token-file /run/secrets/consul_token", "--peer-secret-file /run/secrets/peer_secret", ":${UNDERLAY_CONTROL_PORT:-8000}"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("control command %q lacks %q", cmd, want)
		}
	}
	if c.Privileged || len(c.CapAdd) > 0 || !slices.Equal(c.CapDrop, []string{"ALL"}) {
		t.Errorf("control: privileged %v, add %v, drop %v: want no capability", c.Privileged, c.CapAdd, c.CapDrop)
	}
	var secrets []string
	for _, sec := range c.Secrets {
		secrets = append(secrets, sec.Source)
	}
	slices.Sort(secrets)
	if want := []string{SecretControlConsulToken, SecretControlPeerSecret, SecretControlTokens}; !slices.Equal(secrets, want) {
		t.Errorf("control secrets %v, want %v", secrets, want)
	}
}

// TestUnits: the units are there, with the settings the README promises.
func TestUnits(t *testing.T) {
	for name, want := range map[string][]string{
		"underlay-ipam.socket":     {"ListenStream=/run/docker/plugins/underlay.sock", "Before=docker.service", "Service=underlay-agent.service", "RemoveOnStop=yes"},
		"underlay-agent.service":   {"EnvironmentFile=-/etc/underlay/agent.env", "Restart=always", "CapabilityBoundingSet=CAP_NET_ADMIN", "ProtectSystem=strict", "NoNewPrivileges=yes", "Environment=UNDERLAY_NODE=%H"},
		"underlay-control.service": {"EnvironmentFile=-/etc/underlay/control.env", "Restart=always", "CapabilityBoundingSet=\n", "DynamicUser=yes", "--leader-election", "LoadCredential=tokens:/etc/underlay/control.tokens", "LoadCredential=peer_secret:/etc/underlay/control.peer-secret", "--peer-secret-file %d/peer_secret"},
	} {
		b, err := Units.ReadFile("systemd/" + name)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s lacks %q", name, w)
			}
		}
		// dockerd may wait on the plugin while it starts: an agent ordered
		// after it would deadlock the boot.
		for _, line := range strings.Split(string(b), "\n") {
			if name == "underlay-agent.service" && strings.HasPrefix(line, "After=") && strings.Contains(line, "docker.service") {
				t.Errorf("%s is ordered after docker.service: %s", name, line)
			}
		}
	}
}

// policyRule matches a rule's opening line of an ACL policy: resource,
// segment, "{".
var policyRule = regexp.MustCompile(`^([a-z_]+) "([^"]*)" \{$`)

// policyRules reads an ACL policy as the files are written (one rule per
// block, its policy on the line after), as "resource \"segment\"" →
// policy; a line it cannot read fails the test, so no rule is overlooked.
func policyRules(t *testing.T, name, hcl string) map[string]string {
	t.Helper()
	out := map[string]string{}
	lines := strings.Split(hcl, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := policyRule.FindStringSubmatch(line)
		if m == nil || i+2 >= len(lines) || strings.TrimSpace(lines[i+2]) != "}" {
			t.Fatalf("%s line %d: %q is not a one-policy rule block", name, i+1, line)
		}
		p, ok := strings.CutPrefix(strings.TrimSpace(lines[i+1]), "policy = ")
		if !ok {
			t.Fatalf("%s line %d: %q is not a rule's policy", name, i+2, lines[i+1])
		}
		rule := fmt.Sprintf("%s %q", m[1], m[2])
		if _, dup := out[rule]; dup {
			t.Fatalf("%s: %s twice", name, rule)
		}
		out[rule] = strings.Trim(p, `"`)
		i += 2
	}
	return out
}

// TestPolicies: each Consul ACL policy grants exactly the KV prefixes the
// code of its component reads and writes (the packages' own constants),
// and the few non-KV rules it needs; nothing else.
func TestPolicies(t *testing.T) {
	key := func(prefix string) string { return fmt.Sprintf("key_prefix %q", prefix) }
	const scalePrefix = "underlay/scale/" // control's leader key, history, alerts, tokens
	for _, k := range []string{adapter.DefaultLeaderKey, adapter.DefaultHistoryPrefix, adapter.DefaultAlertPrefix} {
		if !strings.HasPrefix(k, scalePrefix) {
			t.Fatalf("control's key %s is outside %s", k, scalePrefix)
		}
	}
	for _, tc := range []struct {
		name, hcl string
		want      map[string]string
	}{
		{"agent.hcl", AgentPolicy, map[string]string{
			`agent_prefix ""`:                 "read",  // its Consul agent's address
			`service_prefix ""`:               "write", // its containers' services
			key(netspec.KVPrefix):             "write",
			key(netspec.NodesKVPrefix):        "write",
			key(netspec.RemovedNodesKVPrefix): "read", // node rm's records of removed nodes, honoured
			key(ipam.KVPrefix):                "write",
			key(inventory.KVPrefix):           "write",
			key(taskmetrics.KVPrefix):         "write",
			key(doctor.KVPrefix):              "write",
			key(unregistered.KVPrefix):        "write",
			`key "` + netspec.IndexKey + `"`:  "read", // the IPAM plugin's check of what it settled
		}},
		{"control.hcl", ControlPolicy, map[string]string{
			key(scalePrefix):           "write",
			`key "` + TokensKey + `"`:  "read",  // tokens kept in Consul: never written by control
			`session_prefix ""`:        "write", // the leader lock's session
			key(taskmetrics.KVPrefix):  "read",
			key(netspec.KVPrefix):      "read", // the dashboard's
			key(netspec.NodesKVPrefix): "read",
			key(ipam.KVPrefix):         "read",
			key(inventory.KVPrefix):    "read",
			key(doctor.KVPrefix):       "read",
			key(unregistered.KVPrefix): "read",
			`service_prefix ""`:        "read",
			`node_prefix ""`:           "read",
		}},
		// Checked against what node rm does too (TestNodeRmPolicy).
		{"node-rm.hcl", NodeRmPolicy, map[string]string{
			key(netspec.NodesKVPrefix):        "write",
			key(netspec.RemovedNodesKVPrefix): "write",
			key(netspec.KVPrefix):             "write",
			key(ipam.KVPrefix):                "write",
			key(inventory.KVPrefix):           "write",
			key(taskmetrics.KVPrefix):         "write",
			key(doctor.KVPrefix):              "write",
			key(unregistered.KVPrefix):        "write",
			`service_prefix ""`:               "read",  // the catalog's services
			`node_prefix ""`:                  "write", // the removed node's services deregistered
		}},
	} {
		if d := cmp.Diff(tc.want, policyRules(t, tc.name, tc.hcl)); d != "" {
			t.Errorf("%s grants other than what its component uses (-want +got):\n%s", tc.name, d)
		}
	}
}

// serviceSettings reads a unit's [Service] section as systemd merges it:
// every assignment of a setting adds its words, an empty one resets it.
// (For the single-valued settings checked here, the last word is the
// value.) A continued line fails the test: it would be read wrongly.
func serviceSettings(t *testing.T, name string) map[string][]string {
	t.Helper()
	b, err := Units.ReadFile("systemd/" + name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s line %d: a continued line", name, i+1)
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s line %d: %q is no assignment", name, i+1, line)
			}
			if words := strings.Fields(v); len(words) == 0 {
				out[k] = []string{}
			} else {
				out[k] = append(out[k], words...)
			}
		}
	}
	return out
}

// TestUnitSandbox: each service's sandbox as systemd would apply it, all
// of its lines merged: the agent has CAP_NET_ADMIN alone in its
// bounding set (root, for the Docker socket and plugin directory) and
// netlink sockets; control, a dynamic user in the docker group, has no
// capability and no netlink; neither gains privileges, writes the system
// or sees /home or the host's /tmp.
func TestUnitSandbox(t *testing.T) {
	// The settings whose assignments add up; the others' last one counts.
	listSettings := []string{"CapabilityBoundingSet", "AmbientCapabilities", "RestrictAddressFamilies", "SupplementaryGroups"}
	common := map[string][]string{
		"NoNewPrivileges": {"yes"}, "ProtectSystem": {"strict"}, "ProtectHome": {"yes"}, "PrivateTmp": {"yes"},
		"AmbientCapabilities": {},
	}
	for name, want := range map[string]map[string][]string{
		"underlay-agent.service": {
			"CapabilityBoundingSet":   {"CAP_NET_ADMIN"},
			"RestrictAddressFamilies": {"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"},
			"User":                    nil, "DynamicUser": nil,
		},
		"underlay-control.service": {
			"CapabilityBoundingSet":   {},
			"RestrictAddressFamilies": {"AF_INET", "AF_INET6", "AF_UNIX"},
			"DynamicUser":             {"yes"}, "SupplementaryGroups": {"docker"},
		},
	} {
		got := serviceSettings(t, name)
		for k, w := range common {
			if _, ok := want[k]; !ok {
				want[k] = w
			}
		}
		for k, w := range want {
			g, set := got[k]
			switch {
			case w == nil && set:
				t.Errorf("%s: %s=%s, want it unset", name, k, strings.Join(g, " "))
			case w == nil:
			case !set:
				// An unset bounding set is every capability.
				t.Errorf("%s: %s unset, want %q", name, k, w)
			case len(w) == 1 && !slices.Contains(listSettings, k):
				if g[len(g)-1] != w[0] {
					t.Errorf("%s: %s=%s, want %s", name, k, g[len(g)-1], w[0])
				}
			default:
				g = slices.Clone(g)
				slices.Sort(g)
				if !slices.Equal(g, w) {
					t.Errorf("%s: %s is %q, want %q", name, k, g, w)
				}
			}
		}
	}
}

// maintainer runs deploy/debian's scripts in a sandbox: their absolute
// paths moved under root, and deb-systemd-helper, deb-systemd-invoke,
// systemctl and underlay replaced by stubs that log each call. The stub
// helper keeps a unit's d-s-h state as a file: debian-installed is true
// once update-state or enable ran. The stub systemctl's show prints the
// file mainpid (the agent's MainPID), else 0: no agent runs; its
// --version prints the file systemd, else nothing.
type maintainer struct {
	t    *testing.T
	root string
	out  string // the last run's output
}

func newMaintainer(t *testing.T) *maintainer {
	t.Helper()
	// Resolved: purge refuses a state directory reached through a link.
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := &maintainer{t: t, root: root}
	for _, d := range []string{"bin", "dsh", "etc/underlay", "var/lib/underlay", "run/systemd/system", "usr/share/underlay"} {
		if err := os.MkdirAll(filepath.Join(m.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The prerm's reader of unit files, where the package installs it.
	awk, err := os.ReadFile(filepath.Join("debian", "unit-env.awk"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.root, "usr/share/underlay/unit-env.awk"), awk, 0o644); err != nil {
		t.Fatal(err)
	}
	stub := `#!/bin/sh
echo "$(basename "$0") $*" >>"$CALLS"
if [ "$(basename "$0")" = systemctl ] && [ "$1" = show ]; then
	cat "$MAINPID" 2>/dev/null || echo 0
fi
if [ "$(basename "$0")" = systemctl ] && [ "$1" = --version ]; then
	cat "$SYSTEMD" 2>/dev/null || :
fi
[ "$(basename "$0")" = deb-systemd-helper ] || exit 0
[ "$1" != --quiet ] || shift
case "$1" in
debian-installed) test -e "$DSH/$2" ;;
update-state|enable) : >"$DSH/$2" ;;
esac
`
	for _, name := range []string{"deb-systemd-helper", "deb-systemd-invoke", "systemctl", "underlay"} {
		if err := os.WriteFile(filepath.Join(m.root, "bin", name), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// runningAgent is the /proc of the agent's process 4242, as a stub
// systemctl's MainPID names it: in the agent's cgroup, with cmdline and
// environ (NUL-separated).
func runningAgent(cmdline, environ string) map[string]string {
	return map[string]string{
		"proc/4242/cgroup":  "0::/system.slice/underlay-agent.service\n",
		"proc/4242/cmdline": cmdline,
		"proc/4242/environ": environ,
	}
}

// sandboxPaths matches the absolute paths the scripts may use, which run
// moves under the sandbox's root: whole paths only, so that
// /usr/lib/systemd/system is not taken for /lib/systemd/system (and
// /etc/systemd/system.control is /etc/systemd/system's, moved as it).
var sandboxPaths = regexp.MustCompile(`(^|[^\w/.-])(/etc/underlay|/var/lib/underlay|/run/systemd/system|/run/systemd/transient|/run/systemd/generator|/etc/systemd/system|/usr/local/lib/systemd/system|/usr/lib/systemd/system|/lib/systemd/system|/usr/share/underlay|/proc)\b`)

// run runs script with args and returns the stubs' calls.
func (m *maintainer) run(script string, args ...string) []string {
	m.t.Helper()
	b, err := os.ReadFile(filepath.Join("debian", script))
	if err != nil {
		m.t.Fatal(err)
	}
	s := sandboxPaths.ReplaceAllString(string(b), "${1}"+m.root+"${2}")
	// Nothing outside the sandbox but the kernel's random bytes.
	outside := regexp.MustCompile(`(^|[\s"'=(<>])/(etc|var|run|usr|lib|home|srv|opt)/`)
	for _, line := range strings.Split(strings.ReplaceAll(s, m.root+"/", "@/"), "\n") {
		if l := strings.TrimSpace(line); !strings.HasPrefix(l, "#") && outside.MatchString(l) {
			m.t.Fatalf("%s: %q reaches outside the test's sandbox", script, l)
		}
	}
	path := filepath.Join(m.root, script)
	if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
		m.t.Fatal(err)
	}
	calls := filepath.Join(m.root, "calls")
	os.Remove(calls)
	cmd := exec.Command("/bin/sh", append([]string{path}, args...)...)
	cmd.Env = []string{"PATH=" + filepath.Join(m.root, "bin") + ":/usr/bin:/bin", "CALLS=" + calls, "DSH=" + filepath.Join(m.root, "dsh"),
		"MAINPID=" + filepath.Join(m.root, "mainpid"), "SYSTEMD=" + filepath.Join(m.root, "systemd")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		m.t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	m.out = string(out)
	b, err = os.ReadFile(calls)
	if err != nil && !os.IsNotExist(err) {
		m.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (m *maintainer) path(p string) string { return filepath.Join(m.root, p) }

func (m *maintainer) write(p, content string) {
	m.t.Helper()
	if err := os.MkdirAll(filepath.Dir(m.path(p)), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(m.path(p), []byte(content), 0o600); err != nil {
		m.t.Fatal(err)
	}
}

func (m *maintainer) read(p string) (string, bool) {
	b, err := os.ReadFile(m.path(p))
	return string(b), err == nil
}

// TestMaintainerScripts: a fresh install enables and starts the agent and
// its socket, makes control's secrets (root's only) and records control's
// unit so that a purge removes the links an operator's enable made; an
// upgrade stops nothing, restarts the agent and keeps the operator's
// secrets; remove stops the units and cleans the host's links but keeps
// settings and state; purge removes what the package made and no
// operator file beside it.
func TestMaintainerScripts(t *testing.T) {
	m := newMaintainer(t)
	m.write("etc/underlay/agent.env", "UNDERLAY_LABEL=mine\n") // conffiles, unpacked by dpkg
	m.write("var/lib/underlay/node-id", "abc\n")
	m.write("var/lib/underlay/link-owner", "0a1b2c3d4e5f6a7b\n")
	m.write("var/lib/underlay/vlan-parents.json", `{"parents":[]}`+"\n")
	m.write("var/lib/underlay/lab/keep", "not the package's\n")

	calls := m.run("postinst", "configure", "")
	for _, want := range []string{"deb-systemd-helper enable underlay-ipam.socket", "deb-systemd-helper enable underlay-agent.service",
		"deb-systemd-helper update-state underlay-control.service", "deb-systemd-invoke start underlay-ipam.socket underlay-agent.service"} {
		if !slices.Contains(calls, want) {
			t.Errorf("fresh install: no %q among %q", want, calls)
		}
	}
	if slices.ContainsFunc(calls, func(c string) bool { return strings.Contains(c, "enable underlay-control") }) {
		t.Errorf("fresh install enabled control: %q", calls)
	}
	for _, f := range []string{"etc/underlay/control.tokens", "etc/underlay/control.peer-secret"} {
		st, err := os.Stat(m.path(f))
		got, _ := m.read(f)
		if err != nil || st.Mode().Perm() != 0o600 || !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(got) {
			t.Errorf("%s after a fresh install: %v %q (%v), want 32 random bytes in hex, root's only", f, st.Mode(), got, err)
		}
	}

	m.write("etc/underlay/control.tokens", "operator-token\n")
	if calls := m.run("prerm", "upgrade", "2.0"); calls[0] != "" {
		t.Errorf("prerm upgrade: %q, want nothing stopped or cleaned", calls)
	}
	calls = m.run("postinst", "configure", "1.0")
	if !slices.Contains(calls, "deb-systemd-invoke restart underlay-agent.service") {
		t.Errorf("upgrade: the agent is not restarted: %q", calls)
	}
	if got, _ := m.read("etc/underlay/control.tokens"); got != "operator-token\n" {
		t.Errorf("upgrade rewrote control.tokens: %q", got)
	}

	calls = m.run("prerm", "remove")
	if !slices.Contains(calls, "deb-systemd-invoke stop underlay-control.service underlay-agent.service underlay-ipam.socket") ||
		!slices.Contains(calls, "underlay agent cleanup --state-dir "+m.path("var/lib/underlay")) {
		t.Errorf("prerm remove: %q, want the units stopped and the agent's links cleaned", calls)
	}
	m.run("postrm", "remove")
	for _, f := range []string{"etc/underlay/control.tokens", "etc/underlay/control.peer-secret", "var/lib/underlay/node-id", "var/lib/underlay/link-owner", "var/lib/underlay/vlan-parents.json"} {
		if _, ok := m.read(f); !ok {
			t.Errorf("remove deleted %s", f)
		}
	}

	m.write("etc/underlay/policy.yml", "operator's\n")
	calls = m.run("postrm", "purge")
	if !slices.Contains(calls, "deb-systemd-helper purge underlay-ipam.socket underlay-agent.service underlay-control.service") {
		t.Errorf("purge: %q, want the units' state purged", calls)
	}
	for _, f := range []string{"etc/underlay/control.tokens", "etc/underlay/control.peer-secret", "var/lib/underlay/node-id", "var/lib/underlay/link-owner", "var/lib/underlay/vlan-parents.json"} {
		if _, ok := m.read(f); ok {
			t.Errorf("purge left %s", f)
		}
	}
	for _, f := range []string{"etc/underlay/policy.yml", "var/lib/underlay/lab/keep"} {
		if _, ok := m.read(f); !ok {
			t.Errorf("purge deleted %s, not the package's", f)
		}
	}
}

// TestPrermStateDir: remove's `underlay agent cleanup` reads the agent's
// link owner from the agent's --state-dir, which the prerm passes as
// systemd gives it to the agent: a running agent's own (its command line,
// then its environment: what systemd made of the unit, its drop-ins and
// agent.env), else read from those files as systemd reads them. The files
// are read as data, never run.
func TestPrermStateDir(t *testing.T) {
	unit, err := Units.ReadFile("systemd/underlay-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	dropIn := func(s string) string { return "[Unit]\nDescription=x\n[Service]\n" + s }
	const (
		override = "etc/systemd/system/underlay-agent.service.d/override.conf"
		vendor   = "usr/lib/systemd/system/underlay-agent.service.d/"
	)
	for _, tc := range []struct {
		name, env string            // env: agent.env's content; "-": no file
		files     map[string]string // more files in the sandbox: unit files, drop-ins, /proc
		unit      bool              // the package's unit is installed
		pid       string            // the agent's MainPID, "": none runs
		systemd   string            // systemctl --version's first line, "": none
		host      string            // uname -n's output (%H), "": the machine's
		want      string            // "": the default, under the sandbox
		says      string            // in the prerm's output, "": anything
	}{
		{name: "no env file", env: "-"},
		{name: "not set", env: "UNDERLAY_LABEL=mine\n#UNDERLAY_STATE_DIR=/srv/commented\n"},
		{name: "set", env: "UNDERLAY_LABEL=mine\nUNDERLAY_STATE_DIR=/srv/underlay\n", want: "/srv/underlay"},
		{name: "the last wins", env: "UNDERLAY_STATE_DIR=/srv/first\nUNDERLAY_STATE_DIR=/srv/second\n", want: "/srv/second"},
		{name: "blanks and double quotes", env: "  UNDERLAY_STATE_DIR = \"/srv/my state\"  \n", want: "/srv/my state"},
		{name: "single quotes", env: "UNDERLAY_STATE_DIR='/srv/single'\n", want: "/srv/single"},
		{name: "another variable's prefix", env: "UNDERLAY_STATE_DIR_OLD=/srv/old\n"},
		{name: "not run", env: "UNDERLAY_STATE_DIR=$(touch \"$CALLS.ran\")/srv/x;touch \"$CALLS.ran\"\n", want: "$(touch \"$CALLS.ran\")/srv/x;touch \"$CALLS.ran\""},
		{name: "empty: none, as for the agent", env: "UNDERLAY_STATE_DIR=\n", want: "[]"},
		// systemd's env-file.c: a backslash escapes any character
		// outside quotes and ends a continued line; in double quotes
		// only " \ ` $ and the line's end; none in single quotes.
		{name: "a continued line", env: "UNDERLAY_STATE_DIR=/srv/under\\\nlay\nUNDERLAY_LABEL=x\n", want: "/srv/underlay"},
		{name: "escapes outside quotes", env: "UNDERLAY_STATE_DIR=/srv/a\\ b\\\\c\\\"\n", want: `/srv/a b\c"`},
		{name: "escapes in double quotes", env: "UNDERLAY_STATE_DIR=\"/srv/\\\"q\\\" \\$x\\n\\\n/y\"\n", want: `/srv/"q" $x\n/y`},
		{name: "no escapes in single quotes", env: "UNDERLAY_STATE_DIR='/srv/a\\b'\n", want: `/srv/a\b`},
		{name: "quoted parts joined", env: "UNDERLAY_STATE_DIR=\"/srv/a\"'/b c'\n", want: "/srv/a/b c"},
		{name: "a quoted newline", env: "UNDERLAY_STATE_DIR='/srv/a\nUNDERLAY_STATE_DIR=/srv/b'\n", want: "/srv/a|UNDERLAY_STATE_DIR=/srv/b"},
		{name: "a ; comment", env: "UNDERLAY_STATE_DIR=/srv/a\n ; UNDERLAY_STATE_DIR=/srv/b\n", want: "/srv/a"},
		{name: "a comment's backslash continues nothing, since systemd 254", env: "# old \\\nUNDERLAY_STATE_DIR=/srv/a\n", want: "/srv/a"},
		{name: "systemd 257's comment", systemd: "systemd 257 (257.9-1~deb13u1)", env: "# old \\\nUNDERLAY_STATE_DIR=/srv/a\n", want: "/srv/a"},
		{name: "a comment's backslash continues it before systemd 254", systemd: "systemd 252 (252.39-1~deb12u1)", env: "# old \\\nUNDERLAY_STATE_DIR=/srv/a\nUNDERLAY_LABEL=x\n"},
		{name: "a continued comment ends at its line's end before systemd 254", systemd: "systemd 252 (252.39-1~deb12u1)", env: "# old \\\n# more\nUNDERLAY_STATE_DIR=/srv/a\n", want: "/srv/a"},
		{name: "no comment after a value", env: "UNDERLAY_STATE_DIR=/srv/a # b\n", want: "/srv/a # b"},
		{name: "no newline at the end", env: "UNDERLAY_STATE_DIR=/srv/a  ", want: "/srv/a"},
		// The unit and its drop-ins: Environment= and EnvironmentFile=
		// of [Service], overridden by the environment files.
		{name: "the unit's environment file", unit: true, env: "UNDERLAY_STATE_DIR=/srv/a\n", want: "/srv/a"},
		{name: "a drop-in's Environment=", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=\"UNDERLAY_STATE_DIR=/srv/drop in\" UNDERLAY_LABEL=x\n"),
		}, want: "/srv/drop in"},
		{name: "a continued Environment= with C escapes", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_LABEL=x \\\n# a comment\n  UNDERLAY_STATE_DIR=/srv/\\x41\\101\\s%%\n"),
		}, want: "/srv/AA %"},
		// systemd's conf-parser.c: a continued line is joined as it is,
		// its leading blanks kept (they count inside quotes); a line
		// ends in a continuation only where its last backslash is not
		// itself escaped, and not when blanks follow it.
		{name: "a continued line's leading blanks in quotes", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=\"UNDERLAY_STATE_DIR=/srv/a \\\n   b\"\n"),
		}, want: "/srv/a     b"},
		{name: "an escaped backslash at the end continues nothing", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\\\\\nEnvironment=UNDERLAY_LABEL=x\n"),
		}, want: `/srv/a\`},
		{name: "three backslashes at the end continue", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\\\\\\\n  UNDERLAY_LABEL=x\n"),
		}, want: `/srv/a\`},
		{name: "blanks after a backslash: no continuation", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a \\ \nUNDERLAY_STATE_DIR=/srv/b\n"),
		}, want: "/srv/a"},
		// conf-parser.c parses a continuation left at the file's end.
		{name: "a continued line at the end of the last file", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a \\\n"),
		}, want: "/srv/a"},
		{name: "a continued line at the end of a file before another", unit: true, env: "-", files: map[string]string{
			vendor + "10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a \\\n"),
			override:             "[Service]\nEnvironment=UNDERLAY_LABEL=x\n",
		}, want: "/srv/a"},
		// systemd.syntax(7)'s \u and \U: a code point, written as
		// UTF-8; \U's a valid one (none past U+10FFFF, no surrogate or
		// noncharacter), \u's any; none may be NUL, nor may \x's or an
		// octal escape's byte. A bad escape ends the line's words, as
		// any (Environment=: those before it count; ExecStart=: systemd
		// cannot parse it). An Environment= value must be UTF-8, else
		// that assignment alone is ignored.
		{name: "Environment='s \\u and \\U", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/\\u00e9t\\u00E9\\U0001F600\\U0010fffd\n"),
		}, want: "/srv/\u00e9t\u00e9\U0001F600\U0010FFFD"},
		{name: "ExecStart='s \\u and \\U", unit: true, env: "-", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent \"--state-dir=/srv/\\u00e9t\\U0001f600\"\n"),
		}, want: "/srv/\u00e9t\U0001F600"},
		{name: "ExecStart='s \\u makes a surrogate as it is", unit: true, env: "-", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=/srv/\\ud800\n"),
		}, want: "/srv/\xed\xa0\x80"},
		{name: "an Environment= value not UTF-8 is ignored, alone", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\ud800 UNDERLAY_LABEL=x\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\xff\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\uFDD0 UNDERLAY_LABEL=y\n"),
		}, want: "/srv/a"},
		// systemd checks an assignment once its specifiers are resolved:
		// a host name (%H) may hold any byte; a specifier not resolved
		// here may make a character of the bytes around it.
		{name: "%H in Environment=", host: "h\u00e9", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\nEnvironment=UNDERLAY_STATE_DIR=/srv/%H\n"),
		}, want: "/srv/h\u00e9"},
		{name: "%H with a backslash, as it is", host: `h\tx\\`, unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/%H\n"),
		}, want: `/srv/h\tx\\`},
		// No host name ("(none)", the kernel's before one is set): systemd's
		// %H is its default host name (os-release's DEFAULT_HOSTNAME, or
		// its own), not known here.
		{name: "%H with no host name", host: "(none)", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\nEnvironment=UNDERLAY_STATE_DIR=/srv/%H\n"),
		}, says: "Environment= sets UNDERLAY_STATE_DIR with %H, not resolved here"},
		{name: "%H not UTF-8 in Environment=: ignored", host: "h\xff", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\nEnvironment=UNDERLAY_STATE_DIR=/srv/%H UNDERLAY_LABEL=x\n"),
		}, want: "/srv/a"},
		{name: "an unresolved specifier between a character's bytes", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\xc3%i\\xa9\n"),
		}, says: "Environment= sets UNDERLAY_STATE_DIR with %i, not resolved here"},
		{name: "a bad \\U ends Environment='s words", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\U00110000\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\UD800dc00\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\U0000FFFE\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\u12\n"),
		}, want: "/srv/a"},
		{name: "no NUL from an escape", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\x00b\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\000b\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\u0000b\nEnvironment=UNDERLAY_STATE_DIR=/srv/\\U00000000b\n"),
		}, want: "/srv/a"},
		{name: "ExecStart='s bad \\U: systemd cannot parse it", unit: true, env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=/srv/\\U0000d800\n"),
		}, says: "systemd cannot parse its ExecStart="},
		{name: "ExecStart='s NUL: systemd cannot parse it", unit: true, env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=/srv/\\x00\n"),
		}, says: "systemd cannot parse its ExecStart="},
		{name: "a directory specifier", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=%S/underlay-b\n"),
		}, want: "/var/lib/underlay-b"},
		{name: "the directory specifiers", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=%S:%t:%C:%L:%E:%T:%V\n"),
		}, want: "/var/lib:/run:/var/cache:/var/log:/etc:/tmp:/var/tmp"},
		// Other specifiers systemd resolves from the running system
		// (%h %m %i...) or refuses: a value they make is not known, and
		// not guessed at.
		{name: "an unresolved specifier", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=%h/underlay\n"),
		}, says: "Environment= sets UNDERLAY_STATE_DIR with %h, not resolved here"},
		{name: "another variable's unresolved specifier", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_LABEL=%m UNDERLAY_STATE_DIR=/srv/a%/b\n"),
		}, want: "/srv/a%/b"},
		{name: "an unresolved specifier replaced", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\n", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=%h/underlay\n"),
		}, want: "/srv/file"},
		{name: "an unresolved specifier naming a variable", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a U%i=x\n"),
		}, says: "Environment= names a variable with %i"},
		// Names as systemd's env_name_is_valid (v252) takes them:
		// letters, digits and _, no leading digit; an assignment of
		// another is ignored (Environment=, an environment file), and
		// ${NAME} and $NAME of ExecStart= find nothing set.
		{name: "an invalid name in Environment=", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a A.B=/srv/b\nExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=${A.B}\n"),
		}, says: "ExecStart= uses $A.B, which its files do not set"},
		{name: "a name with a leading digit in Environment=", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=1DIR=/srv/b\nExecStart=\nExecStart=/usr/bin/underlay agent --state-dir $1DIR\n"),
		}, says: "ExecStart= uses $1DIR, which its files do not set"},
		{name: "an invalid name in an environment file", unit: true, env: "A-B=/srv/b\nUNDERLAY_STATE_DIR=/srv/a\n", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=${A-B}\n"),
		}, says: "ExecStart= uses $A-B, which its files do not set"},
		{name: "a blank inside a name in an environment file", unit: true, env: "UNDERLAY STATE_DIR=/srv/b\n", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent \"--state-dir=${UNDERLAY STATE_DIR}\"\n"),
		}, says: "ExecStart= uses $UNDERLAY STATE_DIR, which its files do not set"},
		{name: "an unresolved specifier in a name that cannot be valid", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a U-%i=x 1%i=y\n"),
		}, want: "/srv/a"},
		{name: "an unresolved specifier naming an environment file", unit: true, env: "UNDERLAY_STATE_DIR=/srv/a\n", files: map[string]string{
			override: dropIn("EnvironmentFile=-@/etc/underlay/%m.env\n"),
		}, says: "/etc/underlay/%m.env has %m, not resolved here"},
		{name: "an environment file after an unresolved one", unit: true, env: "-", files: map[string]string{
			override:                dropIn("EnvironmentFile=-@/etc/underlay/%m.env\nEnvironmentFile=@/etc/underlay/more.env\n"),
			"etc/underlay/more.env": "UNDERLAY_STATE_DIR=/srv/more\n",
		}, want: "/srv/more"},
		{name: "an unresolved specifier in ExecStart='s --state-dir", unit: true, env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir %h/underlay\n"),
		}, says: "ExecStart= gives --state-dir with %h, not resolved here"},
		{name: "an unresolved specifier in a variable of ExecStart=", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=DIR=%h\nExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=${DIR}\n"),
		}, says: "ExecStart= uses $DIR, and Environment= sets DIR with %h, not resolved here"},
		{name: "an unresolved specifier elsewhere in ExecStart=", unit: true, env: "-", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=%m --label %m --state-dir /srv/x\n"),
		}, want: "/srv/x"},
		{name: "Environment= in another section", unit: true, env: "-", files: map[string]string{
			override: "[Install]\nEnvironment=UNDERLAY_STATE_DIR=/srv/no\n",
		}},
		{name: "an empty Environment= resets", unit: true, env: "-", files: map[string]string{
			vendor + "10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\n"),
			override:             dropIn("Environment=\n"),
		}},
		{name: "drop-ins in name order, /etc's first", unit: true, env: "-", files: map[string]string{
			vendor + "10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\n"),
			vendor + "20-b.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/b\n"),
			"etc/systemd/system/underlay-agent.service.d/20-b.conf": dropIn("Environment=UNDERLAY_LABEL=x\n"),
		}, want: "/srv/a"},
		// systemd 239 also reads the drop-ins of the unit's prefix
		// (underlay-.service.d), 244 those of every service
		// (service.d): names sorted across all of them, the first of
		// each name per search-path directory, the unit's before its
		// prefix's; every service's after them all.
		{name: "the prefix's drop-in", unit: true, env: "-", files: map[string]string{
			"usr/lib/systemd/system/underlay-.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/prefix\n"),
		}, want: "/srv/prefix"},
		{name: "every service's drop-in", unit: true, env: "-", files: map[string]string{
			"etc/systemd/system/service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/all\n"),
		}, want: "/srv/all"},
		{name: "drop-in names sorted across their directories", unit: true, env: "-", files: map[string]string{
			"run/systemd/system/service.d/30-c.conf":                dropIn("Environment=UNDERLAY_STATE_DIR=/srv/c\n"),
			"etc/systemd/system/underlay-.service.d/20-b.conf":      dropIn("Environment=UNDERLAY_STATE_DIR=/srv/b\n"),
			"etc/systemd/system/underlay-agent.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/a\n"),
		}, want: "/srv/c"},
		{name: "/etc's prefix drop-in masks /usr/lib's unit drop-in of its name", unit: true, env: "-", files: map[string]string{
			"etc/systemd/system/underlay-.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/prefix\n"),
			vendor + "10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/unit\n"),
		}, want: "/srv/prefix"},
		{name: "the unit's drop-in masks its prefix's of its name", unit: true, env: "-", files: map[string]string{
			"usr/lib/systemd/system/underlay-.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/prefix\n"),
			vendor + "10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/unit\n"),
		}, want: "/srv/unit"},
		{name: "any unit drop-in masks /etc's service.d of its name", unit: true, env: "-", files: map[string]string{
			"etc/systemd/system/service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/all\n"),
			vendor + "10-a.conf":                     dropIn("Environment=UNDERLAY_STATE_DIR=/srv/unit\n"),
		}, want: "/srv/unit"},
		{name: "Debian 12's systemd reads both", systemd: "systemd 252 (252.39-1~deb12u1)", unit: true, env: "-", files: map[string]string{
			"etc/systemd/system/service.d/20-b.conf":           dropIn("Environment=UNDERLAY_STATE_DIR=/srv/all\n"),
			"etc/systemd/system/underlay-.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/prefix\n"),
		}, want: "/srv/all"},
		{name: "no service.d before systemd 244", systemd: "systemd 243 (243)", unit: true, env: "-", files: map[string]string{
			"etc/systemd/system/service.d/20-b.conf":           dropIn("Environment=UNDERLAY_STATE_DIR=/srv/all\n"),
			"etc/systemd/system/underlay-.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/prefix\n"),
		}, want: "/srv/prefix"},
		{name: "no prefix drop-ins before systemd 239", systemd: "systemd 238 (238)", unit: true, env: "-", files: map[string]string{
			"etc/systemd/system/underlay-.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/prefix\n"),
		}},
		// systemd's unit search path (systemd.unit(5), path-lookup.c):
		// set-property's system.control, transient units and the early
		// generator's before /etc; the portable services' attached
		// units after /etc's and /run's; the generator's before
		// /usr/local/lib, the late one's after the package's. The first
		// unit file on it counts, its drop-ins as the others'.
		{name: "set-property's drop-in", unit: true, env: "-", files: map[string]string{
			"etc/systemd/system.control/underlay-agent.service.d/50-Environment.conf": "[Service]\nEnvironment=UNDERLAY_STATE_DIR=/srv/control\n",
		}, want: "/srv/control"},
		{name: "/run's system.control drop-in masks /etc's of its name", unit: true, env: "-", files: map[string]string{
			"run/systemd/system.control/underlay-agent.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/control\n"),
			"etc/systemd/system/underlay-agent.service.d/10-a.conf":         dropIn("Environment=UNDERLAY_STATE_DIR=/srv/etc\n"),
		}, want: "/srv/control"},
		{name: "a transient unit file wins over /etc's", unit: true, env: "-", files: map[string]string{
			"run/systemd/transient/underlay-agent.service": "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/transient\n",
			"etc/systemd/system/underlay-agent.service":    "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/etc\n",
		}, want: "/srv/transient"},
		{name: "a transient unit's drop-in", unit: true, env: "-", files: map[string]string{
			"run/systemd/transient/underlay-agent.service.d/50-x.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/transient\n"),
		}, want: "/srv/transient"},
		{name: "the early generator's unit file wins over /etc's", unit: true, env: "-", files: map[string]string{
			"run/systemd/generator.early/underlay-agent.service": "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/early\n",
			"etc/systemd/system/underlay-agent.service":          "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/etc\n",
		}, want: "/srv/early"},
		{name: "an attached unit file: after /etc's, before /run's", unit: true, env: "-", files: map[string]string{
			"etc/systemd/system.attached/underlay-agent.service": "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/attached\n",
			"run/systemd/system/underlay-agent.service":          "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/run\n",
		}, want: "/srv/attached"},
		{name: "/etc's unit file wins over an attached one", unit: true, env: "-", files: map[string]string{
			"etc/systemd/system/underlay-agent.service":          "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/etc\n",
			"etc/systemd/system.attached/underlay-agent.service": "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/attached\n",
		}, want: "/srv/etc"},
		{name: "the generator's unit file: after /run's attached, before /usr/local/lib's", unit: true, env: "-", files: map[string]string{
			"run/systemd/generator/underlay-agent.service":        "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/generator\n",
			"usr/local/lib/systemd/system/underlay-agent.service": "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/local\n",
		}, want: "/srv/generator"},
		{name: "the late generator's unit file loses to the package's", unit: true, env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			"run/systemd/generator.late/underlay-agent.service": "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/late\n",
		}, want: "/srv/env"},
		{name: "the late generator's unit file, alone", env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			"run/systemd/generator.late/underlay-agent.service": "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/late\n",
		}, want: "/srv/late"},
		{name: "/run's attached drop-in masks the generator's of its name", unit: true, env: "-", files: map[string]string{
			"run/systemd/generator/underlay-agent.service.d/10-a.conf":       dropIn("Environment=UNDERLAY_STATE_DIR=/srv/generator\n"),
			"run/systemd/system.attached/underlay-agent.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/attached\n"),
		}, want: "/srv/attached"},
		{name: "the late generator's prefix drop-in", unit: true, env: "-", files: map[string]string{
			"run/systemd/generator.late/underlay-.service.d/90-z.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/late\n"),
			vendor + "10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/unit\n"),
		}, want: "/srv/late"},
		{name: "the early generator's drop-in masks /etc's service.d of its name", unit: true, env: "-", files: map[string]string{
			"run/systemd/generator.early/service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/early\n"),
			"etc/systemd/system/service.d/10-a.conf":          dropIn("Environment=UNDERLAY_STATE_DIR=/srv/etc\n"),
		}, want: "/srv/early"},
		// Debian 12's systemd (252, built for a split /usr) reads its
		// own unit directory, /lib/systemd/system, before
		// /usr/lib/systemd/system; where /usr is merged they are one.
		{name: "/lib's unit file before /usr/lib's", unit: true, env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			"usr/lib/systemd/system/underlay-agent.service": "[Service]\nExecStart=/usr/bin/underlay agent --state-dir /srv/usr\n",
		}, want: "/srv/env"},
		{name: "/lib's drop-in masks /usr/lib's of its name", unit: true, env: "-", files: map[string]string{
			"lib/systemd/system/underlay-agent.service.d/10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/lib\n"),
			vendor + "10-a.conf": dropIn("Environment=UNDERLAY_STATE_DIR=/srv/usr\n"),
		}, want: "/srv/lib"},
		{name: "the environment file wins over Environment=", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\n", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/drop-in\n"),
		}, want: "/srv/file"},
		{name: "a drop-in's environment file", unit: true, env: "UNDERLAY_STATE_DIR=/srv/a\n", files: map[string]string{
			override:                dropIn("EnvironmentFile=@/etc/underlay/more.env\n"),
			"etc/underlay/more.env": "UNDERLAY_STATE_DIR=/srv/more\n",
		}, want: "/srv/more"},
		// systemd's load_env_file fails on a key or value not UTF-8,
		// and with it the whole file: left out with a "-" (as the
		// unit's agent.env), else the agent does not start.
		{name: "an environment file not UTF-8 is ignored whole", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\nUNDERLAY_LABEL=\xff\n", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/unit\n"),
		}, want: "/srv/unit"},
		{name: "an environment file's key not UTF-8", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\nLABEL\xc3=x\n", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/unit\n"),
		}, want: "/srv/unit"},
		{name: "an environment file not UTF-8 after another", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\n", files: map[string]string{
			override:                dropIn("EnvironmentFile=-@/etc/underlay/more.env\n"),
			"etc/underlay/more.env": "UNDERLAY_STATE_DIR=/srv/more\nUNDERLAY_LABEL='\xed\xa0\x80'\n",
		}, want: "/srv/file"},
		{name: "not UTF-8 where no assignment is", unit: true, env: "# \xff\n\xff\nUNDERLAY_STATE_DIR=/srv/file\n", want: "/srv/file"},
		{name: "agent.env not UTF-8, no unit", env: "UNDERLAY_STATE_DIR=/srv/file\nUNDERLAY_LABEL=\xff\n"},
		{name: "a required environment file not UTF-8: the agent does not start", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\n", files: map[string]string{
			override:                dropIn("EnvironmentFile=@/etc/underlay/more.env\nExecStart=\nExecStart=/usr/bin/underlay agent --state-dir /srv/exec\n"),
			"etc/underlay/more.env": "UNDERLAY_LABEL=\\\xff\n",
		}, says: "systemd cannot load its EnvironmentFile="},
		// An EnvironmentFile= systemd cannot read: left out with a "-",
		// else the agent does not start (exec_context_load_environment);
		// a relative path is no setting (config_parse_unit_env_file); a
		// glob pattern systemd expands is not read here.
		{name: "a missing environment file with -", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=UNDERLAY_STATE_DIR=/srv/unit\nEnvironmentFile=-@/etc/underlay/missing.env\n"),
		}, want: "/srv/unit"},
		{name: "a missing required environment file: the agent does not start", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\n", files: map[string]string{
			override: dropIn("EnvironmentFile=@/etc/underlay/missing.env\n"),
		}, says: "systemd cannot load its EnvironmentFile="},
		// A directory: systemd's load_env_file cannot read it (EISDIR),
		// as a missing file.
		{name: "agent.env a directory, left out", unit: true, env: "-", files: map[string]string{
			"etc/underlay/agent.env/x": "UNDERLAY_STATE_DIR=/srv/dir\n",
			override:                   dropIn("Environment=UNDERLAY_STATE_DIR=/srv/unit\n"),
		}, want: "/srv/unit"},
		{name: "a required environment file a directory: the agent does not start", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\n", files: map[string]string{
			"etc/underlay/it's.env/x": "UNDERLAY_STATE_DIR=/srv/dir\n",
			override:                  dropIn("EnvironmentFile=@/etc/underlay/it's.env\n"),
		}, says: "it's.env (a directory), nor start the agent"},
		{name: "a relative environment file is no setting", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\n", files: map[string]string{
			override: dropIn("EnvironmentFile=missing.env\n"),
		}, want: "/srv/file"},
		{name: "an environment file's glob pattern", unit: true, env: "UNDERLAY_STATE_DIR=/srv/file\n", files: map[string]string{
			override:                dropIn("EnvironmentFile=@/etc/underlay/m*.env\n"),
			"etc/underlay/more.env": "UNDERLAY_STATE_DIR=/srv/more\n",
		}, says: "EnvironmentFile="},
		{name: "an /etc unit file replaces the package's", unit: true, env: "UNDERLAY_STATE_DIR=/srv/a\n", files: map[string]string{
			"etc/systemd/system/underlay-agent.service": "[Service]\nExecStart=/usr/bin/underlay agent\n",
		}},
		// ExecStart=: an empty one resets the list, the last command
		// counts; its --state-dir wins over UNDERLAY_STATE_DIR, as in
		// the agent. Its words as systemd's config_parse_exec reads
		// them, then $NAME words split and ${NAME} replaced from the
		// unit's environment, as systemd does at the agent's start.
		{name: "a drop-in's ExecStart=", unit: true, env: "-", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir /srv/exec\n"),
		}, want: "/srv/exec"},
		{name: "ExecStart='s --state-dir wins over UNDERLAY_STATE_DIR", unit: true, env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=/srv/flag\n"),
		}, want: "/srv/flag"},
		{name: "the last ExecStart= counts", unit: true, env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			vendor + "10-a.conf": dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir /srv/a\n"),
			override:             dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --log-level debug\n"),
		}, want: "/srv/env"},
		{name: "the last --state-dir counts, none after --", unit: true, env: "-", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay --state-dir /srv/a agent --state-dir=/srv/b -- --state-dir /srv/c\n"),
		}, want: "/srv/b"},
		{name: "ExecStart='s quotes, escapes and specifiers", unit: true, env: "-", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent \"--state-dir=%S/my dir\\x41\"\n"),
		}, want: "/var/lib/my dirA"},
		{name: "ExecStart='s last command", unit: true, env: "-", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir /srv/a ; /usr/bin/underlay agent --label \\; --state-dir=/srv/b\n"),
		}, want: "/srv/b"},
		{name: "ExecStart= with @: the second word is argv[0]", unit: true, env: "-", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=@-/usr/bin/underlay --state-dir=/srv/argv0 agent\n"),
		}},
		{name: "a variable as a word of ExecStart=", unit: true, env: "OPTS=--label x  --state-dir '/srv/my opts'\n", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent $OPTS\n"),
		}, want: "/srv/my opts"},
		{name: "a braced variable in a word of ExecStart=", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=DIR=/srv/d\nExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=${DIR}/x\n"),
		}, want: "/srv/d/x"},
		{name: "an unbraced variable in a word of ExecStart= is kept, two dollars are one", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=DIR=/srv/d\nExecStart=\nExecStart=/usr/bin/underlay agent --state-dir=$DIR$$\n"),
		}, want: "$DIR$"},
		{name: "ExecStart= with : expands nothing", unit: true, env: "-", files: map[string]string{
			override: dropIn("Environment=DIR=/srv/d\nExecStart=\nExecStart=:/usr/bin/underlay agent --state-dir=${DIR}\n"),
		}, want: "${DIR}"},
		{name: "ExecStart= with a variable its files do not set", unit: true, env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent $OPTS\n"),
		}, says: "ExecStart= uses $OPTS, which its files do not set"},
		{name: "an ExecStart= systemd cannot parse", unit: true, env: "UNDERLAY_STATE_DIR=/srv/env\n", files: map[string]string{
			override: dropIn("ExecStart=\nExecStart=/usr/bin/underlay agent --state-dir \"/srv/open\n"),
		}, says: "systemd cannot parse its ExecStart="},
		// A running agent: what systemd gave it.
		{name: "a running agent's environment", unit: true, env: "UNDERLAY_STATE_DIR=/srv/edited-since\n", pid: "4242", files: runningAgent("/usr/bin/underlay\x00agent\x00", "LANG=C\x00UNDERLAY_STATE_DIR=/srv/running\x00UNDERLAY_NODE=h\x00"), want: "/srv/running"},
		{name: "a running agent's default", unit: true, env: "UNDERLAY_STATE_DIR=/srv/edited-since\n", pid: "4242", files: runningAgent("/usr/bin/underlay\x00agent\x00", "LANG=C\x00")},
		{name: "a running agent's flag", unit: true, env: "-", pid: "4242", files: runningAgent("/usr/bin/underlay\x00agent\x00--state-dir\x00/srv/flag\x00", "UNDERLAY_STATE_DIR=/srv/env\x00"), want: "/srv/flag"},
		{name: "a running agent's flag with =", unit: true, env: "-", pid: "4242", files: runningAgent("/usr/bin/underlay\x00agent\x00--state-dir=/srv/flag\x00", "UNDERLAY_STATE_DIR=/srv/env\x00"), want: "/srv/flag"},
		{name: "a running agent's, in cgroup v1", unit: true, env: "-", pid: "4242", files: map[string]string{
			"proc/4242/cgroup":  "12:pids:/system.slice/underlay-agent.service\n1:name=systemd:/system.slice/underlay-agent.service\n",
			"proc/4242/cmdline": "/usr/bin/underlay\x00agent\x00--state-dir=/srv/flag\x00",
			"proc/4242/environ": "",
		}, want: "/srv/flag"},
		// A value holding a newline is one value, not two entries.
		{name: "a newline in a running agent's variable", unit: true, env: "-", pid: "4242", files: runningAgent("/usr/bin/underlay\x00agent\x00--label\x00x\n--state-dir\n/srv/evil\x00", "UNDERLAY_LABEL=x\nUNDERLAY_STATE_DIR=/srv/evil\x00")},
		{name: "a newline in a running agent's --state-dir", unit: true, env: "-", pid: "4242", files: runningAgent("/usr/bin/underlay\x00agent\x00--state-dir=/srv/a\nb\x00", ""), want: "/srv/a|b"},
		// MainPID read, then the agent gone and its PID another's.
		{name: "not the agent's process", unit: true, env: "UNDERLAY_STATE_DIR=/srv/a\n", pid: "4242", files: map[string]string{
			"proc/4242/cgroup":  "0::/user.slice/user-1000.slice/session-2.scope\n",
			"proc/4242/cmdline": "/usr/bin/other\x00--state-dir\x00/srv/other\x00",
			"proc/4242/environ": "UNDERLAY_STATE_DIR=/srv/other\x00",
		}, want: "/srv/a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMaintainer(t)
			// Each argument in brackets: a directory may hold a blank;
			// a newline in one is logged as "|".
			stub := "#!/bin/sh\n{ printf underlay; printf ' [%s]' \"$@\" | tr '\\n' '|'; echo; } >>\"$CALLS\"\n"
			if err := os.WriteFile(m.path("bin/underlay"), []byte(stub), 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.env != "-" {
				m.write("etc/underlay/agent.env", tc.env)
			}
			if tc.unit {
				m.write("lib/systemd/system/underlay-agent.service", strings.ReplaceAll(string(unit), "/etc/underlay/", m.path("etc/underlay")+"/"))
			}
			for p, content := range tc.files {
				m.write(p, strings.ReplaceAll(content, "@/", m.root+"/"))
			}
			if tc.pid != "" {
				m.write("mainpid", tc.pid+"\n")
			}
			if tc.host != "" {
				m.write("bin/uname", "#!/bin/sh\nprintf '%s\\n' '"+tc.host+"'\n")
				if err := os.Chmod(m.path("bin/uname"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tc.systemd != "" {
				m.write("systemd", tc.systemd+"\n+PAM +AUDIT\n")
			}
			want := "[" + tc.want + "]"
			switch tc.want {
			case "":
				want = "[" + m.path("var/lib/underlay") + "]"
			case "[]":
				want = "[]"
			}
			want = "underlay [agent] [cleanup] [--state-dir] " + want
			if calls := m.run("prerm", "remove"); !slices.Contains(calls, want) {
				t.Errorf("agent.env %q, %q: prerm remove ran %q, want %q", tc.env, tc.files, calls, want)
			}
			if !strings.Contains(m.out, tc.says) {
				t.Errorf("agent.env %q, %q: prerm remove said %q, want %q", tc.env, tc.files, m.out, tc.says)
			}
			if _, err := os.Stat(m.path("calls.ran")); err == nil {
				t.Errorf("agent.env %q was run by the prerm", tc.env)
			}
		})
	}
}

// TestPrermRunningAgentNoAwk: what a running agent tells (its command
// line, then its environment) the prerm reads in shell alone: with an
// awk that fails, it passes the agent's own --state-dir to cleanup, and
// runs no awk for it.
func TestPrermRunningAgentNoAwk(t *testing.T) {
	for _, tc := range []struct {
		name, cmdline, environ string
		want                   string // "": the default, under the sandbox
	}{
		{name: "the last flag, none after --", cmdline: "/usr/bin/underlay\x00agent\x00--state-dir\x00/srv/a\x00--state-dir=/srv/b c\x00--\x00--state-dir=/srv/no\x00", environ: "UNDERLAY_STATE_DIR=/srv/env\x00", want: "/srv/b c"},
		{name: "a flag's value taken as it is", cmdline: "/usr/bin/underlay\x00agent\x00--state-dir\x00--\x00", environ: "UNDERLAY_STATE_DIR=/srv/env\x00", want: "--"},
		{name: "the environment, a newline in it", cmdline: "/usr/bin/underlay\x00agent\x00--label\x00x\n--state-dir=/srv/evil\x00", environ: "A=1\x00UNDERLAY_STATE_DIR=/srv/a\nb \\x\x00UNDERLAY_STATE_DIR_OLD=/srv/old\x00", want: "/srv/a|b \\x"},
		{name: "no NUL after the last", cmdline: "/usr/bin/underlay\x00agent\x00--state-dir=/srv/end", environ: "UNDERLAY_STATE_DIR=/srv/env", want: "/srv/end"},
		{name: "no NUL after the last variable", cmdline: "/usr/bin/underlay\x00agent\x00", environ: "A=1\x00UNDERLAY_STATE_DIR=/srv/env", want: "/srv/env"},
		{name: "neither", cmdline: "/usr/bin/underlay\x00agent\x00--state-dir\x00", environ: "UNDERLAY_STATE_DIR_OLD=/srv/old\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMaintainer(t)
			stub := "#!/bin/sh\n{ printf underlay; printf ' [%s]' \"$@\" | tr '\\n' '|'; echo; } >>\"$CALLS\"\n"
			if err := os.WriteFile(m.path("bin/underlay"), []byte(stub), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(m.path("bin/awk"), []byte("#!/bin/sh\necho awk >>\"$CALLS\"\nexit 2\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			m.write("mainpid", "4242\n")
			for p, content := range runningAgent(tc.cmdline, tc.environ) {
				m.write(p, content)
			}
			want := tc.want
			if want == "" {
				want = m.path("var/lib/underlay")
			}
			want = "underlay [agent] [cleanup] [--state-dir] [" + want + "]"
			calls := m.run("prerm", "remove")
			if !slices.Contains(calls, want) {
				t.Errorf("prerm remove ran %q, want %q", calls, want)
			}
			if i := slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, "awk") }); i >= 0 {
				t.Errorf("prerm remove ran %q for a running agent", calls[i])
			}
		})
	}
}

// TestPurgeMovedStateDir: dpkg removes agent.env, a conffile, before
// postrm purge runs, so purge could not know a --state-dir moved by
// UNDERLAY_STATE_DIR and left the agent's state there. The prerm now
// records it (remove always runs before purge), and purge removes the
// agent's files there, nothing else, and the record.
// TestPrermLinksLeft: a removal whose cleanup leaves links (running
// containers use them, or dockerd did not answer) says how to delete them
// once the package is gone, since its `underlay agent cleanup` goes with it.
func TestPrermLinksLeft(t *testing.T) {
	for _, tc := range []struct {
		name  string
		exit  int
		wants bool
	}{
		{"cleanup left links", 1, true},
		{"cleanup removed all", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMaintainer(t)
			stub := fmt.Sprintf("#!/bin/sh\necho \"underlay $*\" >>\"$CALLS\"\necho 'left eth1.40: in use by container web.1 (network web)'\nexit %d\n", tc.exit)
			if err := os.WriteFile(m.path("bin/underlay"), []byte(stub), 0o755); err != nil {
				t.Fatal(err)
			}
			m.run("prerm", "remove")
			said := strings.Contains(m.out, "ip link delete")
			if said != tc.wants {
				t.Errorf("prerm remove, cleanup exiting %d, said:\n%s\nwant the advice to delete the links left by hand: %t", tc.exit, m.out, tc.wants)
			}
		})
	}
}

func TestPurgeMovedStateDir(t *testing.T) {
	m := newMaintainer(t)
	m.write("etc/underlay/agent.env", "UNDERLAY_STATE_DIR="+m.path("srv/state")+"\n")
	state := []string{"srv/state/node-id", "srv/state/link-owner", "srv/state/ipam-freed-1.json", "srv/state/vlan-parents.json", "var/lib/underlay/node-id"}
	for _, f := range state {
		m.write(f, "x\n")
	}
	m.write("srv/state/keep", "not the package's\n")

	m.run("prerm", "remove")
	m.run("postrm", "remove")
	if err := os.Remove(m.path("etc/underlay/agent.env")); err != nil { // as dpkg does
		t.Fatal(err)
	}
	m.run("postrm", "purge")
	for _, f := range state {
		if _, ok := m.read(f); ok {
			t.Errorf("purge left %s", f)
		}
	}
	if _, ok := m.read("srv/state/keep"); !ok {
		t.Error("purge deleted srv/state/keep, not the package's")
	}
	if _, err := os.Stat(m.path("var/lib/underlay")); !os.IsNotExist(err) {
		t.Errorf("purge left var/lib/underlay (%v)", err)
	}
}

// TestPurgeRefusesStateDir: the recorded --state-dir is purged only when
// it is absolute, not /, and reached through no symbolic link, . or ..;
// else nothing of it is removed. The default's record is none.
func TestPurgeRefusesStateDir(t *testing.T) {
	for _, tc := range []struct {
		name   string
		record string // the recorded directory; @ is the sandbox's root
		state  string // where the agent's files are, under the root
	}{
		{"empty", "\n", "node-id"},
		{"relative", "srv/state\n", "srv/state"},
		{"root", "/\n", "srv/state"},
		{"a symlink", "@/srv/link\n", "srv/real"},
		{"a symlink on its way", "@/srv/linkdir/state\n", "srv/real/state"},
		{"..", "@/srv/other/../real\n", "srv/real"},
		{"two lines", "@/srv/real\n@/srv/real\n", "srv/real"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMaintainer(t)
			for _, d := range []string{"srv/real/state", "srv/other"} {
				if err := os.MkdirAll(m.path(d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for link, target := range map[string]string{"srv/link": "real", "srv/linkdir": "real"} {
				if err := os.Symlink(target, m.path(link)); err != nil {
					t.Fatal(err)
				}
			}
			files := []string{tc.state + "/node-id", tc.state + "/link-owner"}
			for _, f := range files {
				m.write(f, "x\n")
			}
			m.write("var/lib/underlay/package-state-dir", strings.ReplaceAll(tc.record, "@/", m.root+"/"))
			m.run("postrm", "purge")
			for _, f := range files {
				if _, ok := m.read(f); !ok {
					t.Errorf("record %q: purge deleted %s", tc.record, f)
				}
			}
			if _, ok := m.read("var/lib/underlay/package-state-dir"); ok {
				t.Error("purge left its record")
			}
		})
	}
	m := newMaintainer(t)
	m.write("etc/underlay/agent.env", "UNDERLAY_STATE_DIR="+m.path("var/lib/underlay")+"/\n")
	m.write("var/lib/underlay/package-state-dir", "/srv/stale\n")
	m.run("prerm", "remove")
	if got, ok := m.read("var/lib/underlay/package-state-dir"); ok {
		t.Errorf("prerm remove with the default state directory recorded %q", got)
	}
}

// TestAgentNodePolicy: a node's policy is agent.hcl with writes under the
// node-scoped prefixes narrowed to that node's keys, and nothing else
// changed; a value that is not a node's ID or name is refused, named.
func TestAgentNodePolicy(t *testing.T) {
	const id, name = "x7kq2m9v0c4n8b1z5d3f6h2j0", "web-1"
	got, err := AgentNodePolicy(id, name)
	if err != nil {
		t.Fatal(err)
	}
	want := policyRules(t, "agent.hcl", AgentPolicy)
	for _, p := range []string{netspec.NodesKVPrefix, inventory.KVPrefix, taskmetrics.KVPrefix, doctor.KVPrefix, unregistered.KVPrefix} {
		want[fmt.Sprintf("key_prefix %q", p)] = "read"
	}
	for _, k := range []string{
		netspec.NodesKVPrefix + id,                      // its facts: the identity's claim and heartbeat
		inventory.KVPrefix + id,                         // its inventory
		taskmetrics.IDPrefix + id, doctor.IDPrefix + id, // its reports
		taskmetrics.KVPrefix + name, doctor.KVPrefix + name, // an older agent's, which it retires
		unregistered.KVPrefix + id, // the tasks it leaves out of Consul
	} {
		want[fmt.Sprintf("key %q", k)] = "write"
	}
	if d := cmp.Diff(want, policyRules(t, "node policy", got)); d != "" {
		t.Errorf("the node's policy grants other than agent.hcl narrowed to the node (-want +got):\n%s", d)
	}
	for _, tc := range []struct{ id, name, bad string }{
		{"", name, `swarm node ID ""`},
		{"abc/def", name, `swarm node ID "abc/def"`},
		{`abc" {`, name, `swarm node ID "abc\" {"`},
		{"X7KQ2M9V0C4N8B1Z5D3F6H2J0", name, `swarm node ID "X7KQ2M9V0C4N8B1Z5D3F6H2J0"`},
		{id + "0", name, `swarm node ID "` + id + `0": 26 bytes, want 25`},
		{id, "..", `node name ".."`},
		{id, "a\nkey_prefix", `node name "a\nkey_prefix"`},
	} {
		if _, err := AgentNodePolicy(tc.id, tc.name); err == nil || !strings.Contains(err.Error(), tc.bad) {
			t.Errorf("AgentNodePolicy(%q, %q): %v, want an error naming %s", tc.id, tc.name, err, tc.bad)
		}
	}
}
