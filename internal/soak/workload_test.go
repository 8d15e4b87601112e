package soak_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/errdefs"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/testenv"
)

// workload drives the cluster as users do: services scaled at random
// through `underlay control` (the scale route and Orbiter's), plain
// containers started and removed, services rolled. Its random stream is
// its own, seeded from the run's seed.
type workload struct {
	t    *testing.T
	c    *cluster
	rng  *rand.Rand
	http *http.Client
	// gate is held during each action; pause takes it, so no action is in
	// flight while the cluster is judged.
	gate sync.Mutex

	mu    sync.Mutex // guards plain
	plain []plainCtr
	seq   int
}

type plainCtr struct {
	node int
	id   string
}

func newWorkload(t *testing.T, c *cluster, e soakEnv) *workload {
	w := &workload{t: t, c: c, rng: rand.New(rand.NewPCG(e.seed, 0x3017)), http: &http.Client{Timeout: 15 * time.Second}}
	c.services = []svcDef{
		{name: "soak-a", network: poolNet, max: e.maxReplicas},
		{name: "soak-b", network: poolNet, max: max(1, e.maxReplicas-1)},
		{name: "soak-c", network: pnNet, max: max(1, e.maxReplicas-1)},
	}
	return w
}

func (w *workload) pause()  { w.gate.Lock() }
func (w *workload) resume() { w.gate.Unlock() }

// createServices creates the services, one replica each, scaled by the
// control between 0 and their maximum; updates roll one task at a time.
func (w *workload) createServices(ctx context.Context) {
	one := uint64(1)
	for _, sv := range w.c.services {
		labels := map[string]string{
			scale.LabelOrbiter: "true", scale.LabelMin: "0", scale.LabelMax: strconv.Itoa(sv.max),
			scale.LabelAllowDown: "true", scale.LabelCooldownUp: "0", scale.LabelCooldownDown: "0",
			scale.LabelStabilizationDown: "0",
		}
		spec := swarm.ServiceSpec{
			Annotations: swarm.Annotations{Name: sv.name, Labels: labels},
			TaskTemplate: swarm.TaskSpec{
				ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage, Env: []string{"SERVICE_NAME=" + sv.name}},
				Networks:      []swarm.NetworkAttachmentConfig{{Target: sv.network}},
			},
			Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
			UpdateConfig: &swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionContinue},
		}
		if _, err := w.c.lab.Nodes[0].Docker.ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{}); err != nil {
			w.t.Fatalf("create service %s: %v", sv.name, err)
		}
	}
}

// run acts every 0.5 to 2 s until ctx ends.
func (w *workload) run(ctx context.Context) {
	for {
		if sleep(ctx, 500*time.Millisecond+time.Duration(w.rng.Int64N(int64(1500*time.Millisecond)))) != nil {
			return
		}
		w.gate.Lock()
		if ctx.Err() == nil {
			w.act(ctx)
		}
		w.gate.Unlock()
	}
}

// act does one thing, logged with its outcome; failures are expected
// while faults are active, and are not violations.
func (w *workload) act(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	sv := w.c.services[w.rng.IntN(len(w.c.services))]
	control := w.c.controls[w.rng.IntN(len(w.c.controls))]
	var what string
	var err error
	switch k := w.rng.IntN(100); {
	case k < 30:
		n := w.rng.IntN(sv.max + 1)
		what = fmt.Sprintf("scale %s to %d via %s", sv.name, n, control)
		err = w.post(ctx, control+"/v1/underlay/services/"+sv.name+"/scale", fmt.Sprintf(`{"replicas": %d}`, n))
	case k < 55:
		dir := []string{"up", "down"}[w.rng.IntN(2)]
		what = fmt.Sprintf("orbiter %s %s via %s", dir, sv.name, control)
		err = w.post(ctx, control+"/v1/orbiter/handle/"+scale.AutoswarmName+"/"+sv.name+"/"+dir, "")
	case k < 72:
		node := w.rng.IntN(len(w.c.lab.Nodes))
		nw := []string{poolNet, pnNet}[w.rng.IntN(2)]
		what = fmt.Sprintf("start a plain container on %s on %s", nodeName(node), nw)
		err = w.startPlain(ctx, node, nw)
	case k < 88:
		what, err = w.removePlain(ctx)
	default:
		what = "roll " + sv.name
		err = w.roll(ctx, sv.name)
	}
	if err != nil {
		w.c.event("workload: %s: %v", what, err)
	} else {
		w.c.event("workload: %s", what)
	}
}

// post sends a scaling request with the lab's control token.
func (w *workload) post(ctx context.Context, url, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+w.c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var rec scale.Record
	json.Unmarshal(b, &rec)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	if rec.Refused {
		return fmt.Errorf("refused (%s): %s", rec.Reason, rec.Why)
	}
	return nil
}

// startPlain runs a plain container of the test image on node, on nw.
func (w *workload) startPlain(ctx context.Context, node int, nw string) error {
	w.mu.Lock()
	w.seq++
	name := fmt.Sprintf("soak-plain-%d", w.seq)
	w.mu.Unlock()
	d := w.c.lab.Nodes[node].Docker
	created, err := d.ContainerCreate(ctx, &container.Config{
		Image: testenv.TestImage, Labels: map[string]string{plainLabel: "1"}, Env: []string{"SERVICE_NAME=" + plainName},
	}, &container.HostConfig{NetworkMode: container.NetworkMode(nw)},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{nw: {}}}, nil, name)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.plain = append(w.plain, plainCtr{node: node, id: created.ID})
	w.mu.Unlock()
	return d.ContainerStart(ctx, created.ID, container.StartOptions{})
}

// removePlain removes a plain container at random.
func (w *workload) removePlain(ctx context.Context) (string, error) {
	w.mu.Lock()
	if len(w.plain) == 0 {
		w.mu.Unlock()
		return "no plain container to remove", nil
	}
	i := w.rng.IntN(len(w.plain))
	p := w.plain[i]
	w.plain = append(w.plain[:i], w.plain[i+1:]...)
	w.mu.Unlock()
	what := fmt.Sprintf("remove plain container %s on %s", p.id[:12], nodeName(p.node))
	err := w.c.lab.Nodes[p.node].Docker.ContainerRemove(ctx, p.id, container.RemoveOptions{Force: true})
	if err != nil && !errdefs.IsNotFound(err) {
		w.mu.Lock()
		w.plain = append(w.plain, p) // to be removed again later
		w.mu.Unlock()
	}
	return what, err
}

// roll forces a rolling update of a service (its tasks replaced one at a
// time), as a new image would.
func (w *workload) roll(ctx context.Context, name string) error {
	d := w.c.lab.Nodes[0].Docker
	s, _, err := d.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
	if err != nil {
		return err
	}
	s.Spec.TaskTemplate.ForceUpdate++
	_, err = d.ServiceUpdate(ctx, s.ID, s.Version, s.Spec, swarm.ServiceUpdateOptions{})
	return err
}

// readToken reads the control's token file.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("control token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
