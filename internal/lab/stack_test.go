package lab

import (
	"fmt"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestAgentEnv(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    map[string]string
		wantErr string
	}{
		{args: nil, want: map[string]string{}},
		{args: []string{"--ipam-leak-grace", "15s", "--ipam-sweep=500ms"},
			want: map[string]string{"UNDERLAY_IPAM_LEAK_GRACE": "15s", "UNDERLAY_IPAM_SWEEP": "500ms"}},
		{args: []string{"--internal", "--resync", "5s"}, want: map[string]string{"UNDERLAY_INTERNAL": "true", "UNDERLAY_RESYNC": "5s"}},
		{args: []string{"--explicit"}, want: map[string]string{"UNDERLAY_EXPLICIT": "true"}},
		{args: []string{"15s"}, wantErr: `"15s"`},
		{args: []string{"--"}, wantErr: `"--"`},
		// A list flag given twice keeps both values, comma-separated as
		// the agent splits UNDERLAY_<FLAG> (pflag's string slices).
		{args: []string{"--swarm-name-allow", "web=www", "--swarm-name-allow=api=v1,api=v2"},
			want: map[string]string{"UNDERLAY_SWARM_NAME_ALLOW": "web=www,api=v1,api=v2"}},
		{args: []string{"--tags", "a", "--allowed-host", "h1", "--tags=b", "--allowed-host", "h2"},
			want: map[string]string{"UNDERLAY_TAGS": "a,b", "UNDERLAY_ALLOWED_HOST": "h1,h2"}},
		{args: []string{"--tags", "", "--tags", "a"}, want: map[string]string{"UNDERLAY_TAGS": "a"}},
		// --label takes each value whole (commas included): one variable
		// carries one, so a second is refused.
		{args: []string{"--label", "a=1,2"}, want: map[string]string{"UNDERLAY_LABEL": "a=1,2"}},
		{args: []string{"--label", "a", "--label", "b"}, wantErr: "--label"},
		// Any other flag given twice: the last wins, as on the command line.
		{args: []string{"--resync", "5s", "--resync=10s"}, want: map[string]string{"UNDERLAY_RESYNC": "10s"}},
	} {
		got, err := AgentEnv(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("AgentEnv(%q) = %v, %v; want an error naming %s", tc.args, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("AgentEnv(%q) = %v, %v; want %v", tc.args, got, err, tc.want)
		}
	}
}

// TestOverrideFile: the override is a compose file whose agent environment
// is exactly env, empty or not.
func TestOverrideFile(t *testing.T) {
	for _, env := range []map[string]string{{}, {"UNDERLAY_RESYNC": "5s", "UNDERLAY_X": `a "quoted" value`}} {
		var f struct {
			Version  string
			Services map[string]struct{ Environment map[string]string }
		}
		if err := yaml.Unmarshal([]byte(overrideFile(env)), &f); err != nil {
			t.Fatalf("override for %v: %v\n%s", env, err, overrideFile(env))
		}
		got := f.Services["agent"].Environment
		if got == nil {
			got = map[string]string{}
		}
		if f.Version != "3.8" || fmt.Sprint(got) != fmt.Sprint(env) {
			t.Errorf("override for %v: version %q, agent environment %v", env, f.Version, got)
		}
	}
}
