package app

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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
// UNDERLAY_* variables (lab.AgentEnv). For each list flag of the agent
// (every pflag slice, array or map: a flag that adds up its values when
// given twice), given once and twice, those variables set it as the
// command line does, or lab.AgentEnv refuses the flag (only one whose
// values are taken whole may be, given twice). A list flag added to the
// agent that the lab would carry wrong fails here. The agent's list
// flags and their kinds are listed too: a flag changing kind changes how
// UNDERLAY_<FLAG> is read (split at commas, or taken whole), which the
// lab follows by itself, but users' variables may not: it fails here
// until the list below says so.
func TestLabAgentEnv(t *testing.T) {
	flags := func() *pflag.FlagSet { return newAgentCommand(&globalFlags{}, IOStreams{}).Flags() }
	kinds := map[string]string{}
	flags().VisitAll(func(f *pflag.Flag) {
		if typ := f.Value.Type(); !listType(typ) {
			return
		}
		kinds[f.Name] = f.Value.Type()
		v := listValues(f.Value.Type())
		if v == nil {
			t.Errorf("--%s is a %s: listValues has no values of that type to give it", f.Name, f.Value.Type())
			return
		}
		for _, args := range [][]string{
			{"--" + f.Name, v[0] + "," + v[1]},
			{"--" + f.Name, v[0], "--" + f.Name + "=" + v[1] + "," + v[2]},
		} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				direct := flags()
				if err := direct.Parse(args); err != nil {
					t.Fatal(err)
				}
				env, err := lab.AgentEnv(args)
				if err != nil {
					if !strings.HasSuffix(f.Value.Type(), "Array") || len(args) == 2 || !strings.Contains(err.Error(), "--"+f.Name) {
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
	want := map[string]string{"allowed-host": "stringSlice", "label": "stringArray", "swarm-name-allow": "stringSlice", "tags": "stringSlice"}
	if d := cmp.Diff(want, kinds); d != "" {
		t.Errorf("the agent's list flags by kind (-want +got), a change users' UNDERLAY_* variables may not follow:\n%s", d)
	}
}

// listValues gives three values a list flag of pflag type typ takes (nil
// for a type it does not know).
func listValues(typ string) []string {
	switch {
	case strings.HasPrefix(typ, "string"): // slice, array, stringToString
		return []string{"a=1", "b=2", "c=3"}
	case strings.HasPrefix(typ, "int"), strings.HasPrefix(typ, "uint"), strings.HasPrefix(typ, "float"):
		return []string{"1", "2", "3"}
	case typ == "durationSlice":
		return []string{"1s", "2s", "3s"}
	case typ == "boolSlice":
		return []string{"true", "false", "true"}
	case typ == "ipSlice":
		return []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}
	}
	return nil
}

// listType says a pflag value of type typ adds up the values it is given
// (a slice, an array or a map), rather than keeping the last.
func listType(typ string) bool {
	return strings.HasSuffix(typ, "Slice") || strings.HasSuffix(typ, "Array") || strings.HasPrefix(typ, "stringTo")
}
