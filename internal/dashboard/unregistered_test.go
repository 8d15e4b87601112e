package dashboard

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/unregistered"
)

// TestBuildTaskLeftOutOnPurpose: a running task Consul does not list is
// a mismatch, counted in the summary, unless its node's agent reports it
// leaves it out of Consul on purpose: it is then not registered, with the
// reason, and no mismatch. A report of another node, or naming another
// container, does not speak for the task.
func TestBuildTaskLeftOutOnPurpose(t *testing.T) {
	report := func(node string, tasks ...unregistered.Task) []unregistered.Report {
		return []unregistered.Report{{Node: "node", NodeID: node, Tasks: tasks}}
	}
	unreg := unregistered.Task{TaskID: "unreg", ContainerID: "c-unreg", Reason: register.LeftOutNoPort}
	otherCtr := unreg
	otherCtr.ContainerID = "c-other"
	for _, tc := range []struct {
		name       string
		reports    []unregistered.Report
		why        string
		mismatches int
	}{
		{"no report", nil, "", 3},
		{"its node's report", report("n2", unreg), register.LeftOutNoPort, 2},
		{"another node's report", report("n1", unreg), "", 3},
		{"a report naming another container", report("n2", otherCtr), "", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := cardsInput()
			in.Unregistered = tc.reports
			s := Build(in)
			var c *Task
			for i := range s.Nodes {
				for j := range s.Nodes[i].Tasks {
					if s.Nodes[i].Tasks[j].ID == "unreg" {
						c = &s.Nodes[i].Tasks[j]
					}
				}
			}
			if c == nil {
				t.Fatal("no card of task unreg")
			}
			if c.Health != HealthNotRegistered || c.Unregistered != tc.why || c.Mismatch != (tc.why == "") {
				t.Errorf("card: health %q, unregistered %q, mismatch %v; want %q, %q, %v", c.Health, c.Unregistered, c.Mismatch, HealthNotRegistered, tc.why, tc.why == "")
			}
			if tc.why != "" && len(c.Problems) != 0 {
				t.Errorf("card of a task left out on purpose has problems %q", c.Problems)
			}
			if s.Summary.Mismatches != tc.mismatches {
				t.Errorf("summary counts %d mismatches, want %d", s.Summary.Mismatches, tc.mismatches)
			}
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			if has := strings.Contains(string(b), `"unregistered":`); has != (tc.why != "") {
				t.Errorf("card's JSON %s: \"unregistered\" present %v, want %v", b, has, tc.why != "")
			}
		})
	}
}

// TestBuildShowsRefusedUnregisteredReports: a node's report of
// unregistered tasks that readers refuse is among the snapshot's
// problems, naming its key, with the command that removes it.
func TestBuildShowsRefusedUnregisteredReports(t *testing.T) {
	in := cardsInput()
	const key = unregistered.KVPrefix + "n2n2n2n2n2n2n2n2n2n2n2n2n"
	in.BadUnregistered = []unregistered.BadReport{{Key: key, Problem: "the report under " + key + ` names swarm node "x"`, Fix: "consul kv delete " + key}}
	s := Build(in)
	var found bool
	for _, p := range s.Problems {
		if p.Check == "unregistered/report" && strings.Contains(p.Message, key) && p.Fix == "consul kv delete "+key {
			found = true
		}
	}
	if !found {
		t.Errorf("problems %+v: none names the refused report %s with its fix", s.Problems, key)
	}
}
