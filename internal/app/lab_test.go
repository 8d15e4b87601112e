package app

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/underlay/underlay/internal/lab"
)

// TestCheckLabCounts: lab.Up takes a zero count as its default, so a zero
// given on the command line is refused here, naming it.
func TestCheckLabCounts(t *testing.T) {
	good := lab.Config{Nodes: 3, Managers: 1, ConsulServers: 1}
	if err := checkLabCounts(good); err != nil {
		t.Fatalf("%+v: %v", good, err)
	}
	tests := []struct {
		name    string
		change  func(*lab.Config)
		wantErr string
	}{
		{"no nodes", func(c *lab.Config) { c.Nodes = 0 }, "--nodes 0"},
		// Both were run as 1.
		{"no managers", func(c *lab.Config) { c.Managers = 0 }, "--managers 0"},
		{"no consul servers", func(c *lab.Config) { c.ConsulServers = 0 }, "--consul-servers 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			err := checkLabCounts(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestKeepRecorded: `lab up` on an existing lab keeps every setting whose
// flag was not given. Before, a lab made with --no-agent got agents on its
// repair, and one made with agent or dockerd arguments (a test's, the
// soak's) lost them.
func TestKeepRecorded(t *testing.T) {
	old := lab.Config{Name: "l", Nodes: 5, Managers: 2, ConsulServers: 3, UnderlaySubnet: "10.9.0.0/16", NoAgent: true,
		Agents: lab.AgentsProcess, Engine: "29", VM: false, AgentArgs: []string{"--ipam"}, DockerArgs: []string{"--debug"}, Images: []string{"x:1"}}
	flags := lab.Config{Name: "l", Nodes: 3, Managers: 1, ConsulServers: 1, UnderlaySubnet: lab.DefaultUnderlaySubnet, Agents: lab.AgentsProcess, Engine: "20.10"}
	none := func(string) bool { return false }
	got := keepRecorded(flags, old, none)
	if got.Nodes != 5 || got.Managers != 2 || got.ConsulServers != 3 || got.UnderlaySubnet != "10.9.0.0/16" || !got.NoAgent || got.Engine != "29" ||
		strings.Join(got.AgentArgs, " ") != "--ipam" || strings.Join(got.DockerArgs, " ") != "--debug" || strings.Join(got.Images, " ") != "x:1" {
		t.Errorf("no flags given: %+v, want the recorded %+v", got, old)
	}
	given := func(f string) bool { return f == "nodes" || f == "no-agent" }
	flags.Nodes, flags.NoAgent = 4, false
	got = keepRecorded(flags, old, given)
	if got.Nodes != 4 || got.NoAgent || got.Managers != 2 {
		t.Errorf("--nodes 4 --no-agent=false given: %+v", got)
	}
}

// TestLabAgentEnv: the lab's stack agents get the lab's agent flags as
// UNDERLAY_* variables (lab.AgentEnv). For each list flag of the agent,
// given once and twice, those variables set it as the command line does,
// or lab.AgentEnv refuses the flag (only one whose values are taken whole
// may be, given twice). A list flag added to the agent that the lab would
// carry wrong fails here.
func TestLabAgentEnv(t *testing.T) {
	flags := func() *pflag.FlagSet { return newAgentCommand(&globalFlags{}, IOStreams{}).Flags() }
	n := 0
	flags().VisitAll(func(f *pflag.Flag) {
		if typ := f.Value.Type(); typ != "stringSlice" && typ != "stringArray" {
			return
		}
		n++
		for _, args := range [][]string{
			{"--" + f.Name, "a=1,b=2"},
			{"--" + f.Name, "a=1", "--" + f.Name + "=b=2,c=3"},
		} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				direct := flags()
				if err := direct.Parse(args); err != nil {
					t.Fatal(err)
				}
				env, err := lab.AgentEnv(args)
				if err != nil {
					if f.Value.Type() != "stringArray" || len(args) == 2 || !strings.Contains(err.Error(), "--"+f.Name) {
						t.Fatalf("lab.AgentEnv(%q): %v", args, err)
					}
					return
				}
				for k, v := range env {
					t.Setenv(k, v)
				}
				fromEnv := flags()
				if err := applyEnv(fromEnv); err != nil {
					t.Fatal(err)
				}
				want, got := direct.Lookup(f.Name).Value.String(), fromEnv.Lookup(f.Name).Value.String()
				if got != want {
					t.Errorf("--%s from %v: %s, from the command line %s", f.Name, env, got, want)
				}
			})
		}
	})
	if n == 0 {
		t.Fatal("the agent has no list flag: the test looks for the wrong types")
	}
}
