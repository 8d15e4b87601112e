package register

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/docker/docker/pkg/stringid"
)

// A container's start is the moment it must appear in Consul, and reading
// it from Docker then is slow: dockerd holds an inspect until the start is
// over and answers it while the host is busiest. So what the registration
// needs is read before the start: the container's configuration when it is
// created (an inspect that dockerd answers at once, the start not having
// begun), and each network endpoint from the network at its connect event
// (a network read, which the start does not hold). At the start event the
// registration is written from that, with no read. Then the started
// containers' endpoints are checked against it, many at a time, in
// Docker's container listing; one that differs is read in full and its
// registration corrected (counted, so it shows if it ever happens). The
// rest of a container (labels, environment, exposed ports) is fixed at its
// create, and events report what a start changes later.

// prepared is what was read of a created container before it started.
type prepared struct {
	c Container
	// stream is the event stream the create was read under: events missed
	// since would make the view untrustworthy.
	stream uint64
	// endpoints are the network endpoints learnt from this start's
	// connect events, by network name.
	endpoints map[string]Endpoint
}

// started is the container as it will be inspected once started, and
// whether the prepared view is complete enough to say so.
func (p *prepared) started() (Container, bool) {
	c := p.c
	// Host ports are bound during the start; only an inspect knows them.
	if c.PublishRequested || len(p.endpoints) != len(c.Networks) {
		return Container{}, false
	}
	nets := make([]Endpoint, 0, len(c.Networks))
	for _, want := range c.Networks {
		ep, ok := p.endpoints[want.Network]
		if !ok {
			return Container{}, false
		}
		nets = append(nets, ep)
	}
	c.Networks = nets
	c.Running, c.Created = true, false
	if c.HealthConfigured {
		c.Health = "starting" // what dockerd sets as the container starts
	}
	return c, true
}

// prepare keeps what a pass read of a created container, if it is one this
// pass can vouch for: a create event among its events, and Docker's
// "created" state (a container that started and died since is no longer).
func (a *Agent) prepare(id string, p pass, c Container) {
	if !p.events.created {
		return
	}
	if !c.Created || c.Running {
		// The read waited in dockerd for a start that began first.
		a.metrics.prepared.WithLabelValues("late").Inc()
		return
	}
	a.mu.Lock()
	a.prepared[id] = &prepared{c: c, stream: p.stream, endpoints: map[string]Endpoint{}}
	a.mu.Unlock()
	a.log.Debug("created container read; its start will be registered from this view", "container", stringid.TruncateID(id))
}

// preparedFor returns the container's prepared view, if any.
func (a *Agent) preparedFor(id string) *prepared {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.prepared[id]
}

func (a *Agent) dropPrepared(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.prepared, id)
}

// preparedPass handles a pass from the container's prepared view: its
// network connects are read from the networks, and its start is registered
// without reading the container. It reports false when the pass must read
// Docker instead: no prepared view, or events the view cannot account for.
// Only one worker runs a container's passes, so the view is not shared.
func (a *Agent) preparedPass(ctx context.Context, id string, p pass) (bool, error) {
	pr := a.preparedFor(id)
	if pr == nil {
		return false, nil
	}
	ev := p.events
	if p.forced || ev.other || ev.created || pr.stream != p.stream || (len(ev.connects) == 0 && !ev.started) {
		a.dropPrepared(id)
		a.metrics.prepared.WithLabelValues("dropped").Inc()
		return false, nil
	}
	for _, networkID := range ev.connects {
		ep, err := a.docker.Endpoint(ctx, networkID, id, p.began)
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				a.log.Debug("read endpoint failed; the container will be inspected", "container", stringid.TruncateID(id), "network", networkID, "err", err)
			}
			a.dropPrepared(id)
			a.metrics.prepared.WithLabelValues("dropped").Inc()
			return false, nil
		}
		pr.endpoints[ep.Network] = ep
	}
	if !ev.started {
		return true, nil
	}
	a.dropPrepared(id)
	began := time.Now()
	c, ok := pr.started()
	if !ok {
		a.metrics.prepared.WithLabelValues("dropped").Inc()
		return false, nil
	}
	desired, warnings, why := DesiredWhy(c, a.cfg.Policy)
	a.reportWarnings(id, warnings)
	desired = a.withoutHeld(id, desired)
	changes := Plan(desired, a.actualFor(id))
	if !changes.Empty() {
		if err := a.apply(ctx, id, changes); err != nil {
			a.passFailed(id, p)
			return true, err
		}
		if !ev.oldest.IsZero() {
			a.metrics.eventLatency.Observe(time.Since(ev.oldest).Seconds())
		}
	}
	a.metrics.prepared.WithLabelValues("written").Inc()
	a.noteLeftOut(id, c, why) // after the write: registrations come first
	a.log.Debug("start registered from the prepared view", "container", stringid.TruncateID(id), "writes", changes.Len(), "since_start_event", time.Since(ev.startedAt), "writing", time.Since(began), "pass_began_after", began.Sub(ev.startedAt))
	// The check, with the other starts' once other work allows.
	a.mu.Lock()
	a.verifying[id] = c.Networks
	a.mu.Unlock()
	a.queue.AddBackground(verifyKey)
	return true, nil
}

// verifyKey is the queue's key for checking the starts registered from
// prepared views; no container ID is empty.
const verifyKey = ""

// maxVerify bounds the containers one listing asks for: each is a
// filter in the request's URL.
const maxVerify = 100

// verifyStarts checks the starts registered from prepared views against
// Docker's listing of the started containers: one whose endpoints are
// those registered is done; any other, or all if the listing fails, is
// read in full by its own pass, which corrects and counts what differs.
func (a *Agent) verifyStarts(ctx context.Context) {
	a.mu.Lock()
	stream := a.stream
	batch := make(map[string][]Endpoint, min(len(a.verifying), maxVerify))
	for id, eps := range a.verifying {
		if len(batch) == maxVerify {
			a.queue.AddBackground(verifyKey) // the rest next
			break
		}
		batch[id] = eps
	}
	a.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	listed, err := a.docker.RunningEndpoints(ctx, slices.Collect(maps.Keys(batch)))
	if err != nil {
		a.metrics.errors.WithLabelValues("docker").Inc()
		a.log.Debug("list started containers failed; each will be read", "containers", len(batch), "err", err)
	}
	for id, registered := range batch {
		eps, running := listed[id]
		switch {
		case err == nil && running && sameEndpoints(registered, eps):
			// Seen running, as a pass that reads it would (see beginPass),
			// unless a pass ended the check since: one of a die, say.
			a.mu.Lock()
			_, still := a.verifying[id]
			if still {
				delete(a.verifying, id)
				a.sawRunning[id] = stream
			}
			a.mu.Unlock()
			if still {
				a.log.Debug("start registration checked", "container", stringid.TruncateID(id), "corrected", false)
			}
			continue
		case err == nil && !running:
			// Stopped or gone since: its events bring its passes; not a
			// mistake of the view.
			a.mu.Lock()
			delete(a.verifying, id)
			a.mu.Unlock()
		}
		a.force(id)
		a.queue.AddBackground(id)
	}
}

// sameEndpoints says two lists hold the same endpoints, in any order; the
// driver, which a listing does not give, is the network's own.
func sameEndpoints(a, b []Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(e Endpoint) Endpoint { e.Driver = ""; return e }
	want := make(map[Endpoint]int, len(a))
	for _, e := range a {
		want[key(e)]++
	}
	for _, e := range b {
		k := key(e)
		if want[k] == 0 {
			return false
		}
		want[k]--
	}
	return true
}

// verified ends the check of a start registered from the prepared view;
// wrote says the read found something to correct.
func (a *Agent) verified(id string, wrote bool) {
	a.mu.Lock()
	_, checking := a.verifying[id]
	delete(a.verifying, id)
	a.mu.Unlock()
	if checking {
		a.log.Debug("start registration checked", "container", stringid.TruncateID(id), "corrected", wrote)
	}
	if checking && wrote {
		a.metrics.prepared.WithLabelValues("corrected").Inc()
		a.log.Warn("the registration written at start differed from the started container; corrected", "container", stringid.TruncateID(id))
	}
}
