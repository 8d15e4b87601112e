package adapter

import (
	"context"
	"log/slog"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/dashboard"
	"github.com/underlay/underlay/internal/dockerhost"
)

// Swarm adapts a Docker client of a swarm manager to dashboard.Swarm.
type Swarm struct {
	api *client.Client
	log *slog.Logger
}

// NewSwarm wraps api.
func NewSwarm(api *client.Client, log *slog.Logger) *Swarm {
	return &Swarm{api: api, log: log.With("component", "dashboard_swarm")}
}

// Nodes implements dashboard.Swarm.
func (s *Swarm) Nodes(ctx context.Context) ([]dashboard.SwarmNode, error) {
	list, err := s.api.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]dashboard.SwarmNode, len(list))
	for i, n := range list {
		out[i] = dashboard.SwarmNode{
			ID: n.ID, Hostname: n.Description.Hostname, Role: string(n.Spec.Role),
			Leader: n.ManagerStatus != nil && n.ManagerStatus.Leader, State: string(n.Status.State),
			Availability: string(n.Spec.Availability), Addr: n.Status.Addr,
			EngineVersion: n.Description.Engine.EngineVersion, Message: n.Status.Message,
		}
	}
	return out, nil
}

// Services implements dashboard.Swarm.
func (s *Swarm) Services(ctx context.Context) ([]dashboard.SwarmService, error) {
	list, err := s.api.ServiceList(ctx, swarm.ServiceListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]dashboard.SwarmService, len(list))
	for i, svc := range list {
		ds := dashboard.SwarmService{ID: svc.ID, Name: svc.Spec.Name, Labels: svc.Spec.Labels}
		if cs := svc.Spec.TaskTemplate.ContainerSpec; cs != nil {
			ds.Image = cs.Image
		}
		switch m := svc.Spec.Mode; {
		case m.Replicated != nil:
			if m.Replicated.Replicas != nil {
				ds.Replicas = int(*m.Replicated.Replicas)
			}
		default: // global, and the jobs of newer Dockers
			ds.Global = true
		}
		out[i] = ds
	}
	return out, nil
}

// Tasks implements dashboard.Swarm.
func (s *Swarm) Tasks(ctx context.Context) ([]dashboard.SwarmTask, error) {
	list, err := s.api.TaskList(ctx, swarm.TaskListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]dashboard.SwarmTask, len(list))
	for i, t := range list {
		dt := dashboard.SwarmTask{
			ID: t.ID, ServiceID: t.ServiceID, NodeID: t.NodeID, Slot: t.Slot,
			DesiredState: string(t.DesiredState), State: string(t.Status.State),
			Message: t.Status.Message, Err: t.Status.Err, Since: t.Status.Timestamp,
		}
		if cs := t.Spec.ContainerSpec; cs != nil {
			dt.Image = cs.Image
		}
		if c := t.Status.ContainerStatus; c != nil {
			dt.ContainerID = c.ContainerID
		}
		out[i] = dt
	}
	return out, nil
}

// Changes implements dashboard.Swarm: service and node events (a manager
// sees the whole swarm's) and this node's container events.
func (s *Swarm) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	f := filters.NewArgs(filters.Arg("type", string(events.ServiceEventType)), filters.Arg("type", string(events.NodeEventType)),
		filters.Arg("type", string(events.ContainerEventType)))
	go func() {
		backoff.Follow(ctx, s.log, "docker event stream", backoff.Stream[struct{}]{
			Subscribe: func(ctx context.Context) (<-chan struct{}, <-chan error) {
				return dockerhost.Subscribe(ctx, s.api, f, 16, func(events.Message) (struct{}, bool) { return struct{}{}, true })
			},
			Opened: func() { signal(out) },
			Handle: func(context.Context, struct{}) { signal(out) },
			Lost:   func() {},
		})
	}()
	return out
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// pause is how long a watch waits after a failed blocking query, at most.
const pause = 30 * time.Second
