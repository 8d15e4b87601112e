package scale_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/scale/adapter"
	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationScaleBuiltinCPU: the agent's task metrics (real Docker
// stats of a task that keeps a core busy) drive a scale-up through the
// built-in underlay:cpu metric, with no Prometheus at all. Beside the
// node's report lie a stray report dated a year ahead that claims 100 idle
// tasks of the service (counted, it would hold the CPU per replica near 0
// for that year) and one that is not JSON: neither is counted — the stray
// one is read, but never seen to change.
//
// The target is 0.02 of a core, not more: in the full run two packages
// race on 2 cores and the busy task was measured at 0.056 of a core. The
// stray report still tells: counted, even a whole core over 101 tasks is
// 0.0099, under the target.
func TestIntegrationScaleBuiltinCPU(t *testing.T) {
	testenv.Require(t)
	docker := testenv.Docker(t)
	testenv.Swarm(t, docker)
	cons := testenv.StartConsul(t)
	id := testenv.ID(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// The node's agent part that measures tasks, in-process, under this
	// machine's swarm node ID as the agent's (readers refuse any other
	// form of ID).
	info, err := docker.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go taskmetrics.Run(ctx, dockerhost.NewSource(docker), consul.NewKV(cons.Client()), "node-"+id, info.Swarm.NodeID, time.Second, log, nil, nil)

	name := "ulscale-cpu-" + id
	const cpuTarget = "0.02"
	kv := cons.Client().KV()
	ghost := fmt.Sprintf(`{"node":"ghost-%s","at":%q,"services":{%q:{"tasks":100,"cpu":0,"memory":1}}}`,
		id, time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339), name)
	for key, value := range map[string]string{taskmetrics.KVPrefix + "ghost-" + id: ghost, taskmetrics.KVPrefix + "junk-" + id: "{"} {
		if _, err := kv.Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
			t.Fatal(err)
		}
	}

	ctl := startControl(t, docker, cons, controlOpts{cfg: scale.Config{
		Metrics:  adapter.Metrics{Builtin: adapter.NewBuiltin(consul.NewKV(cons.Client()), log)},
		Interval: time.Second,
	}}, log)
	one := uint64(1)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: map[string]string{
			"orbiter": "true", scale.LabelMax: "2",
			scale.LabelMetricPrefix + "cpu.query":  "underlay:cpu",
			scale.LabelMetricPrefix + "cpu.target": cpuTarget,
		}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage, Env: []string{"BURN=1"}}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
	}
	resp, err := docker.ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.RemoveService(t, docker, resp.ID) })
	ctl.waitManaged(t, name)

	builtin := adapter.NewBuiltin(consul.NewKV(cons.Client()), log)
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		cpu, err := builtin.Query(ctx, "underlay:cpu@"+name)
		return err == nil && cpu > 0.02, fmt.Sprintf("cpu per replica of %s: %v %v (target %s)", name, cpu, err, cpuTarget)
	})
	if mem, err := builtin.Query(ctx, "underlay:memory@"+name); err != nil || mem <= 0 {
		t.Errorf("memory per replica of %s: %v %v", name, mem, err)
	}
	if _, err := builtin.Query(ctx, "underlay:cpu@nosuch-"+id); err == nil || !strings.Contains(err.Error(), "1 report not counted") {
		t.Errorf("query of a service no agent reports: %v, want it to say 1 report (junk) is not counted", err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := replicas(t, docker, name)
		return n == 2, fmt.Sprintf("%s has %d replicas, want 2 (one busy task per replica, target %s)", name, n, cpuTarget)
	})
}
