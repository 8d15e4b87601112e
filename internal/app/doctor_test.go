package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"

	"github.com/underlay/underlay/internal/doctor"
)

// TestDoctorCommandUnreachable runs the doctor with Docker and Consul both
// unreachable (a missing socket, a closed loopback port): it prints JSON
// results for the given node, fails those checks with a fix, and returns
// the error that makes the exit status non-zero.
func TestDoctorCommandUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")

	var out, errOut bytes.Buffer
	cmd := newDoctorCommand(&globalFlags{logLevel: "info", logFormat: "text"}, IOStreams{Out: &out, ErrOut: &errOut})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true // as the root command does
	cmd.SetArgs([]string{"--json", "--node", "n9", "--consul-addr", closed})
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err = cmd.ExecuteContext(context.Background())
	if !errors.Is(err, errChecksFailed) {
		t.Fatalf("err = %v, want errChecksFailed", err)
	}
	var rs []doctor.Result
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := map[string]bool{"docker/daemon": false, "consul/agent": false, "network/specs": false}
	for _, r := range rs {
		if r.Node != "n9" {
			t.Errorf("node %q, want n9: %+v", r.Node, r)
		}
		if _, ok := want[r.Check]; ok {
			want[r.Check] = r.Status == doctor.Fail && r.Fix != ""
		}
	}
	for check, failed := range want {
		if !failed {
			t.Errorf("%s did not fail with a fix: %s", check, out.String())
		}
	}
}

// TestDoctorReadsTheAgentsStateDir: the doctor reads the agent's record
// of the VLAN parents it made from the agent's --state-dir, of the
// agent's default (and, as every flag, UNDERLAY_STATE_DIR).
func TestDoctorReadsTheAgentsStateDir(t *testing.T) {
	var out bytes.Buffer
	agent := newAgentCommand(&globalFlags{}, IOStreams{Out: &out, ErrOut: &out})
	doc := newDoctorCommand(&globalFlags{}, IOStreams{Out: &out, ErrOut: &out})
	if a, d := agent.Flags().Lookup("state-dir"), doc.Flags().Lookup("state-dir"); d == nil || d.DefValue != a.DefValue {
		t.Errorf("doctor's --state-dir %v, want the agent's default %q", d, a.DefValue)
	}
}
