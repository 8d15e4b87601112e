package adapter

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// fakeLock is the part of Consul a leader election uses, in memory: TTL
// sessions (create, renew, destroy, info) whose invalidation releases
// their locks under the session's lock delay, and KV keys with acquire,
// release and blocking reads. A session is invalidated exactly its TTL
// after it was created or last renewed: the soonest Consul's contract
// allows (Consul itself waits twice that).
type fakeLock struct {
	mu       sync.Mutex // guards following fields
	index    uint64
	changed  chan struct{} // closed and replaced at every write
	sessions map[string]*fakeSession
	pairs    map[string]*api.KVPair
	// delayed is when a key's lock delay ends.
	delayed map[string]time.Time
	nextID  int
	// granted, when set, runs (under mu) as session id of frontend is
	// granted a lock.
	granted func(frontend, id string)
}

type fakeSession struct {
	entry  api.SessionEntry
	expiry *time.Timer
}

func newFakeLock(t *testing.T) *fakeLock {
	f := &fakeLock{changed: make(chan struct{}), sessions: map[string]*fakeSession{},
		pairs: map[string]*api.KVPair{}, delayed: map[string]time.Time{}}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.sessions {
			s.expiry.Stop()
		}
	})
	return f
}

// client serves f to a client named frontend (a node's Consul agent);
// once hang is closed, that agent holds every request unanswered until its
// caller gives up or the test ends.
func (f *fakeLock) client(t *testing.T, frontend string, hang <-chan struct{}) *api.Client {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		default:
		}
		f.serve(frontend, w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeLocked moves the index on and wakes the blocking reads.
func (f *fakeLock) writeLocked() {
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

// invalidateLocked ends session id, releasing its locks under its lock
// delay.
func (f *fakeLock) invalidateLocked(id string) {
	s, ok := f.sessions[id]
	if !ok {
		return
	}
	s.expiry.Stop()
	delete(f.sessions, id)
	for k, p := range f.pairs {
		if p.Session == id {
			p.Session = ""
			p.ModifyIndex = f.index + 1
			f.delayed[k] = time.Now().Add(s.entry.LockDelay)
		}
	}
	f.writeLocked()
}

func (f *fakeLock) serve(frontend string, w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch p := r.URL.Path; {
	case p == "/v1/session/create":
		var body struct{ Name, Behavior, TTL, LockDelay string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ttl, err := time.ParseDuration(body.TTL)
		delay, derr := time.ParseDuration(body.LockDelay)
		if err != nil || derr != nil || body.Behavior != api.SessionBehaviorRelease {
			http.Error(w, fmt.Sprintf("TTL %q, behavior %q", body.TTL, body.Behavior), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.nextID++
		id := fmt.Sprintf("%s-session-%d", frontend, f.nextID)
		s := &fakeSession{entry: api.SessionEntry{ID: id, Name: body.Name, Behavior: body.Behavior, TTL: body.TTL,
			LockDelay: delay}}
		s.expiry = time.AfterFunc(ttl, func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.invalidateLocked(id)
		})
		f.sessions[id] = s
		f.writeLocked()
		f.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{"ID": id})
	case strings.HasPrefix(p, "/v1/session/renew/"):
		f.mu.Lock()
		defer f.mu.Unlock()
		s, ok := f.sessions[strings.TrimPrefix(p, "/v1/session/renew/")]
		if !ok {
			http.Error(w, "session not found", http.StatusNotFound)
			return
		}
		ttl, _ := time.ParseDuration(s.entry.TTL)
		s.expiry.Reset(ttl)
		json.NewEncoder(w).Encode([]api.SessionEntry{s.entry})
	case strings.HasPrefix(p, "/v1/session/destroy/"):
		f.mu.Lock()
		defer f.mu.Unlock()
		f.invalidateLocked(strings.TrimPrefix(p, "/v1/session/destroy/"))
		io.WriteString(w, "true")
	case strings.HasPrefix(p, "/v1/session/info/"):
		f.mu.Lock()
		defer f.mu.Unlock()
		out := []api.SessionEntry{}
		if s, ok := f.sessions[strings.TrimPrefix(p, "/v1/session/info/")]; ok {
			out = append(out, s.entry)
		}
		json.NewEncoder(w).Encode(out)
	case strings.HasPrefix(p, "/v1/kv/"):
		f.serveKV(frontend, strings.TrimPrefix(p, "/v1/kv/"), w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeLock) serveKV(frontend, key string, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.Method == http.MethodGet {
		f.get(key, w, r)
		return
	}
	if r.Method != http.MethodPut {
		http.Error(w, "method", http.StatusMethodNotAllowed)
		return
	}
	body, _ := io.ReadAll(r.Body)
	flags, _ := strconv.ParseUint(q.Get("flags"), 10, 64)
	f.mu.Lock()
	defer f.mu.Unlock()
	p, had := f.pairs[key]
	switch {
	case q.Has("acquire"):
		id := q.Get("acquire")
		if _, ok := f.sessions[id]; !ok {
			http.Error(w, "invalid session "+id, http.StatusInternalServerError)
			return
		}
		if (had && p.Session != "" && p.Session != id) || time.Now().Before(f.delayed[key]) {
			io.WriteString(w, "false")
			return
		}
		if f.granted != nil {
			f.granted(frontend, id)
		}
		if !had {
			p = &api.KVPair{Key: key, CreateIndex: f.index + 1}
			f.pairs[key] = p
		}
		p.Value, p.Flags, p.Session, p.ModifyIndex = body, flags, id, f.index+1
		p.LockIndex++
	case q.Has("release"):
		if !had || p.Session != q.Get("release") {
			io.WriteString(w, "false")
			return
		}
		p.Value, p.Flags, p.Session, p.ModifyIndex = body, flags, "", f.index+1
	default:
		http.Error(w, "only acquire and release", http.StatusBadRequest)
		return
	}
	f.writeLocked()
	io.WriteString(w, "true")
}

// get answers a read of key, blocking as Consul does while the index is
// not past the one waited on.
func (f *fakeLock) get(key string, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	waitOn, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait, err := time.ParseDuration(q.Get("wait"))
	if err != nil {
		wait = 5 * time.Minute
	}
	timeout := time.After(wait)
	f.mu.Lock()
wait:
	for waitOn > 0 && f.index <= waitOn {
		changed := f.changed
		f.mu.Unlock()
		select {
		case <-changed:
			f.mu.Lock()
		case <-timeout:
			f.mu.Lock()
			break wait
		case <-r.Context().Done():
			return
		}
	}
	defer f.mu.Unlock()
	w.Header().Set("X-Consul-Index", strconv.FormatUint(f.index, 10))
	p, ok := f.pairs[key]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	json.NewEncoder(w).Encode([]*api.KVPair{p})
}

// holder is the session holding key's lock, "" when none.
func (f *fakeLock) holder(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.pairs[key]; ok {
		return p.Session
	}
	return ""
}
