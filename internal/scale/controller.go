package scale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/termtext"
)

// AutoswarmName is the autoscaler under which services detected in the
// swarm appear, as in Orbiter: autoswarm/<service>.
const AutoswarmName = "autoswarm"

// Errors of Handle, each mapped to one HTTP status by the API.
var (
	// ErrNotFound: no such autoscaler, or no such managed service (404).
	ErrNotFound = errors.New("not found")
	// ErrGlobalService: the service runs in global mode and has no replica
	// count (409).
	ErrGlobalService = errors.New("service is in global mode: it has no replica count to scale")
	// ErrBadPolicy: the service's scaling labels are invalid (422).
	ErrBadPolicy = errors.New("invalid scaling policy")
	// ErrVersionConflict: the service changed between read and write; Handle
	// retries on it, Swarm implementations return it.
	ErrVersionConflict = errors.New("service version conflict")
	// ErrUnavailable: Docker, or the history in Consul, could not be read
	// or written (503).
	ErrUnavailable = errors.New("dependency unavailable")
	// ErrBadReplicas: a replica count asked for is below zero (400).
	ErrBadReplicas = errors.New("bad replica count")
)

// Swarm is the part of a swarm manager's Docker API the controller needs.
type Swarm interface {
	// Services lists every service.
	Services(ctx context.Context) ([]Service, error)
	// Service reads one service by ID or name, or returns ErrNotFound.
	Service(ctx context.Context, idOrName string) (Service, error)
	// SetReplicas writes replicas to the service's spec read at version; it
	// returns ErrVersionConflict when the service has changed since,
	// ErrGlobalService for a global service.
	SetReplicas(ctx context.Context, id string, version uint64, replicas int) error
	// Wanted lists the service's tasks that swarm wants running (desired
	// state ready or running).
	Wanted(ctx context.Context, id string) ([]Task, error)
	// Events streams service create, update and remove events until ctx
	// ends; the error channel reports the end of the stream.
	Events(ctx context.Context) (<-chan ServiceEvent, <-chan error)
}

// Service is a swarm service as the controller sees it.
type Service struct {
	ID     string
	Name   string
	Labels map[string]string
	// Global is true for a global-mode service; Replicas is then 0.
	Global   bool
	Replicas int
	// Version is the swarm object version, for optimistic updates.
	Version uint64
}

// ServiceEvent is a Docker event about one service.
type ServiceEvent struct {
	ServiceID string
	Action    string // create, update or remove
}

// History keeps the decision records.
type History interface {
	// Append stores one record.
	Append(ctx context.Context, r Record) error
	// Last is when a service was last scaled according to the records, so
	// that cooldowns hold across restarts of the controller; bad lists the
	// records of those times it could not read (each with its Direction).
	Last(ctx context.Context, service string) (last LastScale, bad []BadRecord, err error)
}

// BadRecord is a stored record a History could not read: undecodable, or
// not what its key says it is. It is left out and named; it never fails
// the records beside it.
type BadRecord struct {
	Key string `json:"key"`
	// Direction is the scale whose time the record was to tell, for the
	// records of the last scales; empty for a decision record.
	Direction Direction `json:"direction,omitempty"`
	Error     string    `json:"error"`
	// Fix is the command that removes the record; empty for a key
	// Consul's HTTP paths cannot name, whose Error says how it goes.
	Fix string `json:"fix"`
}

// LastScaleOf is when the records show a service last scaled, by
// direction: refused and dry-run decisions do not count.
func LastScaleOf(records []Record) LastScale {
	var l LastScale
	for _, r := range records {
		if r.Refused || r.DryRun || r.To == r.From {
			continue
		}
		switch {
		case r.Direction == Up && r.Time.After(l.Up):
			l.Up = r.Time
		case r.Direction == Down && r.Time.After(l.Down):
			l.Down = r.Time
		}
	}
	return l
}

// Record is one decision with its context: what was asked, by whom, and
// what happened. It is streamed on the events endpoint and kept as history.
type Record struct {
	// Seq numbers records in the order this process published them.
	Seq        uint64    `json:"seq,omitempty"`
	Time       time.Time `json:"time"`
	Autoscaler string    `json:"autoscaler"`
	Service    string    `json:"service"`
	ServiceID  string    `json:"service_id"`
	Direction  Direction `json:"direction"`
	// Source says who asked: "http 127.0.0.1:5555" for an API call.
	Source string `json:"source"`
	Decision
	// DryRun is true when the decision was not applied because the
	// controller runs in dry-run mode.
	DryRun bool `json:"dry_run,omitempty"`
	// Desired is what target tracking or a request for a replica count
	// asked for, before bounds, cooldowns and stabilization; 0 for step
	// requests.
	Desired int `json:"desired,omitempty"`
	// Metrics is the snapshot a metric-driven decision was made on.
	Metrics []MetricValue `json:"metrics,omitempty"`
}

// MetricValue is one metric as read for a decision.
type MetricValue struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target float64 `json:"target"`
	// Error says why the metric could not be read; Value is then 0.
	Error string `json:"error,omitempty"`
}

// Request asks the controller to scale one service.
type Request struct {
	Autoscaler string
	Service    string
	// Direction is up or down for a step; empty when To is set.
	Direction Direction
	// To, when not nil, asks for a replica count instead of a step.
	To     *int
	Source string
}

// Config configures a Controller.
type Config struct {
	// DryRun decides and records but never writes to Docker.
	DryRun bool
	// Retries is how many times a version conflict is retried (default 5).
	Retries int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// HistoryTimeout bounds one history write (default 5s).
	HistoryTimeout time.Duration
	// Leadership says whether this instance may decide; nil means always
	// (a single control instance).
	Leadership Leadership
	// Metrics reads the Prometheus queries of services with metric labels;
	// nil disables metric-driven scaling.
	Metrics MetricSource
	// Interval is the period of metric evaluation (default 15s).
	Interval time.Duration
	// AlertLog keeps the Alertmanager firings that scaled beyond this
	// process; nil keeps them in memory only.
	AlertLog AlertLog
	// AlertTimeout bounds the Consul work (alert log reads and writes) of
	// the webhook holding the turn, all its alerts together (default 20s,
	// inside the API's 30s WriteTimeout, past which its answer is lost
	// anyway): alerts not reached by then are answered unavailable, for
	// the sender to send again, so that a hung Consul cannot hold the
	// turn, and every webhook queued behind it, for as long as the sender
	// waits.
	AlertTimeout time.Duration
	// AlertMemory is how long a firing is remembered in memory (default
	// 24h; with an AlertLog, 65,536 firings at most); the AlertLog keeps
	// it longer.
	AlertMemory time.Duration
	// AlertMaxAge is the age, from its startsAt, past which a firing asks
	// for nothing (default DefaultAlertMaxAge): the AlertLog forgets a
	// firing some time after it scaled, and a re-send or a replay of it
	// must not scale again then.
	AlertMaxAge time.Duration
	// Policies from a file, by service name; they win over labels. The
	// file is followed with FollowPolicyFile.
	Policies PolicyFile
	// SettleAfter is how long after a scale-down it applied the controller
	// checks that swarm wants no more tasks running than the count, and
	// writes the count again when it does (default 15s; see settle.go).
	SettleAfter time.Duration
}

// DefaultAlertTimeout is Config.AlertTimeout's default.
const DefaultAlertTimeout = 20 * time.Second

// Leadership tells whether this instance is the one that decides, among
// several control instances sharing a Consul.
type Leadership interface {
	// Leading reports whether this instance holds the leadership now, and
	// the term: a number that changes every time it is acquired, so that
	// state read during an earlier term is read again.
	Leading() (term uint64, ok bool)
	// Leader is the address the current leader advertises, "" when no
	// instance leads.
	Leader(ctx context.Context) (string, error)
}

// BuiltinPrefix starts the built-in metric queries, underlay:cpu (cores
// per replica) and underlay:memory (bytes per replica), which the agents
// measure; every other query goes to Prometheus.
const BuiltinPrefix = "underlay:"

// MetricSource evaluates one metric query.
type MetricSource interface {
	// Query returns the query's single value now; an empty result or
	// several series are errors.
	Query(ctx context.Context, query string) (float64, error)
}

// ErrNotLeader is wrapped by NotLeaderError.
var ErrNotLeader = errors.New("this control instance is not the leader")

// NotLeaderError refuses a decision on a follower and names the leader.
type NotLeaderError struct {
	// Leader is the leader's advertised address; "" when unknown.
	Leader string
	// Unknown says why the leader is unknown, when it is not that none is
	// elected (Consul unreachable, a leader key someone wrote).
	Unknown error
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" && e.Unknown != nil {
		return ErrNotLeader.Error() + ", and the leader is unknown: " + e.Unknown.Error()
	}
	if e.Leader == "" {
		return ErrNotLeader.Error() + " (no leader elected yet; retry shortly)"
	}
	return ErrNotLeader.Error() + "; send it to the leader at " + e.Leader
}

// Unwrap makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// Controller is the autoscaler: it keeps the list of managed services in
// step with the swarm through Docker events and turns requests into
// decisions, applied to Docker, recorded in History and broadcast.
type Controller struct {
	cfg     Config
	swarm   Swarm
	history History
	log     *slog.Logger
	metrics *metrics
	bus     *Broadcaster
	resyncC chan struct{}
	// settleC queues the scale-downs to check (settleLoop).
	settleC chan settleJob
	alerts  *alerts
	// metricTicks counts the metric loop's finished rounds, evaluated or
	// skipped (a follower): what a test waits for before asserting that
	// nothing was scaled.
	metricTicks atomic.Int64
	// settling counts the services with a scale-down check under way
	// (settleLoop's goroutines): what a test waits for.
	settling atomic.Int64

	mu sync.Mutex // guards following fields
	// services are the managed services (opted in), by ID.
	services map[string]*managed
	// states are per-service decision locks and last scale times, by ID;
	// they outlive label changes.
	states   map[string]*state
	dockerOK bool
	// gen counts the services recorded and removed, so that a resync
	// forgets only those recorded before it read the list (one added from
	// its event meanwhile is not in the list, and not gone), and a read
	// begun before a removal does not bring the service back.
	gen uint64
	// gone are the removed services, by ID, with gen at their removal
	// (at most maxGone, the oldest dropped first).
	gone map[string]uint64
	// metricErrs are the last error of each failing metric, by service ID
	// and metric name, so that a lasting failure is logged once; a
	// service's entries go with it, a metric's with its labels.
	metricErrs map[string]map[string]string
	// policies are the policy file's, by service name (Config.Policies,
	// then as FollowPolicyFile reads the file again).
	policies PolicyFile
}

// managed is one service the controller manages.
type managed struct {
	svc    Service
	policy Policy
	// err is the policy's parse error; nil when the labels are valid.
	err error
	// gen is Controller.gen when it was recorded.
	gen uint64
}

// state serialises the decisions of one service.
type state struct {
	mu   sync.Mutex // held for a whole decision; guards following fields
	last LastScale
	// loaded is true once last holds what the history knew at the start of
	// leadership term.
	loaded bool
	term   uint64
	// recs are the recent recommendations, for the stabilization window.
	recs []Recommendation
	// metricRefusal is the last refusal of a metric-driven decision, so
	// that one repeated every interval is recorded once.
	metricRefusal string
}

// NewController returns a controller; Run keeps its service list current.
func NewController(cfg Config, s Swarm, h History, log *slog.Logger, reg prometheus.Registerer) *Controller {
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HistoryTimeout <= 0 {
		cfg.HistoryTimeout = 5 * time.Second
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 15 * time.Second
	}
	if cfg.AlertMemory <= 0 {
		cfg.AlertMemory = 24 * time.Hour
	}
	if cfg.AlertMaxAge <= 0 {
		cfg.AlertMaxAge = DefaultAlertMaxAge
	}
	if cfg.AlertTimeout <= 0 {
		cfg.AlertTimeout = DefaultAlertTimeout
	}
	if cfg.SettleAfter <= 0 {
		cfg.SettleAfter = 15 * time.Second
	}
	c := &Controller{
		cfg: cfg, swarm: s, history: h,
		log:      log.With("component", "scale"),
		bus:      NewBroadcaster(0),
		resyncC:  make(chan struct{}, 1),
		settleC:  make(chan settleJob, 256),
		services: map[string]*managed{},
		states:   map[string]*state{},

		metricErrs: map[string]map[string]string{},
		gone:       map[string]uint64{},
		policies:   cfg.Policies,
		alerts: &alerts{log: cfg.AlertLog, ttl: cfg.AlertMemory, max: maxAlertMemory, turn: make(chan struct{}, 1), done: map[string]time.Time{},
			pending: map[string]pendingMark{}, wake: make(chan struct{}, 1)},
	}
	c.metrics = newMetrics(reg, c)
	return c
}

// Broadcaster is the feed of every decision record.
func (c *Controller) Broadcaster() *Broadcaster { return c.bus }

// DryRun reports whether decisions are only recorded, never applied.
func (c *Controller) DryRun() bool { return c.cfg.DryRun }

// Run follows Docker's service events until ctx ends: it subscribes, then
// lists every service, and reopens the stream with backoff and lists again
// whenever it ends, so no change is missed between the two.
func (c *Controller) Run(ctx context.Context) error {
	c.log.Info("autoscaler starting", "dry_run", c.cfg.DryRun)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { c.watch(gctx); return nil })
	g.Go(func() error { c.resyncLoop(gctx); return nil })
	g.Go(func() error { c.settleLoop(gctx); return nil })
	if c.cfg.Metrics != nil {
		g.Go(func() error { c.metricLoop(gctx); return nil })
	}
	if c.cfg.AlertLog != nil {
		g.Go(func() error { c.writeMarksLoop(gctx); return nil })
	}
	g.Wait()
	c.log.Info("autoscaler stopped")
	return nil
}

func (c *Controller) watch(ctx context.Context) {
	backoff.Follow(ctx, c.log, "docker event stream", backoff.Stream[ServiceEvent]{
		Subscribe: c.swarm.Events,
		Opened:    c.requestResync,
		Handle: func(ctx context.Context, ev ServiceEvent) {
			if err := c.refresh(ctx, ev); err != nil {
				c.log.Warn("service event not applied; resyncing", "service_id", ev.ServiceID, "action", ev.Action, "err", err)
				c.requestResync()
			}
		},
		Lost: func() {
			c.setDockerOK(false)
			c.metrics.reconnects.Inc()
		},
	})
}

// refresh applies one service event to the list.
func (c *Controller) refresh(ctx context.Context, ev ServiceEvent) error {
	if ev.Action == "remove" {
		c.forget(ev.ServiceID)
		return nil
	}
	read := c.genNow()
	svc, err := c.swarm.Service(ctx, ev.ServiceID)
	if errors.Is(err, ErrNotFound) {
		c.forget(ev.ServiceID)
		return nil
	}
	if err != nil {
		c.metrics.errors.WithLabelValues("docker_inspect").Inc()
		return fmt.Errorf("inspect service %s: %w", ev.ServiceID, err)
	}
	c.upsert(svc, read)
	return nil
}

func (c *Controller) requestResync() {
	select {
	case c.resyncC <- struct{}{}:
	default:
	}
}

func (c *Controller) resyncLoop(ctx context.Context) {
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.resyncC:
		case <-retry:
		}
		retry = nil
		if err := c.resync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.setDockerOK(false)
			c.metrics.errors.WithLabelValues("docker_list").Inc()
			delay := delays.Next()
			c.log.Warn("list services failed; will retry", "err", err, "retry_in", delay)
			retry = time.After(delay)
			continue
		}
		delays.Reset()
	}
}

// resync replaces the list with what Docker holds now.
func (c *Controller) resync(ctx context.Context) error {
	listed := c.genNow()
	svcs, err := c.swarm.Services(ctx)
	if err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	seen := map[string]bool{}
	for _, s := range svcs {
		seen[s.ID] = true
		c.upsert(s, listed)
	}
	c.mu.Lock()
	for id, m := range c.services {
		if !seen[id] && m.gen <= listed {
			c.forgetLocked(id)
		}
	}
	// A state outlives its service opting out; one whose service is gone
	// too, its remove event missed, would stay for good. The history
	// keeps its cooldowns, should it come back.
	for id := range c.states {
		if _, ok := c.services[id]; !ok && !seen[id] {
			delete(c.states, id)
		}
	}
	c.dockerOK = true
	c.mu.Unlock()
	c.log.Debug("services resynced", "services", len(svcs))
	return nil
}

// genNow is c.gen: taken before a read of Docker, it tells upsert what
// happened since.
func (c *Controller) genNow() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// maxGone bounds the removed services remembered: far more than are
// removed while one read of Docker is under way.
const maxGone = 4096

// upsert records svc, read from Docker when c.gen was read, when it opted
// in to autoscaling, and drops it when it opted out. Invalid labels keep the
// service listed with its error, so that requests get a 422 naming the
// label rather than a 404. A read older than what is known is ignored: the
// service removed since the read began, or recorded at a later version.
func (c *Controller) upsert(svc Service, read uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Under the lock, with the policies of the moment: a read that began
	// before SetPolicies must not store a policy of the old file after
	// the resync that followed it stored the new one.
	labels := c.policies.apply(svc)
	p, err := ParsePolicy(labels)
	optedIn := p.Enabled || (err != nil && OptedIn(labels))
	if g, ok := c.gone[svc.ID]; ok && g > read {
		return // removed while it was read
	}
	old, had := c.services[svc.ID]
	if had && svc.Version < old.svc.Version {
		return // a fresher read is recorded
	}
	if !optedIn {
		if err != nil && mentionsSwitch(svc.Labels) {
			c.log.Warn("bad scaling labels; service not autoscaled", "service", svc.Name, "err", err)
		}
		if had {
			delete(c.services, svc.ID)
			c.log.Info("service no longer autoscaled", "service", svc.Name)
		}
		delete(c.metricErrs, svc.ID)
		return
	}
	c.gen++
	m := &managed{svc: svc, policy: p, err: err, gen: c.gen}
	c.services[svc.ID] = m
	c.pruneMetricErrsLocked(svc.ID, p.Metrics)
	switch {
	case err != nil && (!had || old.err == nil || old.err.Error() != err.Error()):
		c.log.Warn("bad scaling labels; requests for this service are refused", "service", svc.Name, "err", err)
	case !had:
		c.log.Info("service autoscaled", "service", svc.Name, "global", svc.Global, "min", p.Min, "max", p.Max)
	case !reflect.DeepEqual(old.policy, p):
		c.log.Info("service scaling policy changed", "service", svc.Name, "min", p.Min, "max", p.Max)
	}
}

// mentionsSwitch reports whether a switch label is set to anything but
// false: its owner meant the service to be autoscaled, or mistyped.
func mentionsSwitch(labels map[string]string) bool {
	for _, key := range []string{LabelOrbiter, LabelEnabled} {
		if v, ok := labels[key]; ok {
			if b, err := parseBool(v); err != nil || b {
				return true
			}
		}
	}
	return false
}

func (c *Controller) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetLocked(id)
}

// forgetLocked drops a service and its state, and remembers it gone.
// c.mu is held.
func (c *Controller) forgetLocked(id string) {
	if m, ok := c.services[id]; ok {
		c.log.Info("service removed from autoscaling", "service", m.svc.Name)
		delete(c.services, id)
	}
	delete(c.states, id)
	delete(c.metricErrs, id)
	c.gen++
	c.gone[id] = c.gen
	if len(c.gone) > maxGone {
		oldest, at := "", c.gen
		for id, g := range c.gone {
			if g < at {
				oldest, at = id, g
			}
		}
		delete(c.gone, oldest)
	}
}

// pruneMetricErrsLocked forgets the errors of a service's metrics that its
// policy no longer has. c.mu is held.
func (c *Controller) pruneMetricErrsLocked(id string, metrics []MetricSpec) {
	errs := c.metricErrs[id]
	for name := range errs {
		if !slices.ContainsFunc(metrics, func(m MetricSpec) bool { return m.Name == name }) {
			delete(errs, name)
		}
	}
	if len(errs) == 0 {
		delete(c.metricErrs, id)
	}
}

// lookup finds a managed service by ID, else by name (findLocked).
func (c *Controller) lookup(name string) (*managed, *state, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.findLocked(name)
	if !ok {
		return nil, nil, false
	}
	st := c.states[id]
	if st == nil {
		st = &state{}
		c.states[id] = st
	}
	return c.services[id], st, true
}

// findLocked finds a managed service by ID, else by name, as Docker
// resolves them: a service named like another's ID (a name anyone who may
// create services chooses) never takes the requests made by that ID.
// c.mu is held.
func (c *Controller) findLocked(name string) (string, bool) {
	if _, ok := c.services[name]; ok {
		return name, true
	}
	for id, m := range c.services {
		if m.svc.Name == name {
			return id, true
		}
	}
	return "", false
}

// errUnmanaged is the error for a service control does not manage.
func errUnmanaged(name string) error {
	return fmt.Errorf("service %s: %w among autoscaled services (label it %s=true)", termtext.Q(name), ErrNotFound, LabelOrbiter)
}

// manages reports whether name (or ID) is a service control manages.
func (c *Controller) manages(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.findLocked(name)
	return ok
}

// Handle decides on one request and applies the decision. A policy refusal
// is not an error: it is a Record with Refused set. Errors wrap ErrNotFound,
// ErrGlobalService, ErrBadPolicy, ErrUnknownDirection, ErrBadReplicas,
// ErrNotLeader or ErrUnavailable.
func (c *Controller) Handle(ctx context.Context, req Request) (Record, error) {
	if req.To != nil {
		if *req.To < 0 {
			return Record{}, fmt.Errorf("%w: replicas %d: want zero or more", ErrBadReplicas, *req.To)
		}
	} else if req.Direction != Up && req.Direction != Down {
		return Record{}, fmt.Errorf("%w: %s", ErrUnknownDirection, termtext.Q(string(req.Direction)))
	}
	if req.Autoscaler == "" {
		req.Autoscaler = AutoswarmName
	}
	if req.Autoscaler != AutoswarmName {
		return Record{}, fmt.Errorf("autoscaler %s: %w (services detected in the swarm are under %q)", termtext.Q(req.Autoscaler), ErrNotFound, AutoswarmName)
	}
	m, st, ok := c.lookup(req.Service)
	if !ok {
		return Record{}, errUnmanaged(req.Service)
	}
	if m.svc.Global {
		// A service's mode never changes: no need to read it again.
		return Record{}, fmt.Errorf("service %s: %w", termtext.Q(m.svc.Name), ErrGlobalService)
	}
	plan := func(current int, p Policy, last LastScale, now time.Time) plan {
		if req.To != nil {
			dir, d := DecideTo(current, *req.To, p, last, now)
			return plan{dir: dir, d: d, desired: *req.To}
		}
		d, _ := Decide(current, req.Direction, p, last, now)
		return plan{dir: req.Direction, d: d}
	}
	return c.decide(ctx, m, st, req.Source, plan, nil)
}

// plan is a decision before stabilization and the request it answers.
type plan struct {
	dir     Direction
	d       Decision
	desired int
	metrics []MetricValue
	// recommend is recorded for the stabilization window when set.
	recommend *int
}

// planner plans a decision from the service's current replicas and policy.
type planner func(current int, p Policy, last LastScale, now time.Time) plan

// decide serialises, plans, applies, publishes and records one decision on
// m. When record is not nil, it decides whether the decision is recorded
// (metric loops skip repeated refusals).
func (c *Controller) decide(ctx context.Context, m *managed, st *state, source string, pl planner, record func(*state, Record) bool) (Record, error) {
	if _, err := c.leading(ctx); err != nil {
		return Record{}, err
	}
	st.mu.Lock()
	// Asked again under the lock: a request may have waited for it behind
	// another decision's Docker calls, and the leadership may have moved
	// meanwhile; the term read here is the one the state must be of.
	term, ok := c.leadingNow()
	if !ok {
		st.mu.Unlock()
		_, err := c.leading(ctx) // names the leader, off the lock
		if err == nil {
			err = &NotLeaderError{Unknown: errors.New("the leadership moved while the request waited for another decision; retry")}
		}
		return Record{}, err
	}
	err := c.loadLocked(ctx, m.svc, st, term)
	var rec Record
	if err == nil {
		rec, err = c.decideLocked(ctx, source, m.svc.ID, m.svc.Name, st, pl)
	}
	keep := err == nil && (record == nil || record(st, rec))
	if keep {
		rec = c.bus.Publish(rec)
	}
	st.mu.Unlock()
	if err != nil {
		return Record{}, err
	}
	if !keep {
		return rec, nil
	}
	c.metrics.observe(rec)
	c.log.Info("scaling decision", "service", rec.Service, "direction", rec.Direction, "from", rec.From, "to", rec.To,
		"refused", rec.Refused, "reason", rec.Reason, "dry_run", rec.DryRun, "source", rec.Source)
	c.appendHistory(ctx, rec)
	return rec, nil
}

// leading returns the leadership term, or a NotLeaderError naming the leader.
func (c *Controller) leading(ctx context.Context) (uint64, error) {
	if c.cfg.Leadership == nil {
		return 0, nil
	}
	term, ok := c.cfg.Leadership.Leading()
	if ok {
		return term, nil
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	leader, err := c.cfg.Leadership.Leader(lctx)
	if err != nil {
		c.log.Debug("leader unknown", "err", err)
		return 0, &NotLeaderError{Unknown: err}
	}
	return 0, &NotLeaderError{Leader: leader}
}

// leadingNow is the leadership term and whether this instance leads, as
// the Leadership says at once (always, without leader election).
func (c *Controller) leadingNow() (uint64, bool) {
	if c.cfg.Leadership == nil {
		return 0, true
	}
	return c.cfg.Leadership.Leading()
}

// Leading reports whether this instance decides now.
func (c *Controller) Leading() bool {
	_, ok := c.leadingNow()
	return ok
}

func usable(m *managed) error {
	if m.svc.Global {
		return fmt.Errorf("service %s: %w", termtext.Q(m.svc.Name), ErrGlobalService)
	}
	if m.err != nil {
		return fmt.Errorf("service %s: %w: %w", termtext.Q(m.svc.Name), ErrBadPolicy, m.err)
	}
	return nil
}

// loadLocked reads the service's last scale times from the history once
// per leadership term, so that a restarted controller, or a new leader,
// keeps the cooldowns. While the history cannot be read, decisions on the
// service wait (ErrUnavailable): deciding without it could break a
// cooldown. The stabilization window starts, at each term, with the current
// replicas as a recommendation: nothing is known of what was recommended
// before. st.mu is held.
func (c *Controller) loadLocked(ctx context.Context, svc Service, st *state, term uint64) error {
	if st.loaded && st.term == term {
		return nil
	}
	if c.history != nil {
		hctx, cancel := context.WithTimeout(ctx, c.cfg.HistoryTimeout)
		defer cancel()
		last, bad, err := c.history.Last(hctx, svc.Name)
		if err != nil {
			c.metrics.errors.WithLabelValues("history").Inc()
			return fmt.Errorf("read the scaling history of %s (cooldowns depend on it): %w: %w", svc.Name, ErrUnavailable, err)
		}
		last = c.boundLast(svc.Name, last, bad)
		if last.Up.After(st.last.Up) {
			st.last.Up = last.Up
		}
		if last.Down.After(st.last.Down) {
			st.last.Down = last.Down
		}
	}
	if !st.loaded || st.term != term {
		// Another instance may have decided meanwhile: hold scale-downs for
		// a window from the replicas found.
		st.recs = AddRecommendation(st.recs, Recommendation{Time: c.cfg.Now(), Replicas: svc.Replicas})
	}
	st.loaded, st.term = true, term
	return nil
}

// boundLast makes the last scale times read from the history safe to
// time cooldowns from. A record that cannot be read would otherwise stop
// the service's scaling until an operator deletes it, and a time after now
// (a clock ahead, or a forged record) would hold a cooldown without end:
// both count as a scale now, so the cooldown is never shorter than the true
// one and ends. The next scale in that direction writes the record again.
func (c *Controller) boundLast(service string, last LastScale, bad []BadRecord) LastScale {
	now := c.cfg.Now()
	at := map[Direction]*time.Time{Up: &last.Up, Down: &last.Down}
	for _, b := range bad {
		c.metrics.errors.WithLabelValues("history_record").Inc()
		c.log.Error("the time of a service's last scale cannot be read from the history: its cooldown runs from now", "service", service,
			"direction", b.Direction, "key", b.Key, "err", b.Error, "fix", b.Fix)
		if t := at[b.Direction]; t != nil {
			*t = now
		}
	}
	for _, d := range []Direction{Up, Down} {
		if t := at[d]; t.After(now) {
			c.metrics.errors.WithLabelValues("history_record").Inc()
			c.log.Warn("the history says a service last scaled after now: its cooldown runs from now", "service", service, "direction", d, "recorded", *t)
			*t = now
		}
	}
	return last
}

// decideLocked reads the service afresh (labels included, so a label edit
// counts even before its event arrives), plans, stabilizes and writes,
// retrying when the service changed in between. st.mu is held.
func (c *Controller) decideLocked(ctx context.Context, source, id, name string, st *state, pl planner) (Record, error) {
	for attempt := 0; ; attempt++ {
		read := c.genNow()
		svc, err := c.swarm.Service(ctx, id)
		if errors.Is(err, ErrNotFound) {
			c.forget(id)
			return Record{}, fmt.Errorf("service %s: %w", termtext.Q(name), ErrNotFound)
		}
		if err != nil {
			c.metrics.errors.WithLabelValues("docker_inspect").Inc()
			return Record{}, fmt.Errorf("inspect service %s: %w: %w", name, ErrUnavailable, err)
		}
		c.upsert(svc, read)
		m, _, ok := c.lookup(svc.ID) // not its name: another's ID may be that
		if !ok {
			return Record{}, fmt.Errorf("service %s: %w among autoscaled services (its labels no longer opt in)", termtext.Q(name), ErrNotFound)
		}
		if err := usable(m); err != nil {
			return Record{}, err
		}
		now := c.cfg.Now()
		p := m.policy
		pn := pl(svc.Replicas, p, st.last, now)
		st.recs = PruneRecommendations(st.recs, p.StabilizationDown, now)
		highest, ok := HighestRecommendation(st.recs, p.StabilizationDown, now)
		d := Stabilize(pn.d, pn.dir, highest, ok, p.StabilizationDown)
		dir := pn.dir // empty when unchanged
		rec := Record{Time: now.UTC(), Autoscaler: AutoswarmName, Service: svc.Name, ServiceID: svc.ID,
			Direction: dir, Source: source, Decision: d, DryRun: c.cfg.DryRun && !d.Refused,
			Desired: pn.desired, Metrics: pn.metrics}
		if d.Refused || c.cfg.DryRun {
			st.recs = recommend(st.recs, pn, d, now)
			return rec, nil
		}
		err = c.swarm.SetReplicas(ctx, svc.ID, svc.Version, d.To)
		if errors.Is(err, ErrVersionConflict) && attempt < c.cfg.Retries {
			c.metrics.conflicts.Inc()
			c.log.Debug("service changed while scaling; retrying", "service", svc.Name, "attempt", attempt+1)
			continue
		}
		if errors.Is(err, ErrGlobalService) {
			return Record{}, fmt.Errorf("service %s: %w", termtext.Q(name), ErrGlobalService)
		}
		if errors.Is(err, ErrNotFound) {
			// Removed between the read and the write: gone, not unavailable.
			c.forget(id)
			return Record{}, fmt.Errorf("service %s: removed while scaling: %w", termtext.Q(name), ErrNotFound)
		}
		if err != nil {
			c.metrics.errors.WithLabelValues("docker_update").Inc()
			return Record{}, fmt.Errorf("update service %s to %d replicas: %w: %w", svc.Name, d.To, ErrUnavailable, err)
		}
		// Only now, the write made: a failed decision leaves the window
		// as it found it, holding no scale-down against a count the
		// service never had.
		st.recs = recommend(st.recs, pn, d, now)
		if dir == Up {
			st.last.Up = now
		} else {
			st.last.Down = now
		}
		if d.To < svc.Replicas {
			c.queueSettle(settleJob{id: svc.ID, name: svc.Name, to: d.To})
		}
		return rec, nil
	}
}

// recommend adds the recommendation of a decision that stands (refused,
// dry-run or written) to recs: a metric evaluation's desired replicas, or
// the replicas a scale-up reached or held.
func recommend(recs []Recommendation, pn plan, d Decision, now time.Time) []Recommendation {
	switch {
	case pn.recommend != nil:
		return AddRecommendation(recs, Recommendation{Time: now, Replicas: *pn.recommend})
	case pn.dir == Up:
		return AddRecommendation(recs, Recommendation{Time: now, Replicas: max(d.To, d.From)})
	}
	return recs
}

// appendHistory stores rec; a failure is logged and counted, never returned:
// the decision has been made and applied already.
func (c *Controller) appendHistory(ctx context.Context, rec Record) {
	if c.history == nil {
		return
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.HistoryTimeout)
	defer cancel()
	if err := c.history.Append(hctx, rec); err != nil {
		c.metrics.errors.WithLabelValues("history").Inc()
		c.log.Warn("decision not kept in history", "service", rec.Service, "seq", rec.Seq, "err", err)
	}
}

// ServiceInfo is one autoscaled service as the API lists it.
type ServiceInfo struct {
	// Name is Orbiter's "autoswarm/<service>".
	Name      string `json:"name"`
	Service   string `json:"service"`
	ServiceID string `json:"service_id"`
	Mode      string `json:"mode"`
	Replicas  int    `json:"replicas"`
	Policy    Policy `json:"policy"`
	// Error is the labels' problem, when they are invalid.
	Error string `json:"error,omitempty"`
}

// Services lists the autoscaled services by name.
func (c *Controller) Services() []ServiceInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ServiceInfo, 0, len(c.services))
	for _, m := range c.services {
		si := ServiceInfo{Name: AutoswarmName + "/" + m.svc.Name, Service: m.svc.Name, ServiceID: m.svc.ID,
			Mode: "replicated", Replicas: m.svc.Replicas, Policy: m.policy}
		if m.svc.Global {
			si.Mode = "global"
		}
		if m.err != nil {
			si.Error = m.err.Error()
		}
		out = append(out, si)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status is the controller's view of its dependencies.
type Status struct {
	DockerConnected bool `json:"docker_connected"`
	Services        int  `json:"services"`
	DryRun          bool `json:"dry_run"`
	// Leading is true when this instance decides (always, without
	// leader election).
	Leading bool `json:"leading"`
}

// Status reports the controller's current state.
func (c *Controller) Status() Status {
	leading := c.Leading()
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{DockerConnected: c.dockerOK, Services: len(c.services), DryRun: c.cfg.DryRun, Leading: leading}
}

func (c *Controller) serviceCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.services)
}

func (c *Controller) setDockerOK(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dockerOK = ok
}
