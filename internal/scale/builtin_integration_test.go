package scale_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/scale/adapter"
	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationScaleBuiltinCPU: the agent's task metrics (real Docker
// stats of a task that keeps a core busy) drive a scale-up through the
// built-in underlay:cpu metric, with no Prometheus at all.
func TestIntegrationScaleBuiltinCPU(t *testing.T) {
	testenv.Require(t)
	docker := testenv.Docker(t)
	testenv.Swarm(t, docker)
	cons := testenv.StartConsul(t)
	id := testenv.ID(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// The node's agent part that measures tasks, in-process.
	go taskmetrics.Run(ctx, dockerhost.NewSource(docker), consul.NewKV(cons.Client()), "node-"+id, time.Second, log)

	ctl := startControl(t, docker, cons, controlOpts{cfg: scale.Config{
		Metrics:  adapter.Metrics{Builtin: adapter.NewBuiltin(cons.Client())},
		Interval: time.Second,
	}}, log)
	name := "ulscale-cpu-" + id
	one := uint64(1)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: map[string]string{
			"orbiter": "true", scale.LabelMax: "2",
			scale.LabelMetricPrefix + "cpu.query":  "underlay:cpu",
			scale.LabelMetricPrefix + "cpu.target": "0.2",
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

	builtin := adapter.NewBuiltin(cons.Client())
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		cpu, err := builtin.Query(ctx, "underlay:cpu@"+name)
		return err == nil && cpu > 0.2, fmt.Sprintf("cpu per replica of %s: %v %v", name, cpu, err)
	})
	if mem, err := builtin.Query(ctx, "underlay:memory@"+name); err != nil || mem <= 0 {
		t.Errorf("memory per replica of %s: %v %v", name, mem, err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := replicas(t, docker, name)
		return n == 2, fmt.Sprintf("%s has %d replicas, want 2 (one busy core per replica, target 0.2)", name, n)
	})
}
