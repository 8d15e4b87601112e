package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/hostnet/inusetest"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/netspec"
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
	// The records of the parents the agent made promiscuous and of the
	// VLAN parents it made, in each state directory, go along.
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
		{"recorded owner", agentCleanupFlags{stateDir: recorded}, hostnet.Cleanup{Owner: "a1", Promisc: promisc(recorded), Parents: hostnet.NewParentFile(recorded)}, false},
		{"no record", agentCleanupFlags{stateDir: missing}, hostnet.Cleanup{Promisc: promisc(missing), Parents: hostnet.NewParentFile(missing)}, true},
		{"a record that is no owner", agentCleanupFlags{stateDir: bad}, hostnet.Cleanup{Promisc: promisc(bad), Parents: hostnet.NewParentFile(bad)}, true},
		{"all", agentCleanupFlags{stateDir: missing, all: true}, hostnet.Cleanup{All: true, Promisc: promisc(missing), Parents: hostnet.NewParentFile(missing)}, false},
	} {
		var out, logs bytes.Buffer
		var got hostnet.Cleanup
		err := agentCleanup(context.Background(), &out, slog.New(slog.NewTextHandler(&logs, nil)), c.f, nil, func(cl hostnet.Cleanup) (hostnet.CleanupReport, error) {
			got = cl
			return hostnet.CleanupReport{Removed: []string{"ul-0a1b2c3d"}, Left: []hostnet.Link{{Name: "eth1.50", Type: "vlan", Alias: "underlay network db by b2"}}}, hostnet.ErrParentInUse
		})
		if d := cmp.Diff(c.want, got, cmpopts.IgnoreUnexported(hostnet.ParentFile{})); d != "" {
			t.Errorf("%s: cleanup (-want +got)\n%s", c.name, d)
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
	if a, c := agentCmd.Flags().Lookup("state-dir"), cleanup.Flags().Lookup("state-dir"); c == nil || c.DefValue != a.DefValue || cleanup.Flags().Lookup("all") == nil || cleanup.Flags().Lookup("without-docker") == nil {
		t.Errorf("cleanup's --state-dir %v, want the agent's default %q, an --all and a --without-docker", c, a.DefValue)
	}
}

// fakeCleanupDocker is a dockerd's networks and containers, with the
// restart policies of stopped ones by ID (one not there is gone).
type fakeCleanupDocker struct {
	nets     []network.Summary
	ctrs     []container.Summary
	policies map[string]container.RestartPolicyMode
	err      error
}

func (d fakeCleanupDocker) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	return d.nets, d.err
}

func (d fakeCleanupDocker) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return d.ctrs, d.err
}

// ContainerInspect is asked of stopped containers only.
func (d fakeCleanupDocker) ContainerInspect(_ context.Context, id string) (container.InspectResponse, error) {
	p, ok := d.policies[id]
	if !ok {
		return container.InspectResponse{}, fmt.Errorf("fakeCleanupDocker: inspect of %s", id)
	}
	return container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{ID: id, HostConfig: &container.HostConfig{RestartPolicy: container.RestartPolicy{Name: p}}}}, nil
}

// dockerOf is the dockerd whose networks and containers dl describes.
func dockerOf(dl hostnet.DockerLinks) fakeCleanupDocker {
	d := fakeCleanupDocker{policies: map[string]container.RestartPolicyMode{}}
	for _, n := range dl.Networks {
		s := network.Summary{Name: n.Name, ID: n.ID, ConfigOnly: n.ConfigOnly, ConfigFrom: network.ConfigReference{Network: n.ConfigFrom}}
		if n.Parent != "" {
			s.Driver, s.Options = "macvlan", map[string]string{"parent": n.Parent}
		}
		if n.Network != "" {
			s.Labels = map[string]string{netspec.LabelNetwork: n.Network}
		}
		d.nets = append(d.nets, s)
	}
	for _, c := range dl.Containers {
		eps := map[string]*network.EndpointSettings{}
		for name, id := range c.Networks {
			eps[name] = &network.EndpointSettings{NetworkID: id}
		}
		id := c.Name + "0123456789"
		d.ctrs = append(d.ctrs, container.Summary{ID: id, Names: []string{"/" + c.Name}, State: container.ContainerState(c.State),
			NetworkSettings: &container.NetworkSettingsSummary{Networks: eps}})
		d.policies[id] = container.RestartPolicyMode(c.RestartPolicy)
	}
	return d
}

// TestAgentCleanupJudgesParentsAsNetworkRmDoes: `agent cleanup` counted
// containers on a parent, `network rm` any Docker network naming it: a
// parent an empty network named was removed by one and left by the
// other. Both now judge by hostnet.DockerLinks.Users, tested on one
// table (inusetest): cleanup leaves the parent, in use, exactly when the
// rule names users, and names them; told by dockerd's own answers.
func TestAgentCleanupJudgesParentsAsNetworkRmDoes(t *testing.T) {
	for _, c := range inusetest.Cases() {
		var got hostnet.Cleanup
		err := agentCleanup(context.Background(), io.Discard, slog.New(slog.DiscardHandler), agentCleanupFlags{stateDir: t.TempDir()}, dockerOf(c.Docker),
			func(cl hostnet.Cleanup) (hostnet.CleanupReport, error) { got = cl; return hostnet.CleanupReport{}, nil })
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if d := cmp.Diff(c.Users, got.InUse[inusetest.Parent]); d != "" {
			t.Errorf("%s: users of %s (-want +got)\n%s", c.Name, inusetest.Parent, d)
		}
	}
}

// on is a running container on the networks given, by name and ID.
func on(name string, nets ...string) container.Summary {
	eps := map[string]*network.EndpointSettings{}
	for i := 0; i+1 < len(nets); i += 2 {
		eps[nets[i]] = &network.EndpointSettings{NetworkID: nets[i+1]}
	}
	return container.Summary{ID: name + "0123456789", Names: []string{"/" + name}, State: container.StateRunning, NetworkSettings: &container.NetworkSettingsSummary{Networks: eps}}
}

// TestAgentCleanupLeavesWhatContainersUse: `agent cleanup` looked only in
// the host's network namespace, where no container's endpoint is, so it
// deleted a VLAN parent (and, with it, the endpoints of the containers on
// it) and turned its promiscuous mode off under them. It now asks Docker
// for the running containers on macvlan and ipvlan networks and hands
// their parents and shims to the removal as in use (an underlay network's
// parent is its config-only network's); it prints what it did and left,
// and with Docker not answering it removes nothing.
func TestAgentCleanupLeavesWhatContainersUse(t *testing.T) {
	d := fakeCleanupDocker{
		nets: []network.Summary{
			{Name: "web-config", ID: "n-webc", ConfigOnly: true, Options: map[string]string{"parent": "eth1.40"}, Labels: map[string]string{netspec.LabelNetwork: "web"}},
			{Name: "web", ID: "n-web", Driver: "macvlan", ConfigFrom: network.ConfigReference{Network: "web-config"}},
			{Name: "ops", ID: "n-ops", Driver: "ipvlan", Options: map[string]string{"parent": "eth2"}},
			{Name: "idle", ID: "n-idle", Driver: "macvlan", Options: map[string]string{"parent": "eth3"}},
			{Name: "bridge", ID: "n-br", Driver: "bridge"},
		},
		ctrs: []container.Summary{
			on("web.1", "web", "n-web", "bridge", "n-br"),
			on("web.2", "web", "n-web"),
			on("tool", "ops", "n-ops"),
			on("plain", "bridge", "n-br"),
		},
	}
	web, ops := []string{"container web.1 (network web)", "container web.2 (network web)"}, []string{"container tool (network ops)"}
	// An empty network holds its parent (not its shim): see
	// TestAgentCleanupJudgesParentsAsNetworkRmDoes.
	idle := []string{"Docker network idle (no container uses it: remove it to free the parent)"}
	want := map[string][]string{"eth1.40": web, netspec.ShimLinkName("web"): web, "eth2": ops, netspec.ShimLinkName("ops"): ops, "eth3": idle}
	dir := t.TempDir()
	var got hostnet.Cleanup
	var out bytes.Buffer
	err := agentCleanup(context.Background(), &out, slog.New(slog.DiscardHandler), agentCleanupFlags{stateDir: dir}, d, func(c hostnet.Cleanup) (hostnet.CleanupReport, error) {
		got = c
		return hostnet.CleanupReport{
			Removed:    []string{"ul-0a1b2c3d"},
			InUse:      []hostnet.LinkUse{{Name: "eth1.40", Users: web}},
			PromiscOff: []string{"eth3"},
			Forgotten:  []string{"eth3", "eth9"},
			Unrecorded: []string{"bond0.40"},
		}, hostnet.ErrInUse
	})
	if d := cmp.Diff(want, got.InUse); d != "" {
		t.Errorf("links in use (-want +got)\n%s", d)
	}
	if !errors.Is(err, hostnet.ErrInUse) {
		t.Errorf("cleanup: %v, want the removal's error", err)
	}
	wantOut := "removed ul-0a1b2c3d\n" +
		"left eth1.40: in use by container web.1 (network web); container web.2 (network web) (stop or remove those containers, remove those networks, then run underlay agent cleanup again)\n" +
		"parent eth3: promiscuous mode off (the agent had turned it on)\n" +
		"parent eth3: record removed (" + filepath.Join(dir, "promisc", "eth3") + ")\n" +
		"parent eth9: record removed (" + filepath.Join(dir, "promisc", "eth9") + ")\n" +
		"VLAN parent bond0.40: record removed (" + filepath.Join(dir, "vlan-parents.json") + ")\n"
	if pf, ok := got.Parents.(*hostnet.ParentFile); !ok || pf.Path != filepath.Join(dir, "vlan-parents.json") {
		t.Errorf("the removal's record of VLAN parents: %#v; want %s", got.Parents, filepath.Join(dir, "vlan-parents.json"))
	}
	if d := cmp.Diff(wantOut, out.String()); d != "" {
		t.Errorf("printed (-want +got)\n%s", d)
	}

	// Docker not answering: nothing is removed, and the error says the fix.
	d.err = errors.New("Cannot connect to the Docker daemon")
	called := false
	err = agentCleanup(context.Background(), io.Discard, slog.New(slog.DiscardHandler), agentCleanupFlags{stateDir: dir}, d, func(hostnet.Cleanup) (hostnet.CleanupReport, error) {
		called = true
		return hostnet.CleanupReport{}, nil
	})
	if called || err == nil || !strings.Contains(err.Error(), "nothing removed") || !strings.Contains(err.Error(), "--without-docker") {
		t.Errorf("Docker down: removal called %t, %v; want nothing removed and an error naming --without-docker", called, err)
	}
}
