package app

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"
)

func TestAgentPolicy(t *testing.T) {
	docker := func(id, name string, err error) func(context.Context) (system.Info, error) {
		return func(context.Context) (system.Info, error) {
			return system.Info{Name: name, Swarm: swarm.Info{NodeID: id}}, err
		}
	}
	for _, tc := range []struct {
		name  string
		flags agentPolicyFlags
		info  func(context.Context) (system.Info, error)
		// want are keys the policy writes; bad is the error's text.
		want []string
		bad  string
	}{
		{name: "Docker's ID and name", info: docker("n0d3000000000000000000000", "web-1", nil),
			want: []string{`key "underlay/nodes/n0d3000000000000000000000"`, `key "underlay/doctor/web-1"`}},
		{name: "flags win", flags: agentPolicyFlags{nodeID: "f1a0000000000000000000000", node: "db"}, info: docker("n0d3000000000000000000000", "web-1", errors.New("never asked")),
			want: []string{`key "underlay/nodes/f1a0000000000000000000000"`, `key "underlay/metrics/db"`}},
		{name: "name from Docker", flags: agentPolicyFlags{nodeID: "f1a0000000000000000000000"}, info: docker("n0d3000000000000000000000", "web-1", nil),
			want: []string{`key "underlay/nodes/f1a0000000000000000000000"`, `key "underlay/metrics/web-1"`}},
		{name: "no swarm", info: docker("", "web-1", nil), bad: "in no swarm"},
		{name: "no Docker", info: docker("", "", errors.New("connection refused")), bad: "give --node-id and --node): connection refused"},
		{name: "bad host name", flags: agentPolicyFlags{nodeID: "f1a0000000000000000000000"}, info: docker("n0d3000000000000000000000", "web_1!", nil), bad: `node name "web_1!"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			err := agentPolicy(context.Background(), &out, tc.flags, tc.info)
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("err %v, want one saying %q", err, tc.bad)
				}
				if out.Len() != 0 {
					t.Errorf("a policy was printed despite the error:\n%s", out.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range tc.want {
				if !strings.Contains(out.String(), k+" {\n  policy = \"write\"\n}") {
					t.Errorf("no write rule %s in:\n%s", k, out.String())
				}
			}
		})
	}
}
