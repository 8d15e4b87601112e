package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestControlDaemon checks what `lab up` runs on managers: underlay control
// on the management IP (which the machine reaches), advertising it, with
// leader election, the lab's token file and peer secret, files under the
// lab's state directory so that `lab down` finds the process by its command
// line.
func TestControlDaemon(t *testing.T) {
	root := t.TempDir()
	cfg := Config{Name: "demo", Nodes: 2, Managers: 2, UnderlayBin: "/usr/bin/underlay"}.withDefaults()
	p, err := newPlan(root, cfg, netip.MustParsePrefix("172.31.4.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	d := p.control(&p.nodes[1])
	want := []string{"/usr/bin/underlay", "control", "--listen", "172.31.4.12:8000", "--advertise", "172.31.4.12:8000",
		"--leader-election", "--token-file", filepath.Join(root, "demo", "control.tokens"),
		"--peer-secret-file", filepath.Join(root, "demo", "control.peer-secret")}
	if !slices.Equal(d.args, want) {
		t.Errorf("control args %q, want %q", d.args, want)
	}
	if d.key != "underlay control" || d.key == p.agent(&p.nodes[1]).key {
		t.Errorf("control's key %q must name it apart from the agent's", d.key)
	}
	if !underDir(p.dir())(d.args) {
		t.Error("control's command line does not name the lab's directory: lab down would not find it")
	}

	if err := os.MkdirAll(p.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ControlTokensFile, ControlPeerSecretFile} {
		made, err := p.secret(f)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(p.dir(), f)
		tok, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(path)
		if strings.TrimSpace(string(tok)) != made || len(made) != 32 || st.Mode().Perm() != 0o600 {
			t.Errorf("%s %q (mode %v): want 32 hex digits, readable by root only", f, tok, st.Mode().Perm())
		}
		if again, err := p.secret(f); err != nil || again != made {
			t.Errorf("a second lab up changed %s: %q, %v", f, again, err)
		}
	}
}
