package doctor

import (
	"context"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/netspec"
)

// TestProblemsQuoteToShow: results built from what Docker, node facts,
// reports or KV keys give (any agent's token writes them) quote or escape
// it so that it shows: %q and %s left U+3164 as it is, and "n1\u3164"
// read "n1". What is Graphic prints as before.
func TestProblemsQuoteToShow(t *testing.T) {
	const f = "\u3164"
	const ida = "ida0000000000000000000000"
	kv := &memKV{m: map[string][]byte{
		KVPrefix + "n1": []byte(`{"node":"n1","node_id":"idz` + f + `","results":[]}`),
	}}
	reports, err := LoadReportsWithFacts(context.Background(), kv, []netspec.NodeFacts{{Node: "n1", ID: ida}})
	if err != nil {
		t.Fatal(err)
	}
	var reportMsgs []string
	for _, r := range reports {
		for _, res := range r.Results {
			reportMsgs = append(reportMsgs, res.Message)
		}
	}
	message := func(rs []Result) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Message)
		}
		return strings.Join(out, "\n")
	}
	for _, tc := range []struct {
		name, got, want string
	}{
		{"Docker version unread", message(EvalDocker(DockerFacts{Version: "x" + f})), `cannot read Docker version "x\u3164"`},
		{"Docker version", message(EvalDocker(DockerFacts{Version: "28.0.1" + f})), `Docker "28.0.1\u3164"`},
		{"Docker version, Graphic", message(EvalDocker(DockerFacts{Version: "28.0.1"})), `Docker 28.0.1`},
		{"old Docker version", message(EvalDocker(DockerFacts{Version: "1.0" + f})), `Docker "1.0\u3164" is older than`},
		{"removed node", message(EvalRemovedNodes(true, []netspec.NodeFacts{{Node: "n1" + f, ID: "idx" + f}}, nil, nil)), `node "n1\u3164" (swarm node "idx\u3164") is no longer`},
		{"bad key", message(EvalTaskReports([]BadKey{{Key: "underlay/taskmetrics/n1" + f, Problem: "p"}}, nil)), `"underlay/taskmetrics/n1\u3164" is not counted`},
		{"bad key, Graphic", message(EvalTaskReports([]BadKey{{Key: "underlay/taskmetrics/n1", Problem: "p"}}, nil)), `underlay/taskmetrics/n1 is not counted`},
		{"bad spec", EvalBadSpec(netspec.BadSpec{Key: "underlay/networks/lan" + f + "/spec", Name: "lan" + f}).Message, `spec "underlay/networks/lan\u3164/spec" cannot be read`},
		{"report's swarm node", strings.Join(reportMsgs, "\n"), `names swarm node "idz\u3164", which no node facts`},
	} {
		if !strings.Contains(tc.got, tc.want) {
			t.Errorf("%s: %s, want it to hold %s", tc.name, tc.got, tc.want)
		}
	}
}
