package app

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netagent"
)

// TestAgentCleanupOnlyItsOwnersLinks: `agent cleanup` (the Debian
// package's prerm) removed every underlay link, another underlay's in
// the same network namespace too. It now removes those of the owner
// the agent's state directory records (and those naming none), names
// each link it leaves with its owner, and with no owner recorded, or
// one it cannot read, says so, records none, and removes only links
// naming no owner; --all removes every one, reading nothing.
func TestAgentCleanupOnlyItsOwnersLinks(t *testing.T) {
	recorded := t.TempDir()
	if err := os.WriteFile(filepath.Join(recorded, netagent.LinkOwnerFile), []byte("a1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, netagent.LinkOwnerFile), []byte("two words\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := t.TempDir()
	// The record of the parents the agent made promiscuous, in each
	// state directory, goes along.
	promisc := func(dir string) hostnet.PromiscRecord {
		rec, err := hostnet.NewPromiscFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	for _, c := range []struct {
		name string
		f    agentCleanupFlags
		want hostnet.Cleanup
		warn bool
	}{
		{"recorded owner", agentCleanupFlags{stateDir: recorded}, hostnet.Cleanup{Owner: "a1", Promisc: promisc(recorded)}, false},
		{"no record", agentCleanupFlags{stateDir: missing}, hostnet.Cleanup{Promisc: promisc(missing)}, true},
		{"a record that is no owner", agentCleanupFlags{stateDir: bad}, hostnet.Cleanup{Promisc: promisc(bad)}, true},
		{"all", agentCleanupFlags{stateDir: missing, all: true}, hostnet.Cleanup{All: true, Promisc: promisc(missing)}, false},
	} {
		var out, logs bytes.Buffer
		var got hostnet.Cleanup
		err := agentCleanup(&out, slog.New(slog.NewTextHandler(&logs, nil)), c.f, func(cl hostnet.Cleanup) ([]string, []hostnet.Link, error) {
			got = cl
			return []string{"ul-0a1b2c3d"}, []hostnet.Link{{Name: "eth1.50", Type: "vlan", Alias: "underlay network db by b2"}}, hostnet.ErrParentInUse
		})
		if got != c.want {
			t.Errorf("%s: cleanup %+v, want %+v", c.name, got, c.want)
		}
		if want := "removed ul-0a1b2c3d\nleft eth1.50: marked by owner b2, not this agent's (--all removes it)\n"; out.String() != want {
			t.Errorf("%s: printed %q, want %q", c.name, out.String(), want)
		}
		if !errors.Is(err, hostnet.ErrParentInUse) {
			t.Errorf("%s: %v, want the removal's error", c.name, err)
		}
		if warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "--all"); warned != c.warn {
			t.Errorf("%s: logged %q; want a warning naming --all: %t", c.name, logs.String(), c.warn)
		}
	}
	if _, err := os.Stat(filepath.Join(missing, netagent.LinkOwnerFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cleanup recorded a link owner: %v", err)
	}
	var out bytes.Buffer
	agentCmd := newAgentCommand(&globalFlags{}, IOStreams{Out: &out, ErrOut: &out})
	cleanup, _, err := agentCmd.Find([]string{"cleanup"})
	if err != nil {
		t.Fatal(err)
	}
	if a, c := agentCmd.Flags().Lookup("state-dir"), cleanup.Flags().Lookup("state-dir"); c == nil || c.DefValue != a.DefValue || cleanup.Flags().Lookup("all") == nil {
		t.Errorf("cleanup's --state-dir %v, want the agent's default %q, and an --all", c, a.DefValue)
	}
}
