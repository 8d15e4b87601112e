package dashboard

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"html/template"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/scale"
)

// EventBacklog is how many events the server keeps for pages that connect.
const EventBacklog = 500

// Tokens checks bearer tokens: the control API's (scale.Tokens, and those
// read from Consul KV).
type Tokens interface {
	// Valid reports whether token is accepted now.
	Valid(token string) bool
}

// Config configures a Server.
type Config struct {
	Sources Sources
	// ScaleAPI serves POST /v1/underlay/services/{service}/scale (the
	// autoscaler's API): the scale buttons' requests are passed to it
	// with the session's token, so that it checks, decides, or passes
	// them on to the leader, as it does every request. Nil disables the
	// buttons.
	ScaleAPI http.Handler
	// Tokens authenticate the page's sessions; nil means no authentication
	// (control --insecure-no-auth): no login, scale buttons open.
	Tokens Tokens
	// SecureCookies marks the session cookie Secure whatever the request
	// came over (control --secure-cookies): behind a proxy that ends TLS,
	// the server sees plain HTTP. Without it, the cookie is Secure when
	// the request came over TLS as far as the server can tell (secure).
	SecureCookies bool
	// OpenReads lets anyone read the snapshot and the events (control
	// --auth-reads=false): by default, with Tokens, they want a session or
	// a bearer token, as scaling does.
	OpenReads bool
	// LoginLimit, when not nil, wraps the login route, which checks a
	// token: the autoscaler API's per-client rate limit, so that guessing
	// tokens is no faster through the page than through the API.
	LoginLimit func(http.Handler) http.Handler
	// GuessLimit, when not nil, wraps every route that checks the
	// session's or a bearer token (session, snapshot, events, scale): the
	// autoscaler API's limit on failed token checks per client, to which
	// TokenFailed reports each failed check here.
	GuessLimit  func(http.Handler) http.Handler
	TokenFailed func(r *http.Request)
	// Client names who sent a request, in the log lines of logins,
	// logouts and scale requests: the autoscaler API's (scale.API.Client),
	// the client a trusted proxy's X-Forwarded-For names, via that proxy.
	// Nil means the request's peer address.
	Client func(r *http.Request) (client, via string)
	// ReadLimit, when not nil, wraps the reads (session, snapshot, events)
	// before StreamLimit: the autoscaler API's per-client read rate, which
	// holds its own open reads, so that no client asks for whole
	// snapshots, or opens streams, as fast as the network lets it.
	ReadLimit func(http.Handler) http.Handler
	// StreamLimit, when not nil, wraps the event stream: the autoscaler
	// API's caps on concurrent streams, in all and per client, shared with
	// its own.
	StreamLimit func(http.Handler) http.Handler
	// Version is shown on the page.
	Version string
	// Refresh is the period of rebuilds when no source signals a change:
	// tasks on other nodes change state without an event on this manager
	// (default 5s).
	Refresh time.Duration
	// IdleRefresh is the period of rebuilds while no page follows the
	// events, which then ignore the sources' signals: an unwatched
	// dashboard costs the cluster next to nothing (default 30s). A page
	// connecting, or a read of the snapshot, rebuilds at once a snapshot
	// older than Refresh.
	IdleRefresh time.Duration
	// Debounce lets a burst of changes settle before a rebuild (default
	// 250ms).
	Debounce time.Duration
	// KeepAlive is the period of ping events on the stream, by which the
	// page knows it is live (default 5s).
	KeepAlive time.Duration
	// StreamWriteTimeout bounds the writing of each frame of the event
	// stream, which lifts the server's write timeout for its whole life:
	// a client that stops reading for that long loses its stream, and
	// holds no frame nor handler (default 30s).
	StreamWriteTimeout time.Duration
	// SourceTimeout bounds each source's read (default 10s).
	SourceTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// authReads reports whether reads want a token: there are tokens, and
// reads are not open.
func (c Config) authReads() bool { return c.Tokens != nil && !c.OpenReads }

// Server gathers the sources, builds snapshots, and serves them, the
// events and the page.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	// index is the page's HTML, indexGz gzipped.
	index, indexGz []byte
	// csrfKey signs the sessions' CSRF tokens, sessions seals them; both
	// keys live as long as the process, so a restart asks pages to log in
	// again.
	csrfKey  []byte
	sessions *sessions
	// instance tells this process's snapshots from an earlier one's.
	instance string
	// seed keys the snapshots' digests.
	seed maphash.Seed
	kick chan struct{}
	// streamGzip and bodyGzip hold gzip writers (*gzip.Writer) for reuse:
	// each holds about 1 MB of compressor state, which a stream opening,
	// and each new snapshot's compression, allocated anew. streamGzip's
	// compress at gzip.BestSpeed (every frame, as it is sent), bodyGzip's
	// at gzip.DefaultCompression (once a snapshot).
	streamGzip, bodyGzip sync.Pool
	// refreshes counts the rebuilds done.
	refreshes atomic.Uint64
	// refreshed is closed, and replaced, at the end of every rebuild.
	refreshed atomic.Pointer[chan struct{}]

	// last holds each source's last good answer, used while it fails, and
	// heard when the agents' reports were last seen to change; only Run's
	// goroutine touches them.
	last  Inputs
	heard map[string]netspec.Heard
	// failing holds when each source failing began to; kvOutage is the
	// latest outage of the kv source (Inputs.AgentsUnread).
	failing  map[string]time.Time
	kvOutage Outage

	// publishing is held by publish, which reads snap, digest, version
	// and seq without mu while it encodes and diffs, and changes them
	// under both: one publish at a time.
	publishing sync.Mutex

	mu sync.Mutex // guards following fields
	// snap is the latest snapshot, frame its stream frame and digest the
	// hash of its JSON without version, instance and time (under seed, a
	// random key of the process: no agent can make a change collide), to
	// tell a change.
	snap   *Snapshot
	frame  []byte
	digest uint64
	// builtAt is when the last rebuild read the sources: snap's time, or
	// later when nothing changed since (snap is then kept as it was).
	builtAt time.Time
	// body is snap's JSON; gz gzips it when first called (by the first
	// read that takes gzip), once, without mu: a reader waits for that
	// compression, not every page and stream for the lock.
	body    []byte
	gz      func() []byte
	version uint64
	// events are the latest events, oldest first, never changed in
	// place (publish replaces the slice; appending writes past its end):
	// backlog reads them without mu. backlog makes their stream frame
	// when first called, once, shared by every page that connects until
	// they change; nil until a page connects after they changed.
	events  []Event
	backlog func() []byte
	seq     uint64
	subs    map[*subscriber]struct{}
	samples map[string][]ReplicaSample
}

// subscriber is one open event stream and what it has yet to send. A
// snapshot replaces the one not sent yet: a page needs the latest, not
// each state in between, and a client slow to read must not hold every
// snapshot published meanwhile (each the whole cluster).
type subscriber struct {
	// ready is signalled whenever there is something to send, or the
	// stream was dropped.
	ready chan struct{}
	// The following fields are guarded by Server.mu.
	// snap is the latest snapshot frame not sent yet; nil: none.
	snap []byte
	// events are the events frames not sent yet, oldest first, at most
	// subscriberBuffer.
	events [][]byte
	// dropped is set when the stream fell too far behind: it ends.
	dropped bool
}

// subscriberBuffer is how many events frames a stream may fall behind
// before it is closed (events, unlike snapshots, are each news); the page
// then reconnects and starts from a fresh snapshot and the backlog.
const subscriberBuffer = 64

// New returns a server; Run keeps its snapshot current.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 5 * time.Second
	}
	if cfg.IdleRefresh <= 0 {
		cfg.IdleRefresh = 30 * time.Second
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 250 * time.Millisecond
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 5 * time.Second
	}
	if cfg.SourceTimeout <= 0 {
		cfg.SourceTimeout = 10 * time.Second
	}
	if cfg.StreamWriteTimeout <= 0 {
		cfg.StreamWriteTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("dashboard key: %w", err)
	}
	log = log.With("component", "dashboard")
	sessions, err := newSessions(cfg.Now, log)
	if err != nil {
		return nil, err
	}
	id := sha256.Sum256(append([]byte("instance"), key...)) // not the key itself
	s := &Server{
		cfg: cfg, log: log, csrfKey: key, sessions: sessions, instance: hex.EncodeToString(id[:6]),
		seed: maphash.MakeSeed(), kick: make(chan struct{}, 1), subs: map[*subscriber]struct{}{}, samples: map[string][]ReplicaSample{},
	}
	idx, err := renderIndex(indexData{Version: cfg.Version, Auth: cfg.Tokens != nil, AuthReads: cfg.authReads()})
	if err != nil {
		return nil, err
	}
	s.index, s.indexGz = idx, gzipped(idx)
	s.streamGzip.New = func() any { zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return zw }
	s.bodyGzip.New = func() any { return gzip.NewWriter(nil) }
	done := make(chan struct{})
	s.refreshed.Store(&done)
	s.metrics = newMetrics(reg, s)
	return s, nil
}

// indexData is what the page's HTML is templated with.
type indexData struct {
	Version   string
	Auth      bool
	AuthReads bool
}

func renderIndex(d indexData) ([]byte, error) {
	raw, err := assets.ReadFile("assets/index.html")
	if err != nil {
		return nil, err
	}
	t, err := template.New("index").Parse(string(raw))
	if err != nil {
		return nil, fmt.Errorf("parse index.html: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("render index.html: %w", err)
	}
	return b.Bytes(), nil
}

// Run rebuilds the snapshot whenever a source signals a change, at least
// every Refresh, until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info("dashboard serving at /ui", "auth", s.cfg.Tokens != nil, "auth_reads", s.cfg.authReads())
	trig := make(chan struct{}, 1)
	g, gctx := errgroup.WithContext(ctx)
	for _, ch := range s.changes(gctx) {
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case _, ok := <-ch:
					if !ok {
						return nil
					}
					signal(trig)
				}
			}
		})
	}
	g.Go(func() error {
		t := time.NewTicker(s.cfg.Refresh)
		defer t.Stop()
		s.refresh(gctx)
		last := time.Now()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				if s.subscribers() == 0 && time.Since(last) < s.cfg.IdleRefresh {
					continue
				}
			case <-s.kick:
			case <-trig:
				if s.subscribers() == 0 {
					continue // unwatched: the idle period will do
				}
				// Let the burst a change comes in (create, start, register)
				// settle into one rebuild.
				select {
				case <-gctx.Done():
					return nil
				case <-time.After(s.cfg.Debounce):
				}
			}
			drain(trig)
			s.refresh(gctx)
			last = time.Now()
		}
	})
	return g.Wait()
}

// fresh returns once the snapshot is at most Refresh old, asking for a
// rebuild when it is older (an idle dashboard's), or when ctx ends.
func (s *Server) fresh(ctx context.Context) {
	s.mu.Lock()
	stale := s.snap == nil || s.cfg.Now().Sub(s.builtAt) > s.cfg.Refresh
	s.mu.Unlock()
	if !stale {
		return
	}
	done := *s.refreshed.Load()
	signal(s.kick)
	select {
	case <-ctx.Done():
	case <-done:
	}
}

// changes are the sources' change signals.
func (s *Server) changes(ctx context.Context) []<-chan struct{} {
	var out []<-chan struct{}
	src := s.cfg.Sources
	if src.Swarm != nil {
		out = append(out, src.Swarm.Changes(ctx))
	}
	if src.Catalog != nil {
		out = append(out, src.Catalog.Changes(ctx))
	}
	if src.Store != nil {
		out = append(out, src.Store.Changes(ctx))
	}
	return out
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func drain(c chan struct{}) {
	select {
	case <-c:
	default:
	}
}

// refresh gathers, builds and publishes one snapshot.
func (s *Server) refresh(ctx context.Context) {
	start := time.Now()
	in := s.gather(ctx)
	// Worked out once: hearing the agents and the nodes' cards use it.
	shared := sharedNames(in.Nodes)
	// A copy: in.Agents is also the last good answer kept.
	in.Agents = slices.Clone(in.Agents)
	s.heard = hearAgents(in.Agents, shared, s.heard, in.Now)
	if ctx.Err() != nil {
		return
	}
	in.Samples = s.sample(in)
	snap := build(in, shared)
	s.publish(snap)
	s.metrics.refresh.Observe(time.Since(start).Seconds())
	s.refreshes.Add(1)
	next := make(chan struct{})
	close(*s.refreshed.Swap(&next))
}

// gather reads every source; a source that fails keeps its last answer
// and is named in Errors.
func (s *Server) gather(ctx context.Context) Inputs {
	src := s.cfg.Sources
	in := Inputs{Now: s.cfg.Now(), Errors: map[string]string{}}
	fail := func(source string, err error) {
		in.Errors[source] = err.Error()
		s.metrics.sourceErrors.WithLabelValues(source).Inc()
	}
	var mu sync.Mutex
	var g errgroup.Group
	read := func(source string, f func(ctx context.Context) error) {
		g.Go(func() error {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.SourceTimeout)
			defer cancel()
			if err := f(cctx); err != nil {
				mu.Lock()
				fail(source, err)
				mu.Unlock()
			}
			return nil
		})
	}
	if src.Swarm != nil {
		read("docker", func(ctx context.Context) error {
			nodes, err := src.Swarm.Nodes(ctx)
			if err != nil {
				return fmt.Errorf("list swarm nodes: %w", err)
			}
			svcs, err := src.Swarm.Services(ctx)
			if err != nil {
				return fmt.Errorf("list swarm services: %w", err)
			}
			tasks, err := src.Swarm.Tasks(ctx)
			if err != nil {
				return fmt.Errorf("list swarm tasks: %w", err)
			}
			in.Nodes, in.Services, in.Tasks = nodes, svcs, tasks
			return nil
		})
	}
	if src.Catalog != nil {
		read("consul", func(ctx context.Context) (err error) {
			in.Instances, err = src.Catalog.Instances(ctx)
			return err
		})
	}
	if src.Store != nil {
		read("kv", func(ctx context.Context) error {
			nets, err := src.Store.Networks(ctx)
			if err != nil {
				return err
			}
			facts, misfiled, err := src.Store.Nodes(ctx)
			if err != nil {
				return err
			}
			inv, err := src.Store.Inventory(ctx, facts)
			if err != nil {
				return err
			}
			agents, err := src.Store.Agents(ctx, facts, misfiled)
			if err != nil {
				return err
			}
			unreg, badUnreg, err := src.Store.Unregistered(ctx)
			if err != nil {
				return err
			}
			in.Networks, in.Inventory, in.Agents, in.NodeNames = nets, inv, agents, inventory.NodeNames(facts)
			in.Unregistered, in.BadUnregistered = unreg, badUnreg
			return nil
		})
	}
	if src.Scaling != nil {
		in.Autoscaled = src.Scaling.Services()
		read("history", func(ctx context.Context) error {
			h, bad := map[string][]scale.Record{}, map[string][]scale.BadRecord{}
			for _, si := range in.Autoscaled {
				recs, badRecs, err := src.Scaling.History(ctx, si.Service)
				if err != nil {
					return err
				}
				h[si.Service] = recs
				if len(badRecs) > 0 {
					bad[si.Service] = badRecs
				}
			}
			in.History, in.BadHistory = h, bad
			in.Control = src.Scaling.Control(ctx)
			return nil
		})
	}
	g.Wait()
	s.keepLast(&in)
	s.noteFailures(&in)
	return in
}

// noteFailures sets in's FailingSince and AgentsUnread from what failed
// in this refresh and before.
func (s *Server) noteFailures(in *Inputs) {
	if s.failing == nil {
		s.failing = map[string]time.Time{}
	}
	maps.DeleteFunc(s.failing, func(source string, _ time.Time) bool {
		_, still := in.Errors[source]
		return !still
	})
	for source := range in.Errors {
		if _, ok := s.failing[source]; !ok {
			s.failing[source] = in.Now
		}
	}
	in.FailingSince = maps.Clone(s.failing)
	if since, ok := s.failing["kv"]; ok {
		s.kvOutage = Outage{From: since}
	} else if !s.kvOutage.From.IsZero() && s.kvOutage.To.IsZero() {
		s.kvOutage.To = in.Now
	}
	in.AgentsUnread = s.kvOutage
}

// keepLast fills the parts of in whose source failed with their last good
// answer, and remembers the good ones.
func (s *Server) keepLast(in *Inputs) {
	l := &s.last
	if _, failed := in.Errors["docker"]; failed {
		in.Nodes, in.Services, in.Tasks = l.Nodes, l.Services, l.Tasks
	} else {
		l.Nodes, l.Services, l.Tasks = in.Nodes, in.Services, in.Tasks
	}
	if _, failed := in.Errors["consul"]; failed {
		in.Instances = l.Instances
	} else {
		l.Instances = in.Instances
	}
	if _, failed := in.Errors["kv"]; failed {
		in.Networks, in.Inventory, in.Agents, in.NodeNames = l.Networks, l.Inventory, l.Agents, l.NodeNames
		in.Unregistered, in.BadUnregistered = l.Unregistered, l.BadUnregistered
	} else {
		l.Networks, l.Inventory, l.Agents, l.NodeNames = in.Networks, in.Inventory, in.Agents, in.NodeNames
		l.Unregistered, l.BadUnregistered = in.Unregistered, in.BadUnregistered
	}
	if _, failed := in.Errors["history"]; failed {
		in.History, in.BadHistory, in.Control = l.History, l.BadHistory, l.Control
	} else {
		l.History, l.BadHistory, l.Control = in.History, in.BadHistory, in.Control
	}
}

// sample records each service's replicas when they changed, for the
// charts, and returns every service's samples.
func (s *Server) sample(in Inputs) map[string][]ReplicaSample {
	cur := ReplicaCounts(in)
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.samples {
		if _, ok := cur[name]; !ok {
			delete(s.samples, name)
		}
	}
	for name, c := range cur {
		ss := s.samples[name]
		if n := len(ss); n == 0 || ss[n-1].Desired != c.Desired || ss[n-1].Running != c.Running {
			s.samples[name] = lastN(append(ss, c), MaxPoints)
		}
	}
	out := make(map[string][]ReplicaSample, len(s.samples))
	for k, v := range s.samples {
		out[k] = slices.Clone(v)
	}
	return out
}

// ReplicaCounts is each service's desired and running replicas at in.Now,
// by service name.
func ReplicaCounts(in Inputs) map[string]ReplicaSample {
	byID := map[string]*ReplicaSample{}
	out := map[string]ReplicaSample{}
	for _, svc := range in.Services {
		byID[svc.ID] = &ReplicaSample{Time: in.Now.UTC(), Desired: svc.Replicas}
	}
	for _, t := range in.Tasks {
		c := byID[t.ServiceID]
		if c == nil || t.DesiredState != "running" {
			continue
		}
		if t.State == "running" {
			c.Running++
		}
	}
	for _, svc := range in.Services {
		c := byID[svc.ID]
		if svc.Global {
			c.Desired = 0
			for _, t := range in.Tasks {
				if t.ServiceID == svc.ID && t.DesiredState == "running" {
					c.Desired++
				}
			}
		}
		out[svc.Name] = *c
	}
	return out
}

// publish makes snap the current snapshot when its content changed,
// numbers it, diffs it against the previous one and sends both to every
// stream. Its content is encoded once: a rebuild that changed nothing,
// as most do, costs that encoding and keeps no copy of it. When limit
// cuts nothing, that encoding is also the body the pages get.
//
// Everything that grows with the cluster (encoding, diffing, fitting to
// MaxSnapshotBytes, framing) is done before taking mu, which every page's
// read and every stream's frame waits on: under it, the new snapshot only
// replaces the old one, whole, and is handed to the streams.
func (s *Server) publish(snap Snapshot) {
	s.publishing.Lock()
	defer s.publishing.Unlock()
	bare := snap
	bare.Version, bare.Instance, bare.GeneratedAt = 0, "", time.Time{}
	lim, whole := limit(snap)
	h := maphash.Hash{}
	h.SetSeed(s.seed)
	var enc []byte
	var err error
	if whole {
		if enc, err = json.Marshal(bare); err == nil {
			h.Write(enc)
		}
	} else {
		err = json.NewEncoder(&h).Encode(bare)
	}
	if err != nil {
		s.log.Error("encode snapshot", "err", err)
		return
	}
	digest := h.Sum64()
	// publishing is held: snap, digest, version and seq change only
	// below, so they are read here without mu.
	if s.snap != nil && digest == s.digest {
		s.mu.Lock()
		s.builtAt = snap.GeneratedAt
		s.mu.Unlock()
		return
	}
	version, seq := s.version+1, s.seq
	snap.Version, snap.Instance = version, s.instance
	events := Diff(s.snap, &snap)
	for i := range events {
		seq++
		events[i].Seq = seq
	}
	body := s.pageBody(enc, lim, snap)
	frame := sseFrame("snapshot", fmt.Sprint(snap.Version), body)
	var evFrame []byte
	if len(events) > 0 {
		// A page keeps the last EventBacklog (a change may make thousands:
		// a Consul restarted empty, every registration gone), as it gets
		// on connecting.
		eb, _ := json.Marshal(lastN(events, EventBacklog))
		evFrame = sseFrame("events", "", eb)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.builtAt = snap.GeneratedAt
	s.version, s.seq = version, seq
	if len(events) > 0 {
		s.events, s.backlog = lastN(append(s.events, events...), EventBacklog), nil
	}
	s.snap, s.digest, s.body, s.gz, s.frame = &snap, digest, body, s.lazyGzip(body), frame
	s.metrics.snapshots.Inc()
	for sub := range s.subs {
		sub.snap = s.frame // the one not sent yet is stale now
		if evFrame != nil {
			if len(sub.events) >= subscriberBuffer {
				// Too far behind: end it; the page reconnects and starts
				// from the current snapshot and the backlog.
				delete(s.subs, sub)
				sub.dropped, sub.snap, sub.events = true, nil, nil
				s.metrics.dropped.Inc()
			} else {
				sub.events = append(sub.events, evFrame)
			}
		}
		signal(sub.ready)
	}
}

// pageBody is the JSON pages get of snap, numbered: enc, its content's
// encoding, with snap's header when nothing was cut, else lim's, cut
// further to MaxSnapshotBytes when larger.
func (s *Server) pageBody(enc []byte, lim, snap Snapshot) []byte {
	body, ok := withHeader(enc, snap)
	if !ok {
		lim.Version, lim.Instance = snap.Version, snap.Instance
		body, _ = json.Marshal(lim)
	}
	if len(body) > MaxSnapshotBytes {
		// Large cards, problems or holders: cut further, to the bound.
		fitted, fits, err := fit(snap, MaxSnapshotBytes)
		if err == nil {
			body = fitted
		}
		if !fits {
			s.log.Warn("snapshot larger than its bound even with no card, service, problem or address listed", "bytes", len(body), "max_bytes", MaxSnapshotBytes, "err", err)
		}
	}
	return body
}

// snapshotHeader is a snapshot's first fields, which its content leaves
// out.
type snapshotHeader struct {
	Version     uint64    `json:"version"`
	Instance    string    `json:"instance"`
	GeneratedAt time.Time `json:"generated_at"`
}

// withHeader is bare, a snapshot's JSON with the header's fields zero,
// with snap's header instead; false when bare is not such JSON (nil, or
// Snapshot no longer begins with those fields).
func withHeader(bare []byte, snap Snapshot) ([]byte, bool) {
	zero, _ := json.Marshal(snapshotHeader{})
	rest, ok := bytes.CutPrefix(bare, zero[:len(zero)-1]) // without its "}"
	if !ok || len(rest) == 0 || rest[0] != ',' {
		return nil, false
	}
	head, err := json.Marshal(snapshotHeader{Version: snap.Version, Instance: snap.Instance, GeneratedAt: snap.GeneratedAt})
	if err != nil {
		return nil, false
	}
	return append(head[:len(head)-1], rest...), true
}

// sseFrame formats one server-sent event; data is JSON, one line.
func sseFrame(event, id string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString("event: " + event + "\n")
	if id != "" {
		b.WriteString("id: " + id + "\n")
	}
	b.WriteString("data: ")
	b.Write(data)
	b.WriteString("\n\n")
	return b.Bytes()
}

// Snapshot returns the current snapshot's JSON, nil before the first.
func (s *Server) Snapshot() []byte {
	b, _ := s.snapshotBodies()
	return b
}

// snapshotBodies returns the current snapshot's JSON, plain and gzipped
// (compressed once per snapshot).
func (s *Server) snapshotBodies() ([]byte, []byte) {
	s.mu.Lock()
	body, gz := s.body, s.gz
	s.mu.Unlock()
	if body == nil {
		return nil, nil
	}
	return body, gz()
}

// lazyGzip returns a function that gzips body the first time it is
// called, and returns that every time.
func (s *Server) lazyGzip(body []byte) func() []byte {
	return sync.OnceValue(func() []byte { return s.gzip(body) })
}

// gzip compresses b with a writer of bodyGzip.
func (s *Server) gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := s.bodyGzip.Get().(*gzip.Writer)
	defer s.bodyGzip.Put(zw)
	zw.Reset(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// subscribe opens a stream; its first frames are the current snapshot and
// the event backlog, so nothing falls between them and what follows: the
// stream is opened, and the snapshot and events taken, at one moment
// under mu. The backlog's frame (up to EventBacklog events, half a
// megabyte) is made after, without mu, which every page's read and
// stream's frame waits on; pages connecting meanwhile wait for it, once.
func (s *Server) subscribe() (*subscriber, [][]byte) {
	s.mu.Lock()
	sub := &subscriber{ready: make(chan struct{}, 1)}
	s.subs[sub] = struct{}{}
	if len(s.subs) == 1 && s.cfg.Now().Sub(s.builtAt) > s.cfg.Refresh {
		// The first page after a quiet time: catch up now. Not on a
		// snapshot younger than Refresh, as a read of it does not: a
		// client opening and closing streams in a loop would have every
		// one read the whole cluster.
		signal(s.kick)
	}
	var first [][]byte
	if s.frame != nil {
		first = append(first, s.frame)
	}
	var backlog func() []byte
	if len(s.events) > 0 {
		if s.backlog == nil {
			s.backlog = eventsFrame(s.events)
		}
		backlog = s.backlog
	}
	s.mu.Unlock()
	if backlog != nil {
		first = append(first, backlog())
	}
	return sub, first
}

// eventsFrame returns a function that makes the events frame of events
// the first time it is called, and returns that every time.
func eventsFrame(events []Event) func() []byte {
	return sync.OnceValue(func() []byte {
		eb, _ := json.Marshal(events)
		return sseFrame("events", "", eb)
	})
}

func (s *Server) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
	sub.snap, sub.events = nil, nil
}

// pending takes the frames sub has yet to send: the latest snapshot, then
// the events; false when the stream was dropped.
func (s *Server) pending(sub *subscriber) ([][]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sub.dropped {
		return nil, false
	}
	var out [][]byte
	if sub.snap != nil {
		out = append(out, sub.snap)
	}
	out = append(out, sub.events...)
	sub.snap, sub.events = nil, nil
	return out, true
}

func (s *Server) subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

func (s *Server) currentVersion() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Events returns the events kept, oldest first.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}
