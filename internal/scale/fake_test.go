package scale

import (
	"context"
	"fmt"
	"maps"
	"sync"
)

// fakeSwarm is an in-memory swarm for unit tests of the controller and API.
type fakeSwarm struct {
	mu       sync.Mutex
	services map[string]Service // by ID
	// conflicts is how many SetReplicas calls fail with a version conflict
	// (after bumping the version, as a concurrent writer would).
	conflicts int
	updates   int
	// lose is how many tasks the next scale-down leaves wanted above the
	// count (swarm losing their removal), until the service's next write;
	// loseAlways makes every write lose them.
	lose       int
	loseAlways bool
	// extra are the tasks wanted above the count, by service ID.
	extra       map[string]int
	wantedCalls int
	events      chan ServiceEvent
	// errs ends the current event stream when sent to.
	errs chan error
	// removeOnWrite removes the service a SetReplicas call is about, as
	// `docker service rm` between the controller's read and its write.
	removeOnWrite bool
	// afterList runs once Services has read its list, before it returns
	// it: what happens in Docker while a resync's list is on its way.
	afterList func()
}

func newFakeSwarm(svcs ...Service) *fakeSwarm {
	f := &fakeSwarm{services: map[string]Service{}, events: make(chan ServiceEvent, 16), errs: make(chan error)}
	for _, s := range svcs {
		f.services[s.ID] = s
	}
	return f
}

func (f *fakeSwarm) Services(context.Context) ([]Service, error) {
	f.mu.Lock()
	var out []Service
	for _, s := range f.services {
		s.Labels = maps.Clone(s.Labels)
		out = append(out, s)
	}
	after := f.afterList
	f.mu.Unlock()
	if after != nil {
		after()
	}
	return out, nil
}

func (f *fakeSwarm) Service(_ context.Context, idOrName string) (Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.services {
		if s.ID == idOrName || s.Name == idOrName {
			s.Labels = maps.Clone(s.Labels)
			return s, nil
		}
	}
	return Service{}, fmt.Errorf("service %s: %w", idOrName, ErrNotFound)
}

func (f *fakeSwarm) SetReplicas(_ context.Context, id string, version uint64, replicas int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.removeOnWrite {
		delete(f.services, id)
	}
	s, ok := f.services[id]
	if !ok {
		return ErrNotFound
	}
	if f.conflicts > 0 {
		f.conflicts--
		s.Version++
		f.services[id] = s
		return ErrVersionConflict
	}
	if s.Version != version {
		return ErrVersionConflict
	}
	if s.Global {
		return ErrGlobalService
	}
	if f.extra == nil {
		f.extra = map[string]int{}
	}
	switch {
	case f.loseAlways:
		f.extra[id] = max(1, f.lose)
	case replicas < s.Replicas && f.lose > 0:
		f.extra[id], f.lose = f.lose, 0
	default:
		f.extra[id] = 0
	}
	s.Replicas, s.Version = replicas, s.Version+1
	f.services[id] = s
	f.updates++
	return nil
}

func (f *fakeSwarm) Wanted(_ context.Context, id string) ([]Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wantedCalls++
	s, ok := f.services[id]
	if !ok {
		return nil, ErrNotFound
	}
	var out []Task
	for i := range s.Replicas + f.extra[id] {
		out = append(out, Task{ID: fmt.Sprintf("%s-task%d", id, i+1), Slot: i + 1, State: "running"})
	}
	return out, nil
}

// counts returns the writes and the Wanted calls so far.
func (f *fakeSwarm) counts() (updates, wantedCalls int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.updates, f.wantedCalls
}

func (f *fakeSwarm) Events(ctx context.Context) (<-chan ServiceEvent, <-chan error) {
	return f.events, f.errs
}

// setQuietly adds a service without an event, as if the event was lost.
func (f *fakeSwarm) setQuietly(s Service) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services[s.ID] = s
}

// set adds or replaces a service and sends its event.
func (f *fakeSwarm) set(s Service, action string) {
	f.mu.Lock()
	if action == "remove" {
		delete(f.services, s.ID)
	} else {
		f.services[s.ID] = s
	}
	f.mu.Unlock()
	f.events <- ServiceEvent{ServiceID: s.ID, Action: action}
}

func (f *fakeSwarm) replicas(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.services[id].Replicas
}

// memHistory is a History in memory.
type memHistory struct {
	mu      sync.Mutex
	records []Record
	// err fails Last when set.
	err error
	// bad are the unreadable records Last reports.
	bad []BadRecord
}

func (h *memHistory) Append(_ context.Context, r Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}

func (h *memHistory) Last(_ context.Context, service string) (LastScale, []BadRecord, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return LastScale{}, nil, h.err
	}
	var mine []Record
	for _, r := range h.records {
		if r.Service == service {
			mine = append(mine, r)
		}
	}
	return LastScaleOf(mine), h.bad, nil
}

func (h *memHistory) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.records)
}
