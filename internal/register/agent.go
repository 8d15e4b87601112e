package register

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/pkg/stringid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/termtext"
)

// ErrNotFound is returned by Docker.Inspect for a container that no longer exists.
var ErrNotFound = errors.New("container not found")

// Docker is the part of the Docker API the agent needs.
type Docker interface {
	// Events streams container and network events until ctx ends; the
	// error channel reports the end of the stream.
	Events(ctx context.Context) (<-chan Event, <-chan error)
	// RunningContainers lists the IDs of running containers.
	RunningContainers(ctx context.Context) ([]string, error)
	// Inspect returns one container, or ErrNotFound.
	Inspect(ctx context.Context, id string) (Container, error)
	// Endpoint returns a container's endpoint on one network, read from
	// the network (dockerd answers it while the container is starting),
	// or ErrNotFound. The read is one sent at or after after, the time
	// the connect event was received, or later: a read begun before may
	// be shared with other connects.
	Endpoint(ctx context.Context, networkID, containerID string, after time.Time) (Endpoint, error)
	// RunningEndpoints returns, for those of ids that are running, their
	// network endpoints, from Docker's container listing (which dockerd
	// answers from its snapshot, without waiting for any container).
	RunningEndpoints(ctx context.Context, ids []string) (map[string][]Endpoint, error)
}

// Event is a Docker event that concerns one container.
type Event struct {
	ContainerID string
	Action      string
	Time        time.Time
	// NetworkID is the network of a connect or disconnect event.
	NetworkID string
}

// Catalog is the part of the Consul agent API the agent needs.
type Catalog interface {
	// Services lists the services carrying node's ownership marker.
	Services(ctx context.Context, node string) ([]Registered, error)
	// Register creates or replaces a service and its checks.
	Register(ctx context.Context, s Service) error
	// Deregister removes a service; removing an absent one succeeds.
	Deregister(ctx context.Context, id string) error
	// UpdateHealth sets the status of a HEALTHCHECK mirror check.
	UpdateHealth(ctx context.Context, h HealthMirror) error
	// Owner reads service id of the local agent: found says it is there,
	// node is its ownership marker ("" when it carries none).
	Owner(ctx context.Context, id string) (node string, found bool, err error)
}

// DeregisterMode says when a stopped container's services are removed.
type DeregisterMode string

const (
	// DeregisterAlways removes services as soon as the container stops.
	DeregisterAlways DeregisterMode = "always"
	// DeregisterOnSuccess keeps the services of a container that exited
	// with a non-zero code, until it is removed or restarted.
	DeregisterOnSuccess DeregisterMode = "on-success"
)

// Config configures an Agent.
type Config struct {
	Policy     Policy
	Deregister DeregisterMode
	// DeregisterOnExit removes every service of this node when Run returns.
	DeregisterOnExit bool
	// Resync is the period of full resyncs.
	Resync time.Duration
	// DriftCheck is how often Consul is read to notice lost registrations
	// (a Consul agent restarted with no state) and Consul coming back.
	DriftCheck time.Duration
	// Workers is how many containers are reconciled concurrently.
	Workers int
}

// Agent keeps Consul in step with the containers of one Docker host.
type Agent struct {
	cfg     Config
	docker  Docker
	catalog Catalog
	log     *slog.Logger
	metrics *metrics
	queue   *queue
	resyncC chan struct{}
	// serviceLocks serialises the Consul writes of each service ID.
	serviceLocks serviceLocks

	mu sync.Mutex // guards following fields
	// actual is what this agent believes Consul holds, by service ID.
	actual map[string]Registered
	// byContainer indexes actual: the service IDs of each container.
	byContainer map[string]map[string]bool
	// warned holds the metadata warnings already logged, by container ID,
	// so each problem is reported once rather than at every resync; a
	// container's go when a pass finds it gone, or a resync neither
	// running nor registered (forgetUnlisted), as do its sawRunning.
	warned map[string]map[Warning]bool
	// pending holds, per container, the events received since its last
	// pass began.
	pending map[string]pendingEvents
	// forced marks containers whose next pass must read Docker whatever
	// events came: a resync queued them.
	forced map[string]bool
	// sawRunning marks containers whose last pass that read Docker found
	// them running and made Consul match, with the event stream that pass
	// began under: a start event received since on the same stream tells
	// nothing new (see beginPass).
	sawRunning map[string]uint64
	// prepared holds what was read of created containers before their
	// start (see prepared.go); verifying holds the endpoints registered
	// from it of the containers whose start is not yet checked.
	prepared  map[string]*prepared
	verifying map[string][]Endpoint
	// waiting holds, by service ID, the containers that want an ID the
	// agent holds registered for another container (two containers with
	// one SERVICE_ID, or a container started under the name of one whose
	// deregistration is still to come): each is reconciled again once
	// that registration goes, and never takes it over meanwhile; one a
	// pass finds gone leaves (forgetContainer).
	waiting map[string]map[string]bool
	// leftOut holds, by container ID, the running Swarm task containers
	// Desired gives no service, with why (see LeftOut); leftOutC is
	// signalled, without waiting, when it changes.
	leftOut  map[string]LeftOut
	leftOutC chan struct{}
	// stream counts the event stream's openings and losses; events may be
	// missed between a loss and the next opening.
	stream     uint64
	dockerOK   bool
	consulOK   bool
	lastResync time.Time
	// lastWrite is when the agent last wrote to Consul; a drift check
	// whose read overlapped a write compares two different moments.
	lastWrite time.Time
}

// NewAgent returns an agent; Run starts it.
func NewAgent(cfg Config, d Docker, c Catalog, log *slog.Logger, reg prometheus.Registerer) (*Agent, error) {
	if cfg.Policy.Node == "" {
		return nil, errors.New("agent: node name is empty")
	}
	switch cfg.Deregister {
	case "":
		cfg.Deregister = DeregisterAlways
	case DeregisterAlways, DeregisterOnSuccess:
	default:
		return nil, fmt.Errorf("agent: deregister mode %q: want always or on-success", cfg.Deregister)
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.DriftCheck <= 0 {
		cfg.DriftCheck = 2 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	q := newQueue()
	return &Agent{
		cfg: cfg, docker: d, catalog: c, queue: q,
		log:         log.With("component", "register"),
		metrics:     newMetrics(reg, q),
		resyncC:     make(chan struct{}, 1),
		actual:      map[string]Registered{},
		byContainer: map[string]map[string]bool{},
		warned:      map[string]map[Warning]bool{},
		pending:     map[string]pendingEvents{},
		forced:      map[string]bool{},
		sawRunning:  map[string]uint64{},
		prepared:    map[string]*prepared{},
		verifying:   map[string][]Endpoint{},
		waiting:     map[string]map[string]bool{},
		leftOut:     map[string]LeftOut{},
		leftOutC:    make(chan struct{}, 1),
	}, nil
}

// Run reconciles until ctx ends. Docker and Consul failures are retried with
// backoff; Run never gives up on them.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("agent starting", "node", a.cfg.Policy.Node, "resync", a.cfg.Resync, "deregister", a.cfg.Deregister)
	g, gctx := errgroup.WithContext(ctx)
	for range a.cfg.Workers {
		g.Go(func() error { a.work(gctx); return nil })
	}
	g.Go(func() error { a.watchDocker(gctx); return nil })
	g.Go(func() error { a.resyncLoop(gctx); return nil })
	g.Go(func() error { a.driftLoop(gctx); return nil })
	g.Go(func() error { <-gctx.Done(); a.queue.Close(); return nil })
	g.Wait()
	if a.cfg.DeregisterOnExit {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := a.deregisterAll(cctx); err != nil {
			return fmt.Errorf("deregister on exit: %w", err)
		}
	}
	a.log.Info("agent stopped")
	return nil
}

// Status is the agent's view of its dependencies, for /healthz.
type Status struct {
	DockerConnected bool      `json:"docker_connected"`
	ConsulReachable bool      `json:"consul_reachable"`
	Services        int       `json:"services"`
	LastResync      time.Time `json:"last_resync"`
	Queued          int       `json:"queued"`
}

// Status reports the agent's current state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Status{
		DockerConnected: a.dockerOK, ConsulReachable: a.consulOK,
		Services: len(a.actual), LastResync: a.lastResync, Queued: a.queue.Len(),
	}
}

// RequestResync asks for a full resync soon; requests made while one is
// pending collapse into it.
func (a *Agent) RequestResync() {
	select {
	case a.resyncC <- struct{}{}:
	default:
	}
}

func (a *Agent) work(ctx context.Context) {
	for {
		id, ok := a.queue.Get()
		if !ok {
			return
		}
		if id == verifyKey {
			a.verifyStarts(ctx)
			a.queue.Done(id)
			continue
		}
		if err := a.syncContainer(ctx, id); err != nil && ctx.Err() == nil {
			d := a.queue.Retry(id, 30*time.Second)
			a.log.Warn("reconcile container failed; will retry", "container", stringid.TruncateID(id), "retry_in", d, "err", err)
		} else {
			a.queue.Forget(id)
		}
		a.queue.Done(id)
	}
}

// syncContainer makes Consul hold exactly the desired services of one container.
func (a *Agent) syncContainer(ctx context.Context, id string) error {
	pass, skip := a.beginPass(id)
	if skip {
		a.metrics.passesSkipped.Inc()
		a.log.Debug("start event after a pass that saw the container running; nothing to read", "container", stringid.TruncateID(id))
		return nil
	}
	if done, err := a.preparedPass(ctx, id, pass); done {
		return err
	}
	start := time.Now()
	c, err := a.docker.Inspect(ctx, id)
	inspected := time.Since(start)
	gone := errors.Is(err, ErrNotFound)
	if err != nil && !gone {
		a.metrics.errors.WithLabelValues("docker").Inc()
		a.passFailed(id, pass)
		return fmt.Errorf("inspect container %s: %w", stringid.TruncateID(id), err)
	}
	var desired []Service
	var why string // why c has no service, if so
	if !gone {
		if !c.Running && a.cfg.Deregister == DeregisterOnSuccess && c.ExitCode != 0 {
			a.log.Debug("container failed; keeping its services (--deregister on-success)", "container", c.Name, "exit_code", c.ExitCode)
			a.noteLeftOut(id, c, "")
			a.verified(id, false)
			a.passDone(id, pass, false)
			return nil
		}
		a.prepare(id, pass, c)
		var warnings []Warning
		desired, warnings, why = DesiredWhy(c, a.cfg.Policy)
		a.reportWarnings(id, warnings)
		desired = a.withoutHeld(id, desired)
	} else {
		a.forgetContainer(id)
	}
	changes := Plan(desired, a.actualFor(id))
	// A container stopped or gone since its start is no view's mistake.
	a.verified(id, !changes.Empty() && !gone && c.Running)
	if changes.Empty() {
		a.passDone(id, pass, !gone && c.Running)
		a.noteLeftOut(id, c, why)
		return nil
	}
	if err := a.apply(ctx, id, changes); err != nil {
		a.passFailed(id, pass)
		return err
	}
	a.passDone(id, pass, !gone && c.Running)
	a.noteLeftOut(id, c, why) // after the write: registrations come first
	var sinceEvent time.Duration
	if !pass.events.oldest.IsZero() {
		sinceEvent = time.Since(pass.events.oldest)
		a.metrics.eventLatency.Observe(sinceEvent.Seconds())
	}
	a.log.Debug("container reconciled", "container", stringid.TruncateID(id), "inspect", inspected, "total", time.Since(start), "since_event", sinceEvent)
	return nil
}

// pendingEvents are the events of one container received since its last
// pass began.
type pendingEvents struct {
	oldest time.Time // time of the oldest, for the latency metric
	// created and started say a create or a start event is among them,
	// startedAt is the start's time; connects are the networks of connect
	// events; other says there is any other event.
	created, started, other bool
	startedAt               time.Time
	connects                []string
}

// startOnly says they are a start and the network connects before it:
// dockerd connects a container's networks as part of its start, before
// the start event, so a read that saw that run running saw them too.
// (noteEvent counts a connect after the start as another event.)
func (e pendingEvents) startOnly() bool {
	return e.started && !e.created && !e.other
}

// pass is one reconciliation of a container.
type pass struct {
	events pendingEvents // received since the previous pass began
	began  time.Time     // when it took its events: after each came
	stream uint64        // the event stream it began under
	forced bool          // a resync asked for it
}

// beginPass takes the container's pending events and says whether the pass
// can be skipped without reading Docker: when those events are a start
// (and the network connects before it) and the last pass that read Docker
// found the container running (and succeeded), on the same event stream.
// That is the common case of a container starting: the inspect its create
// or first connect event triggers waits in dockerd until the start is
// over, so it already reads the started container, and the connects and
// the start that follow would read it again.
//
// Why no change can hide behind a skip: a run of a container ends with a
// die event, and dockerd sends a container's events in order. Had the run
// that the last pass saw ended before a later start, its die event would
// have come either before that pass began (then the pass, reading after
// it, could not have seen that run running) or after (then it is pending,
// and not a start). So after only start events, the container is still in
// the run that pass read; and a connect before a start is of that start,
// done before the container was running, so that read saw it too. Events
// missed while the stream was down would
// break this; the stream count keeps passes of an earlier stream from
// counting, and a resync queues every container for a full pass anyway.
func (a *Agent) beginPass(id string) (pass, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	events, hasEvents := a.pending[id]
	delete(a.pending, id)
	forced := a.forced[id]
	delete(a.forced, id)
	saw, ok := a.sawRunning[id]
	skip := hasEvents && events.startOnly() && !forced && ok && saw == a.stream
	return pass{events: events, began: time.Now(), stream: a.stream, forced: forced}, skip
}

// passDone records what a pass that read Docker found, once Consul matches it.
func (a *Agent) passDone(id string, p pass, running bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if running {
		a.sawRunning[id] = p.stream
	} else {
		delete(a.sawRunning, id)
	}
}

// passFailed gives back a failed pass's events, for the retry's latency
// figure, and forgets what the container was seen doing.
func (a *Agent) passFailed(id string, p pass) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.sawRunning, id)
	ev := p.events
	if q, ok := a.pending[id]; ok {
		if ev.oldest.IsZero() || (!q.oldest.IsZero() && q.oldest.Before(ev.oldest)) {
			ev.oldest = q.oldest
		}
		ev.created = ev.created || q.created
		if q.started {
			ev.started, ev.startedAt = true, q.startedAt
		}
		ev.connects = append(ev.connects, q.connects...)
	}
	ev.other = true // the retry reads Docker, whatever the events
	a.pending[id] = ev
}

// newStream records that the event stream opened or was lost. The prepared
// views go with the old stream: events missed since may have changed their
// containers (or removed them, and nothing else would forget the view).
func (a *Agent) newStream() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stream++
	clear(a.prepared)
}

// apply makes the writes of one container's pass. Two containers may want
// one service ID (one removed, another started under its name:
// NODE:NAME:PORT; or one SERVICE_ID), each in its own worker: each ID's
// writes are made one at a time, a registration of an ID held for another
// container waits for it (holdsFor), and a deregistration is dropped once
// the ID is another container's.
func (a *Agent) apply(ctx context.Context, containerID string, ch Changes) error {
	for _, s := range ch.Register {
		if err := a.register(ctx, s); err != nil {
			return err
		}
	}
	for _, id := range ch.Deregister {
		if err := a.deregister(ctx, containerID, id); err != nil {
			return err
		}
	}
	for _, h := range ch.Health {
		if err := a.catalog.UpdateHealth(ctx, h); err != nil {
			a.metrics.errors.WithLabelValues("health").Inc()
			return fmt.Errorf("update health %s: %w", h.CheckID, err)
		}
		a.metrics.writes.WithLabelValues("health").Inc()
		a.setHealth(h)
		a.log.Info("health changed", "check", h.CheckID, "status", h.Status)
	}
	return nil
}

func (a *Agent) register(ctx context.Context, s Service) error {
	unlock := a.serviceLocks.lock(s.ID)
	defer unlock()
	// Taken by another container since this pass planned (withoutHeld).
	if a.holdsFor(s.ID, s.ContainerID()) {
		return nil
	}
	if foreign, err := a.foreign(ctx, s); err != nil || foreign {
		return err
	}
	if err := a.catalog.Register(ctx, s); err != nil {
		a.metrics.errors.WithLabelValues("register").Inc()
		return fmt.Errorf("register %s: %w", s.ID, err)
	}
	a.metrics.writes.WithLabelValues("register").Inc()
	r := Registered{ID: s.ID, ContainerID: s.ContainerID(), Hash: s.Meta[MetaHash]}
	if s.Health != nil {
		r.HealthStatus = s.Health.Status
	}
	a.setActual(r)
	a.log.Info("registered", "service", s.Name, "id", s.ID, "addr", s.Address, "port", s.Port)
	return nil
}

// foreign reports whether s's ID, one a container named (SERVICE_ID), is
// a service of the local Consul agent that this node's agent did not
// register: the operator's own (a config file's, another tool's). A
// container must neither replace it nor, as it stops, deregister it; it is
// left alone, with a warning, and looked up again at the next pass. The
// agent's own IDs (NODE:…), which no container may name (Desired), are not
// looked up, which spares a start's registration a read.
func (a *Agent) foreign(ctx context.Context, s Service) (bool, error) {
	if strings.HasPrefix(s.ID, a.cfg.Policy.Node+":") {
		return false, nil
	}
	if _, ours := a.ownerOf(s.ID); ours {
		return false, nil
	}
	node, found, err := a.catalog.Owner(ctx, s.ID)
	if err != nil {
		a.metrics.errors.WithLabelValues("consul_read").Inc()
		return false, fmt.Errorf("look up service %s before registering it: %w", s.ID, err)
	}
	if !found || node == a.cfg.Policy.Node {
		return false, nil
	}
	problem := "a service of this ID is registered on the local Consul agent by something else than this node's underlay agent"
	if node != "" {
		problem = fmt.Sprintf("a service of this ID is registered on the local Consul agent by the underlay agent of node %s", termtext.Q(node))
	}
	a.reportWarnings(s.ContainerID(), []Warning{{Container: s.Meta[MetaContainerName], Key: "SERVICE_ID", Value: s.ID,
		Problem: problem + "; not replaced (remove it, or name another SERVICE_ID)"}})
	return true, nil
}

func (a *Agent) deregister(ctx context.Context, containerID, id string) error {
	unlock := a.serviceLocks.lock(id)
	defer unlock()
	if owner, ok := a.ownerOf(id); ok && owner != containerID {
		a.log.Debug("service now another container's; not deregistered", "id", id, "container", stringid.TruncateID(containerID), "owner", stringid.TruncateID(owner))
		return nil
	}
	if err := a.catalog.Deregister(ctx, id); err != nil {
		a.metrics.errors.WithLabelValues("deregister").Inc()
		return fmt.Errorf("deregister %s: %w", id, err)
	}
	a.metrics.writes.WithLabelValues("deregister").Inc()
	a.deleteActual(id)
	a.log.Info("deregistered", "id", id)
	a.releaseWaiting(id)
	return nil
}

// withoutHeld drops from a container's desired services those whose ID
// the agent holds registered for another container (see waiting): one
// container's registration never replaces another's, which would flip
// between them at every resync and go with either one's stop.
func (a *Agent) withoutHeld(containerID string, desired []Service) []Service {
	return slices.DeleteFunc(desired, func(s Service) bool { return a.holdsFor(s.ID, containerID) })
}

// holdsFor reports whether service id is registered for another container
// than containerID, and if so records containerID as waiting for it.
func (a *Agent) holdsFor(id, containerID string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	owner := a.actual[id].ContainerID
	if owner == "" || owner == containerID {
		return false
	}
	w := a.waiting[id]
	if w == nil {
		w = map[string]bool{}
		a.waiting[id] = w
	}
	if !w[containerID] {
		w[containerID] = true
		a.metrics.held.Inc()
		a.log.Info("service ID registered for another container; this one is registered once that registration goes",
			"id", id, "container", stringid.TruncateID(containerID), "holder", stringid.TruncateID(owner))
	}
	return true
}

// releaseWaiting reconciles again the containers waiting for service id,
// whose registration went.
func (a *Agent) releaseWaiting(id string) {
	a.mu.Lock()
	w := a.waiting[id]
	delete(a.waiting, id)
	for c := range w {
		a.forced[c] = true
	}
	a.mu.Unlock()
	for c := range w {
		a.queue.Add(c)
	}
}

// serviceLocks serialises the Consul writes of each service ID; the zero
// value is ready.
type serviceLocks struct {
	mu sync.Mutex // guards held
	// held has an entry for each ID written or waited for.
	held map[string]*serviceLock
}

type serviceLock struct {
	sync.Mutex
	users int // holding or waiting; the entry goes when none is left
}

// lock waits until no other write of id is under way; unlock ends this one.
func (l *serviceLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.held == nil {
		l.held = map[string]*serviceLock{}
	}
	sl := l.held[id]
	if sl == nil {
		sl = &serviceLock{}
		l.held[id] = sl
	}
	sl.users++
	l.mu.Unlock()
	sl.Lock()
	return func() {
		sl.Unlock()
		l.mu.Lock()
		defer l.mu.Unlock()
		if sl.users--; sl.users == 0 {
			delete(l.held, id)
		}
	}
}

// watchDocker follows the event stream, reopening it with backoff when it
// ends, and asks for a resync each time it (re)subscribes: subscribing first
// and listing second means no event falls between the two.
func (a *Agent) watchDocker(ctx context.Context) {
	backoff.Follow(ctx, a.log, "docker event stream", backoff.Stream[Event]{
		Subscribe: a.docker.Events,
		Opened: func() {
			a.newStream()
			a.RequestResync()
		},
		Handle: func(_ context.Context, ev Event) {
			a.noteEvent(ev)
			a.queue.Add(ev.ContainerID)
		},
		Lost: func() {
			a.newStream()
			a.setDockerOK(false)
			a.metrics.reconnects.Inc()
		},
	})
}

func (a *Agent) resyncLoop(ctx context.Context) {
	ticker := time.NewTicker(a.cfg.Resync)
	defer ticker.Stop()
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.resyncC:
		case <-ticker.C:
		case <-retry:
		}
		retry = nil
		if err := a.resync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			d := delays.Next()
			a.log.Warn("resync failed; will retry", "err", err, "retry_in", d)
			retry = time.After(d)
			continue
		}
		delays.Reset()
	}
}

// resync reloads what Consul holds and queues every running container and
// every container that has a registration, so the workers converge both.
func (a *Agent) resync(ctx context.Context) error {
	start := time.Now()
	regs, err := a.catalog.Services(ctx, a.cfg.Policy.Node)
	if err != nil {
		a.setConsulOK(false)
		a.metrics.errors.WithLabelValues("consul_read").Inc()
		return fmt.Errorf("list services in consul: %w", err)
	}
	a.setConsulOK(true)
	ids, err := a.docker.RunningContainers(ctx)
	if err != nil {
		a.metrics.errors.WithLabelValues("docker").Inc()
		return fmt.Errorf("list containers: %w", err)
	}
	a.setDockerOK(true)
	a.replaceActual(regs)
	a.forgetUnlisted(ids, regs)
	for _, id := range ids {
		a.force(id)
		a.queue.AddBackground(id)
	}
	for _, r := range regs {
		if r.ContainerID == "" {
			// Ours but unreadable: nothing can be reconciled against it.
			// One that cannot be removed (an ACL denying it) is passed
			// over: failing the resync left the other registrations'
			// containers unqueued, at every retry.
			if err := a.catalog.Deregister(ctx, r.ID); err != nil {
				if ctx.Err() != nil {
					return err
				}
				a.metrics.errors.WithLabelValues("deregister").Inc()
				a.log.Warn("service carries this node's marker but no container ID, and could not be removed; tried again at the next resync", "id", r.ID, "err", err)
				continue
			}
			a.deleteActual(r.ID)
			continue
		}
		a.force(r.ContainerID)
		a.queue.AddBackground(r.ContainerID)
	}
	a.metrics.resyncDuration.Observe(time.Since(start).Seconds())
	a.mu.Lock()
	a.lastResync = time.Now()
	a.mu.Unlock()
	a.log.Debug("resync queued", "containers", len(ids), "registered", len(regs), "took", time.Since(start))
	return nil
}

// driftLoop reads Consul regularly: when what it holds differs from what the
// agent wrote (a Consul agent restarted without state, an operator's manual
// edit) or Consul becomes reachable again, it asks for a resync.
//
// While the agent writes (containers starting or stopping), the check is
// put off: a read that a write overlaps is not compared (drifted), so
// during a burst it was Consul's and the agent's work for nothing, the
// list of every service of the node read and decoded every 2 s beside the
// registrations it slowed. A write that succeeds says Consul is reachable
// too; one that fails leaves lastWrite, so the checks resume.
func (a *Agent) driftLoop(ctx context.Context) {
	ticker := time.NewTicker(a.cfg.DriftCheck)
	defer ticker.Stop()
	lastRead := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		a.mu.Lock()
		lastWrite := a.lastWrite
		a.mu.Unlock()
		if !driftReadDue(time.Now(), lastWrite, lastRead, a.cfg.DriftCheck) {
			a.metrics.driftChecks.WithLabelValues("deferred").Inc()
			continue
		}
		a.metrics.driftChecks.WithLabelValues("read").Inc()
		readAt := time.Now()
		lastRead = readAt
		regs, err := a.catalog.Services(ctx, a.cfg.Policy.Node)
		if err != nil {
			if a.setConsulOK(false) {
				a.log.Warn("consul unreachable; keeping desired state and retrying", "err", err)
			}
			continue
		}
		cameBack := !a.setConsulOK(true)
		if cameBack || a.drifted(regs, readAt) {
			a.log.Info("consul differs from the agent's view; resyncing", "consul_came_back", cameBack)
			a.RequestResync()
		}
	}
}

// driftDeferredChecks bounds how many drift checks in a row writes put
// off: under endless churn Consul is still read every so often, so that a
// Consul agent that lost its state is noticed within that many periods.
const driftDeferredChecks = 5

// driftReadDue says whether the drift check at now reads Consul: not when
// the agent wrote within the last period, unless the last read is
// driftDeferredChecks periods old.
func driftReadDue(now, lastWrite, lastRead time.Time, every time.Duration) bool {
	return now.Sub(lastWrite) >= every || now.Sub(lastRead) >= driftDeferredChecks*every
}

func (a *Agent) deregisterAll(ctx context.Context) error {
	regs, err := a.catalog.Services(ctx, a.cfg.Policy.Node)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range regs {
		if err := a.catalog.Deregister(ctx, r.ID); err != nil {
			errs = append(errs, fmt.Errorf("deregister %s: %w", r.ID, err))
		}
	}
	a.log.Info("deregistered all services on exit", "count", len(regs)-len(errs))
	return errors.Join(errs...)
}

// forgetUnlisted drops what the agent remembers of the containers that
// neither run nor hold a registration (running and regs, as a resync read
// them): one removed while the event stream was down is never passed
// again, and its entries would stay for good. One started since the
// listing loses only the skip of a read (sawRunning), or has its
// warnings logged again.
func (a *Agent) forgetUnlisted(running []string, regs []Registered) {
	keep := make(map[string]bool, len(running)+len(regs))
	for _, id := range running {
		keep[id] = true
	}
	for _, r := range regs {
		keep[r.ContainerID] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	maps.DeleteFunc(a.sawRunning, func(id string, _ uint64) bool { return !keep[id] })
	maps.DeleteFunc(a.warned, func(id string, _ map[Warning]bool) bool { return !keep[id] })
	if n := len(a.leftOut); n > 0 {
		maps.DeleteFunc(a.leftOut, func(id string, _ LeftOut) bool { return !keep[id] })
		if len(a.leftOut) != n {
			a.leftOutChangedLocked()
		}
	}
}

func (a *Agent) reportWarnings(id string, ws []Warning) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := a.warned[id]
	if seen == nil && len(ws) > 0 {
		seen = map[Warning]bool{}
		a.warned[id] = seen
	}
	for _, w := range ws {
		if !seen[w] {
			seen[w] = true
			a.metrics.warnings.Inc()
			a.log.Warn("bad container metadata", "container", w.Container, "key", w.Key, "value", w.Value, "problem", w.Problem)
		}
	}
}

// forgetContainer drops what the agent remembers of a container a pass
// found gone: its warnings, and its waits for service IDs held for others.
func (a *Agent) forgetContainer(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.warned, id)
	a.forgetWaiterLocked(id)
	if _, ok := a.leftOut[id]; ok {
		delete(a.leftOut, id)
		a.leftOutChangedLocked()
	}
}

// forgetWaiterLocked drops container id from the waits for service IDs.
// (A resync does not: a container started since its listing may be
// waiting; one removed unseen goes when the ID it waits for is released.)
// a.mu is held.
func (a *Agent) forgetWaiterLocked(id string) {
	for sid, w := range a.waiting {
		delete(w, id)
		if len(w) == 0 {
			delete(a.waiting, sid)
		}
	}
}

func (a *Agent) noteEvent(ev Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pending[ev.ContainerID]
	if !ok {
		p = pendingEvents{oldest: ev.Time}
	}
	switch {
	case ev.Action == "create":
		p.created = true
	case ev.Action == "start":
		p.started, p.startedAt = true, ev.Time
	case ev.Action == "connect" && ev.NetworkID != "" && !p.started:
		p.connects = append(p.connects, ev.NetworkID)
	default:
		p.other = true
	}
	a.pending[ev.ContainerID] = p
}

// force makes the container's next pass read Docker.
func (a *Agent) force(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.forced[id] = true
}

func (a *Agent) actualFor(containerID string) []Registered {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Registered
	for id := range a.byContainer[containerID] {
		out = append(out, a.actual[id])
	}
	return out
}

// ownerOf is the container whose registration the agent believes holds
// service id in Consul.
func (a *Agent) ownerOf(id string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.actual[id]
	return r.ContainerID, ok
}

func (a *Agent) setActual(r Registered) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unindexLocked(r.ID)
	a.actual[r.ID] = r
	a.indexLocked(r)
	a.lastWrite = time.Now()
	a.metrics.services.Set(float64(len(a.actual)))
}

func (a *Agent) setHealth(h HealthMirror) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := strings.TrimSuffix(h.CheckID, HealthCheckSuffix)
	if r, ok := a.actual[id]; ok {
		r.HealthStatus = h.Status
		a.actual[id] = r
	}
	a.lastWrite = time.Now()
}

func (a *Agent) deleteActual(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unindexLocked(id)
	delete(a.actual, id)
	a.lastWrite = time.Now()
	a.metrics.services.Set(float64(len(a.actual)))
}

func (a *Agent) replaceActual(regs []Registered) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.actual = make(map[string]Registered, len(regs))
	a.byContainer = map[string]map[string]bool{}
	for _, r := range regs {
		a.actual[r.ID] = r
		a.indexLocked(r)
	}
	a.metrics.services.Set(float64(len(a.actual)))
}

// indexLocked adds r to byContainer; a.mu must be held.
func (a *Agent) indexLocked(r Registered) {
	ids := a.byContainer[r.ContainerID]
	if ids == nil {
		ids = map[string]bool{}
		a.byContainer[r.ContainerID] = ids
	}
	ids[r.ID] = true
}

// unindexLocked removes service id from byContainer; a.mu must be held.
func (a *Agent) unindexLocked(id string) {
	r, ok := a.actual[id]
	if !ok {
		return
	}
	delete(a.byContainer[r.ContainerID], id)
	if len(a.byContainer[r.ContainerID]) == 0 {
		delete(a.byContainer, r.ContainerID)
	}
}

// drifted reports whether Consul, read at readAt, differs from the agent's
// view. Writes made since readAt make the two incomparable, and then the
// answer is no: the next check, or the periodic resync, will look again.
func (a *Agent) drifted(regs []Registered, readAt time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.lastWrite.Before(readAt) {
		return false
	}
	if len(regs) != len(a.actual) {
		return true
	}
	for _, r := range regs {
		if a.actual[r.ID] != r {
			return true
		}
	}
	return false
}

// setConsulOK records reachability and returns the previous value.
func (a *Agent) setConsulOK(ok bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	prev := a.consulOK
	a.consulOK = ok
	return prev
}

func (a *Agent) setDockerOK(ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dockerOK = ok
}
