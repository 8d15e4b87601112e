package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestControlDaemon checks what `lab up` runs on managers: underlay control
// on the management IP (which the machine reaches), advertising it, with
// leader election, the lab's token file and peer secret, the managers as
// its --peers (it forwards to no other address), files under the
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
		"--peer-secret-file", filepath.Join(root, "demo", "control.peer-secret"),
		"--peers", "172.31.4.11:8000,172.31.4.12:8000"}
	if !slices.Equal(d.args, want) {
		t.Errorf("control args %q, want %q", d.args, want)
	}
	if d.key != "underlay control" || d.key == p.agent(&p.nodes[1]).key {
		t.Errorf("control's key %q must name it apart from the agent's", d.key)
	}
	if args := daemonArgs(42, p.nodeDir(&p.nodes[1]), d); !ownProc(p.dir())(args) {
		t.Errorf("control's command line %q is not the lab's (ownProc): lab down would not find it", args)
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

// TestSecretReplacesEmptyFile: a secret file left empty (a lab up killed
// between creating and writing it, or a crash before the data reached the
// disk) is made again, not taken for a secret: control refuses an empty
// token file, so every later up would start a control that cannot run.
func TestSecretReplacesEmptyFile(t *testing.T) {
	p, err := newPlan(t.TempDir(), Config{Name: "demo", Nodes: 1, UnderlayBin: "/usr/bin/underlay"}.withDefaults(), netip.MustParsePrefix("172.31.4.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ControlTokensFile, ControlPeerSecretFile} {
		path := filepath.Join(p.dir(), f)
		if err := os.WriteFile(path, []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := p.secret(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		b, _ := os.ReadFile(path)
		if len(got) != 32 || strings.TrimSpace(string(b)) != got {
			t.Errorf("%s empty on disk: secret %q, file %q; want a new 32-digit secret written to the file", f, got, b)
		}
		if left, _ := filepath.Glob(filepath.Join(p.dir(), f+"*.tmp")); len(left) > 0 {
			t.Errorf("%s: temporary files left: %v", f, left)
		}
	}
}

// TestSecretMadeOnceByConcurrentCalls: the managers' agents start at once
// and each asks for the lab's secrets: all get the same one, and none an
// error. Before, both wrote control.tokens.tmp and renamed it: the second
// rename failed (no such file), and lab up with two managers failed.
func TestSecretMadeOnceByConcurrentCalls(t *testing.T) {
	p, err := newPlan(t.TempDir(), Config{Name: "demo", Nodes: 3, Managers: 3, UnderlayBin: "/usr/bin/underlay"}.withDefaults(), netip.MustParsePrefix("172.31.4.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 16
	got := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i], errs[i] = p.secret(ControlTokensFile)
		}()
	}
	close(start)
	wg.Wait()
	b, _ := os.ReadFile(filepath.Join(p.dir(), ControlTokensFile))
	for i := range n {
		if errs[i] != nil || got[i] != strings.TrimSpace(string(b)) {
			t.Errorf("call %d: %q, %v; want the file's secret %q", i, got[i], errs[i], b)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(p.dir(), "*.tmp")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
