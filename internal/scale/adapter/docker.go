package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

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
	// raw writes replica counts (see SetReplicas); rawErr is why there is
	// none, reported by SetReplicas.
	raw    *dockerhost.Raw
	rawErr error
	// callWait bounds each call to dockerd (callWait).
	callWait time.Duration
}

// callWait is how long one of the autoscaler's calls to dockerd may take:
// they take milliseconds, and one dockerd never answered held the resync
// loop, or a service's decisions, for good. A call that times out fails
// as one dockerd refused: the loops retry, a decision is answered
// unavailable.
const callWait = 10 * time.Second

// NewSwarm wraps api.
func NewSwarm(api *client.Client) *Swarm { return NewSwarmWrapped(api, nil) }

// NewSwarmWrapped is NewSwarm with wrap around the transport of the
// requests that write replica counts (a test's instrumentation).
func NewSwarmWrapped(api *client.Client, wrap func(http.RoundTripper) http.RoundTripper) *Swarm {
	raw, err := dockerhost.NewRaw(api, wrap)
	return &Swarm{api: api, raw: raw, rawErr: err, callWait: callWait}
}

// Services implements scale.Swarm.
func (s *Swarm) Services(ctx context.Context) ([]scale.Service, error) {
	ctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	list, err := s.api.ServiceList(ctx, swarm.ServiceListOptions{})
	if err != nil {
		return nil, err // the caller names the call
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
	ctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	svc, _, err := s.api.ServiceInspectWithRaw(ctx, idOrName, swarm.ServiceInspectOptions{})
	if errdefs.IsNotFound(err) {
		return scale.Service{}, fmt.Errorf("service %s: %w", idOrName, scale.ErrNotFound)
	}
	if err != nil {
		return scale.Service{}, err // the caller names the call
	}
	return toService(svc), nil
}

// serviceRef holds every swarm service's ID (lower-case letters and
// digits) and name (letters, digits, '-' and '_', starting with a letter
// or digit); a '.' after the first character cannot make a path segment
// "." or "..", so it is left for Docker to judge.
var serviceRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// SetReplicas implements scale.Swarm: it reads the service at version and
// writes it back with the new replica count and nothing else changed. Both
// go through Raw at the daemon's own API version, as JSON left as Docker
// gave it: the typed client would rewrite the image to its short form and
// drop the fields its types lack (on 29, a task's swap limits, which the
// daemon also clears below API 1.52), and any change to the task template
// restarts every task. Docker refuses a write at an old version ("update
// out of sequence"), which is reported as scale.ErrVersionConflict.
func (s *Swarm) SetReplicas(ctx context.Context, id string, version uint64, replicas int) error {
	if !serviceRef.MatchString(id) {
		return fmt.Errorf("service %q: not a swarm service name or ID: %w", id, scale.ErrNotFound)
	}
	if s.rawErr != nil {
		return s.rawErr
	}
	// One bound for the read, check and write: three calls of
	// milliseconds each.
	ctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	ver, err := s.raw.APIVersion(ctx)
	if err != nil {
		return fmt.Errorf("update service %s: %w", id, err)
	}
	status, body, err := s.raw.Do(ctx, http.MethodGet, ver, "/services/"+id, nil, nil)
	switch {
	case err != nil:
		return fmt.Errorf("inspect service %s: %w", id, err)
	case status == http.StatusNotFound:
		return fmt.Errorf("service %s: %w", id, scale.ErrNotFound)
	case status != http.StatusOK:
		return fmt.Errorf("inspect service %s: %s", id, dockerhost.DaemonError(status, body))
	}
	spec, at, err := withReplicas(body, replicas)
	if err != nil {
		return fmt.Errorf("service %s: %w", id, err)
	}
	if at != version {
		return fmt.Errorf("service %s at version %d, not %d: %w", id, at, version, scale.ErrVersionConflict)
	}
	q := url.Values{"version": {strconv.FormatUint(version, 10)}}
	status, body, err = s.raw.Do(ctx, http.MethodPost, ver, "/services/"+id+"/update", q, spec)
	if err != nil {
		return fmt.Errorf("update service %s: %w", id, err)
	}
	switch msg := dockerhost.DaemonError(status, body); {
	case status == http.StatusOK:
		return nil
	case status == http.StatusNotFound:
		return fmt.Errorf("service %s: %w", id, scale.ErrNotFound)
	case status == http.StatusConflict || strings.Contains(msg, "out of sequence"):
		return fmt.Errorf("update service %s: %w: %s", id, scale.ErrVersionConflict, msg)
	default:
		return fmt.Errorf("update service %s: %s", id, msg)
	}
}

// withReplicas takes a service as Docker's inspect gives it and returns
// its spec with the replica count set to n, every other field left as
// Docker wrote it, and the service's version. A service with no replica
// count (global, a job) is scale.ErrGlobalService.
func withReplicas(service []byte, n int) ([]byte, uint64, error) {
	if n < 0 {
		return nil, 0, fmt.Errorf("%d replicas: not a replica count", n)
	}
	var svc struct {
		Version struct{ Index uint64 }
		Spec    map[string]json.RawMessage
	}
	if err := json.Unmarshal(service, &svc); err != nil {
		return nil, 0, fmt.Errorf("read service: %w", err)
	}
	if svc.Spec == nil {
		return nil, 0, errors.New("read service: it has no Spec")
	}
	var mode map[string]json.RawMessage
	if err := json.Unmarshal(svc.Spec["Mode"], &mode); err != nil || mode == nil {
		return nil, 0, fmt.Errorf("read service mode %s: not an object", svc.Spec["Mode"])
	}
	var replicated map[string]json.RawMessage
	if json.Unmarshal(mode["Replicated"], &replicated) != nil || replicated == nil {
		return nil, 0, scale.ErrGlobalService
	}
	replicated["Replicas"] = json.RawMessage(strconv.Itoa(n))
	var err error
	if mode["Replicated"], err = json.Marshal(replicated); err != nil {
		return nil, 0, err
	}
	if svc.Spec["Mode"], err = json.Marshal(mode); err != nil {
		return nil, 0, err
	}
	spec, err := json.Marshal(svc.Spec)
	return spec, svc.Version.Index, err
}

// Wanted implements scale.Swarm.
func (s *Swarm) Wanted(ctx context.Context, id string) ([]scale.Task, error) {
	ctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	tasks, err := s.api.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", id))})
	if err != nil {
		return nil, fmt.Errorf("list tasks of service %s: %w", id, err)
	}
	var out []scale.Task
	for _, t := range tasks {
		if wanted(t, id) {
			out = append(out, scale.Task{ID: t.ID, Slot: t.Slot, State: string(t.Status.State)})
		}
	}
	return out, nil
}

// wanted reports whether t is a task of service id that swarm wants
// running and that has not ended. The filter also takes a name: only the
// service's own tasks count. An ended task (failed, complete, rejected…)
// whose desired state swarm has not yet lowered holds no slot: its
// replacement does, and counting both made a settled scale-down look lost.
func wanted(t swarm.Task, id string) bool {
	if t.ServiceID != id || (t.DesiredState != swarm.TaskStateRunning && t.DesiredState != swarm.TaskStateReady) {
		return false
	}
	switch t.Status.State {
	case swarm.TaskStateComplete, swarm.TaskStateShutdown, swarm.TaskStateFailed, swarm.TaskStateRejected,
		swarm.TaskStateRemove, swarm.TaskStateOrphaned:
		return false
	}
	return true
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
			// Docker's uint64 held in an int: beyond its range the
			// conversion wraps negative, and a scale-up from there rose
			// to the minimum.
			out.Replicas = int(min(*m.Replicated.Replicas, math.MaxInt))
		}
	default: // global, and the global and replicated jobs of newer Dockers
		out.Global = true
	}
	return out
}
