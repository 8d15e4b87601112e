package dashboard

import (
	"strings"
	"testing"
)

// TestFixesShownAsTheyAre: a doctor result's fix is a command the page
// and the events show to copy; any agent may publish the report, and a
// fix with a bidi override or a zero-width character was shown as one
// command and copied as another. Such a fix is now left out, with a
// note, as one too long to show is.
func TestFixesShownAsTheyAre(t *testing.T) {
	for _, fix := range []string{
		"consul kv delete underlay/nodes/x\u202e; rm -rf ~ #",
		"ip link del ul-1\u200b",
		"echo a\x1b[2Jb",
		"echo \xff",
	} {
		ps, _, _ := limitProblems([]DoctorResult{{Check: "c", Status: "fail", Message: "broken", Fix: fix}}, MaxProblems)
		if ps[0].Fix != "" || !strings.Contains(ps[0].Message, "underlay doctor on the node prints it") {
			t.Errorf("fix %q: shown as %q, message %q; want it left out, with a note", fix, ps[0].Fix, ps[0].Message)
		}
		old := &Snapshot{Nodes: []Node{{ID: "n1", Name: "node1", Doctor: &Doctor{}}}}
		cur := &Snapshot{Nodes: []Node{{ID: "n1", Name: "node1", Doctor: &Doctor{Problems: []DoctorResult{{Check: "c", Status: "fail", Message: "broken", Fix: fix}}}}}}
		for _, e := range Diff(old, cur) {
			if strings.Contains(e.Message, fix) || strings.Contains(e.Message, "— fix:") {
				t.Errorf("fix %q: event %q shows it", fix, e.Message)
			}
		}
	}
	ps, _, _ := limitProblems([]DoctorResult{{Check: "c", Status: "fail", Message: "m", Fix: "ip link del 'ul-ä' && echo ok"}}, MaxProblems)
	if ps[0].Fix != "ip link del 'ul-ä' && echo ok" {
		t.Errorf("a fix of graphic characters became %q", ps[0].Fix)
	}
}
