package testenv

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/scale/adapter"
)

// Swarm makes the local dockerd a single-node swarm manager when it is not
// in a swarm. It stays one: test packages run in parallel and may share it,
// so no test can know when leaving is safe. The returned function is kept
// for callers' defer and does nothing.
func Swarm(t testing.TB, d *client.Client) (leave func()) {
	t.Helper()
	ctx := Context(t, time.Minute)
	info, err := d.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Swarm.LocalNodeState == swarm.LocalNodeStateActive {
		return func() {}
	}
	_, err = d.SwarmInit(ctx, swarm.InitRequest{ListenAddr: "127.0.0.1:2377", AdvertiseAddr: "127.0.0.1"})
	if err != nil && !strings.Contains(err.Error(), "already part of a swarm") {
		t.Fatalf("swarm init: %v", err)
	}
	return func() {}
}

// SwarmMacvlanNetwork creates the guide's swarm macvlan network: a local
// config-only network on a new veth parent, then a swarm-scoped network
// built --config-from it. It returns the swarm network's name.
func SwarmMacvlanNetwork(t testing.TB, d *client.Client, name, subnet24 string) string {
	t.Helper()
	parent := VethParent(t, peerAddress(subnet24))
	cfgName := name + "-cfg"
	createNetwork(t, d, cfgName, network.CreateOptions{
		ConfigOnly: true,
		Options:    map[string]string{"parent": parent},
		IPAM:       &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet24, IPRange: subnet24}}},
	})
	createNetwork(t, d, name, network.CreateOptions{
		Driver:     "macvlan",
		Scope:      "swarm",
		ConfigFrom: &network.ConfigReference{Network: cfgName},
	})
	return name
}

// SwarmService creates a replicated service of the test image on netName
// whose task containers carry labels, and removes it when t ends.
func SwarmService(t testing.TB, d *client.Client, name, netName string, replicas uint64, labels map[string]string) string {
	t.Helper()
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: TestImage, Labels: labels},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: netName}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}
	return CreateService(t, d, spec)
}

// CreateService creates a service and, when t ends, removes it and waits
// until its task containers are gone (so that its network can go too).
func CreateService(t testing.TB, d *client.Client, spec swarm.ServiceSpec) string {
	t.Helper()
	resp, err := d.ServiceCreate(Context(t, time.Minute), spec, swarm.ServiceCreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", spec.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.ServiceRemove(ctx, resp.ID); err != nil && !client.IsErrNotFound(err) {
			t.Logf("remove service %s: %v", spec.Name, err)
		}
		for ctx.Err() == nil {
			tasks, err := d.ContainerList(ctx, containerListByLabel("com.docker.swarm.service.id", resp.ID))
			if err != nil || len(tasks) == 0 {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	return resp.ID
}

// ScaleService sets a replicated service's replicas to n. Scaling down, it
// waits until swarm wants no more than n of its tasks running, and scales
// again when swarm does not get there: swarmkit's scale-down writes each
// task it removes from a copy read before, so a task that changed in
// between (a replacement task starting) fails the write on its version,
// keeps running with nothing to retry it, and only the next update of the
// service brings it down (setTasksDesiredState in swarmkit's
// manager/orchestrator/replicated/services.go).
func ScaleService(t testing.TB, d *client.Client, id string, n uint64) {
	t.Helper()
	ctx := Context(t, 2*time.Minute)
	var before uint64
	var svcID string // id may be a name; the tasks are listed by ID
	scale := func() {
		t.Helper()
		updateSwarmObject(t, fmt.Sprintf("scale service %s to %d", id, n), func() error {
			svc, _, err := d.ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
			if err != nil {
				return err
			}
			svcID = svc.ID
			if r := svc.Spec.Mode.Replicated.Replicas; r != nil {
				before = *r
			}
			svc.Spec.Mode.Replicated.Replicas = &n
			_, err = d.ServiceUpdate(ctx, id, svc.Version, svc.Spec, swarm.ServiceUpdateOptions{})
			return err
		})
	}
	scale()
	if n >= before {
		return
	}
	// Swarm marks the tasks it removes at once; one still wanted seconds
	// later was lost.
	const again = 10 * time.Second
	sw := adapter.NewSwarm(d) // what underlay control checks after a scale-down
	last := time.Now()
	for {
		wanted, err := sw.Wanted(ctx, svcID)
		if err != nil {
			t.Fatalf("scale service %s to %d: %v", id, n, err)
		}
		if len(wanted) <= int(n) {
			return
		}
		if time.Since(last) > again {
			t.Logf("scale service %s to %d: swarm still wants %d tasks running (%v); scaling again", id, n, len(wanted), wanted)
			scale()
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("scale service %s to %d: swarm still wants %d tasks running: %v", id, n, len(wanted), wanted)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// SetNodeAvailability sets a swarm node's availability (a paused node
// keeps its tasks and gets no new ones).
func SetNodeAvailability(t testing.TB, d *client.Client, nodeID string, a swarm.NodeAvailability) {
	t.Helper()
	ctx := Context(t, time.Minute)
	updateSwarmObject(t, fmt.Sprintf("set node %s %s", nodeID, a), func() error {
		n, _, err := d.NodeInspectWithRaw(ctx, nodeID)
		if err != nil {
			return err
		}
		n.Spec.Availability = a
		return d.NodeUpdate(ctx, nodeID, n.Version, n.Spec)
	})
}

// updateSwarmObject runs update (a read, then a write at the version read)
// until swarm takes it. Swarm bumps an object's version as it works on it
// (a new service as it allocates it, a node as it reports): a write made
// from an older read is refused "out of sequence"; read again.
func updateSwarmObject(t testing.TB, what string, update func() error) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		err := update()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "out of sequence") || attempt == 10 {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RemoveService removes a service and waits until its task containers are gone.
func RemoveService(t testing.TB, d *client.Client, name string) {
	t.Helper()
	ctx := Context(t, time.Minute)
	if err := d.ServiceRemove(ctx, name); err != nil {
		t.Fatalf("remove service %s: %v", name, err)
	}
	for ctx.Err() == nil {
		tasks, err := d.ContainerList(ctx, containerListByLabel("com.docker.swarm.service.name", name))
		if err != nil || len(tasks) == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
