package adapter

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"

	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/scale"
)

// Swarm adapts a Docker client of a swarm manager to scale.Swarm.
type Swarm struct {
	api *client.Client
}

// NewSwarm wraps api.
func NewSwarm(api *client.Client) *Swarm { return &Swarm{api: api} }

// Services implements scale.Swarm.
func (s *Swarm) Services(ctx context.Context) ([]scale.Service, error) {
	list, err := s.api.ServiceList(ctx, swarm.ServiceListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]scale.Service, len(list))
	for i, svc := range list {
		out[i] = toService(svc)
	}
	return out, nil
}

// Service implements scale.Swarm. A name that no swarm service can have
// is not found without asking Docker: the client puts it in the request's
// path as it is, so "../secrets/X" would read another object. Control
// passes IDs Docker gave it; this keeps it so for any caller.
func (s *Swarm) Service(ctx context.Context, idOrName string) (scale.Service, error) {
	if !serviceRef.MatchString(idOrName) {
		return scale.Service{}, fmt.Errorf("service %q: not a swarm service name or ID: %w", idOrName, scale.ErrNotFound)
	}
	svc, _, err := s.api.ServiceInspectWithRaw(ctx, idOrName, swarm.ServiceInspectOptions{})
	if errdefs.IsNotFound(err) {
		return scale.Service{}, fmt.Errorf("service %s: %w", idOrName, scale.ErrNotFound)
	}
	if err != nil {
		return scale.Service{}, err
	}
	return toService(svc), nil
}

// serviceRef holds every swarm service's ID (lower-case letters and
// digits) and name (letters, digits, '-' and '_', starting with a letter
// or digit); a '.' after the first character cannot make a path segment
// "." or "..", so it is left for Docker to judge.
var serviceRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// SetReplicas implements scale.Swarm: it reads the spec at version and
// writes it back with the new replica count, so nothing else in the spec
// changes. Docker refuses a write at an old version ("update out of
// sequence"), which is reported as scale.ErrVersionConflict.
func (s *Swarm) SetReplicas(ctx context.Context, id string, version uint64, replicas int) error {
	svc, _, err := s.api.ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("service %s: %w", id, scale.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("inspect service %s: %w", id, err)
	}
	if svc.Version.Index != version {
		return fmt.Errorf("service %s at version %d, not %d: %w", id, svc.Version.Index, version, scale.ErrVersionConflict)
	}
	spec := svc.Spec
	if spec.Mode.Replicated == nil {
		return fmt.Errorf("service %s: %w", id, scale.ErrGlobalService)
	}
	n := uint64(replicas)
	spec.Mode.Replicated = &swarm.ReplicatedService{Replicas: &n}
	_, err = s.api.ServiceUpdate(ctx, id, swarm.Version{Index: version}, spec, swarm.ServiceUpdateOptions{})
	if err != nil {
		if errdefs.IsConflict(err) || strings.Contains(err.Error(), "out of sequence") {
			return fmt.Errorf("update service %s: %w: %w", id, scale.ErrVersionConflict, err)
		}
		return fmt.Errorf("update service %s: %w", id, err)
	}
	return nil
}

// Wanted implements scale.Swarm.
func (s *Swarm) Wanted(ctx context.Context, id string) ([]scale.Task, error) {
	tasks, err := s.api.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", id))})
	if err != nil {
		return nil, fmt.Errorf("list tasks of service %s: %w", id, err)
	}
	var out []scale.Task
	for _, t := range tasks {
		// The filter also takes a name: keep the service's own tasks.
		if t.ServiceID != id {
			continue
		}
		if t.DesiredState == swarm.TaskStateRunning || t.DesiredState == swarm.TaskStateReady {
			out = append(out, scale.Task{ID: t.ID, Slot: t.Slot, State: string(t.Status.State)})
		}
	}
	return out, nil
}

// Events implements scale.Swarm.
func (s *Swarm) Events(ctx context.Context) (<-chan scale.ServiceEvent, <-chan error) {
	f := filters.NewArgs(filters.Arg("type", string(events.ServiceEventType)))
	return dockerhost.Subscribe(ctx, s.api, f, 64, func(m events.Message) (scale.ServiceEvent, bool) {
		return scale.ServiceEvent{ServiceID: m.Actor.ID, Action: string(m.Action)}, m.Actor.ID != ""
	})
}

func toService(svc swarm.Service) scale.Service {
	out := scale.Service{
		ID: svc.ID, Name: svc.Spec.Name, Labels: svc.Spec.Labels, Version: svc.Version.Index,
	}
	switch m := svc.Spec.Mode; {
	case m.Replicated != nil:
		if m.Replicated.Replicas != nil {
			out.Replicas = int(*m.Replicated.Replicas)
		}
	default: // global, and the global and replicated jobs of newer Dockers
		out.Global = true
	}
	return out
}
