package register

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// signalled says whether LeftOutChanged fired, taking the signal.
func signalled(a *Agent) bool {
	select {
	case <-a.LeftOutChanged():
		return true
	default:
		return false
	}
}

// TestAgentKeepsLeftOutTasks: a pass records a running Swarm task
// container that has no service, with why, and signals the change once;
// a pass that changes nothing signals nothing; a container with services,
// or no task's, is not recorded; one gone, or not listed by a resync, is
// dropped.
func TestAgentKeepsLeftOutTasks(t *testing.T) {
	ctx := context.Background()
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := newPassAgent(t, d, c)
	swarm := func(ct Container, task string) Container {
		ct.Labels = map[string]string{labelSwarmTaskID: task, labelSwarmNodeID: "node1", labelSwarmServiceName: "svc"}
		return ct
	}
	worker := webContainer("worker", true)
	worker.Exposed = nil
	ignored := swarm(webContainer("ignored", true), "task2")
	ignored.Labels["SERVICE_IGNORE"] = "1"
	plain := webContainer("plain", true)
	plain.Exposed = nil
	for _, ct := range []Container{swarm(worker, "task1"), ignored, swarm(webContainer("web", true), "task3"), plain} {
		d.set(ct)
		if err := a.syncContainer(ctx, ct.ID); err != nil {
			t.Fatal(err)
		}
	}
	want := []LeftOut{
		{ContainerID: "ignored", TaskID: "task2", NodeID: "node1", Reason: LeftOutIgnore},
		{ContainerID: "worker", TaskID: "task1", NodeID: "node1", Reason: LeftOutNoPort},
	}
	if diff := cmp.Diff(want, a.LeftOut()); diff != "" {
		t.Errorf("left out (-want +got):\n%s", diff)
	}
	if !signalled(a) {
		t.Error("no change signalled")
	}
	if err := a.syncContainer(ctx, "worker"); err != nil {
		t.Fatal(err)
	}
	if signalled(a) {
		t.Error("a pass that changed nothing signalled a change")
	}
	d.mu.Lock()
	delete(d.containers, "worker")
	delete(d.containers, "ignored")
	d.mu.Unlock()
	if err := a.syncContainer(ctx, "worker"); err != nil {
		t.Fatal(err)
	}
	if got := a.LeftOut(); len(got) != 1 || got[0].ContainerID != "ignored" || !signalled(a) {
		t.Errorf("after worker's removal: %+v, signalled or not; want ignored alone, signalled", got)
	}
	if err := a.resync(ctx); err != nil { // ignored, removed unseen
		t.Fatal(err)
	}
	if got := a.LeftOut(); len(got) != 0 || !signalled(a) {
		t.Errorf("after a resync that lists no left-out container: %+v; want none, signalled", got)
	}
}
