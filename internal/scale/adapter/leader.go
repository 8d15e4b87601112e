package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/kvstore"
)

// DefaultLeaderKey is the Consul KV key of the control instances' lock;
// its value is the leader's advertised address.
const DefaultLeaderKey = "underlay/scale/leader"

// LeaderConfig configures a ConsulLeader.
type LeaderConfig struct {
	// Key is the lock's KV key (DefaultLeaderKey when empty).
	Key string
	// Advertise is the address followers name as the leader's: the API's
	// host:port as clients reach it.
	Advertise string
	// SessionTTL bounds how long a crashed leader keeps the lock (Consul's
	// minimum, 10s, when zero). A leader whose session's renewals do not
	// succeed (Consul unreachable, or an agent that never answers) stops
	// leading leaseFor(SessionTTL) after the last one that did, before
	// Consul can end the session.
	SessionTTL time.Duration
	// LockDelay is how long Consul refuses the lock after its holder's
	// session was invalidated (1s when zero; Consul's default is 15s). A
	// leader that stops cleanly releases the lock with no delay; after a
	// crash, a refused lock is tried again after LockDelay.
	LockDelay time.Duration
}

// ConsulLeader elects one leader among control instances with a Consul
// lock (a session and a KV acquire, shared with Consul's own api.Lock);
// it implements scale.Leadership. Run competes for the lock until its
// context ends, then releases it. Every call it makes to Consul is
// bounded, and it leads only while a renewal of its session has
// succeeded recently enough to prove the lock still its own (leaseFor).
type ConsulLeader struct {
	cfg LeaderConfig
	api *api.Client
	log *slog.Logger

	mu      sync.Mutex // guards following fields
	leading bool
	term    uint64
	// until is when the lease of the current session ends (leaseFor
	// after the last renewal sent that succeeded): past it, no leading.
	until time.Time
	// tampered is the last tampered value logged, so that it is logged once.
	tampered string
}

// NewConsulLeader returns an election over c.
func NewConsulLeader(cfg LeaderConfig, c *api.Client, log *slog.Logger) *ConsulLeader {
	if cfg.Key == "" {
		cfg.Key = DefaultLeaderKey
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 10 * time.Second
	}
	if cfg.LockDelay <= 0 {
		cfg.LockDelay = time.Second
	}
	return &ConsulLeader{cfg: cfg, api: c, log: log.With("component", "scale_leader", "key", cfg.Key)}
}

// Leading implements scale.Leadership: the lock acquired, and the
// session's lease (leaseFor) not run out, whatever Run has yet noticed.
func (l *ConsulLeader) Leading() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term, l.leading && time.Now().Before(l.until)
}

// ErrLeaderKeyTampered is returned by Leader when the lock key's value is
// not the address its holder advertised: someone wrote the key.
var ErrLeaderKeyTampered = errors.New("leader key written by someone other than its lock holder")

// sessionPrefix starts the name of a leader's session; the advertised
// address follows.
const sessionPrefix = "underlay-control "

// Leader implements scale.Leadership: the value of the lock's key while a
// session holds it — when the value is the address the session's holder
// advertised, which the session's name records. A plain KV write changes
// the value and keeps the Session, so "the key is locked" proves nothing of
// its value; a value that does not match is refused with
// ErrLeaderKeyTampered (and logged once), and no leader is named. Its
// two reads are given up together as one write of the election is (the
// API's leader route passes its request's context, which may never end).
func (l *ConsulLeader) Leader(ctx context.Context) (string, error) {
	ctx, cancel := kvstore.WriteContext(ctx, l.cfg.SessionTTL)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(ctx)
	p, _, err := l.api.KV().Get(l.cfg.Key, q)
	if err != nil {
		return "", fmt.Errorf("get %s: %w", l.cfg.Key, err)
	}
	if p == nil || p.Session == "" {
		return "", nil
	}
	se, _, err := l.api.Session().Info(p.Session, q)
	if err != nil {
		return "", fmt.Errorf("read session %s holding %s: %w", p.Session, l.cfg.Key, err)
	}
	if se == nil {
		return "", nil // invalidated meanwhile: the lock is being released
	}
	value := string(p.Value)
	if advertised, _ := strings.CutPrefix(se.Name, sessionPrefix); advertised != value {
		err := fmt.Errorf("%w: %s holds %q, but its lock holder advertised %q (session %s)", ErrLeaderKeyTampered, l.cfg.Key, value, advertised, p.Session)
		l.mu.Lock()
		first := l.tampered != value
		l.tampered = value
		l.mu.Unlock()
		if first {
			l.log.Warn("the leader key was written by someone other than the leader; it is ignored", "err", err)
		}
		return "", err
	}
	return value, nil
}

func (l *ConsulLeader) set(leading bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if leading {
		l.term++
	}
	l.leading = leading
}

// Run competes for the lock, holds it while it can, and competes again
// when it is lost, until ctx ends; then it releases the lock, so that
// another instance takes over at once.
func (l *ConsulLeader) Run(ctx context.Context) error {
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		held, err := l.holdOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if held {
			delays.Reset()
		}
		delay := delays.Next()
		if err != nil {
			l.log.Warn("leader election failed; retrying", "err", err, "retry_in", delay)
		}
		backoff.Sleep(ctx, delay)
	}
	return nil
}

// leaseFor is how long after a renewal of its session (or its creation)
// was sent a leader still counts itself the leader: the session's TTL
// less a fifth.
//
// Consul invalidates a session no sooner than its TTL after it handled
// the last renewal (it waits twice the TTL, but promises only the TTL),
// which is after the renewal was sent, so no sooner
// than the TTL after "sent" on this machine's clock; another instance
// can take the lock only once the session's lock delay has passed since.
// Every call to Consul may hang (an agent that accepts and never
// answers): a leader that has not heard of a renewal cannot prove it
// still holds the lock, and stops leading when the TTL could run out.
// The fifth taken off (2 s of the default 10 s) is for what counting on
// two clocks cannot promise: their rates differ (by parts per million,
// milliseconds over a TTL), a timer fires late on a loaded machine, and a
// decision that saw Leading just before it ended is still being applied;
// with the lock delay (1 s), such a decision has 3 s to land before
// another instance can lead.
func leaseFor(ttl time.Duration) time.Duration { return ttl - ttl/5 }

// renewEvery is how often a session of TTL ttl is renewed, each renewal
// given up after as long: three tries after each success before the
// lease (leaseFor) runs out, so a renewal lost on the way costs nothing.
func renewEvery(ttl time.Duration) time.Duration { return ttl / 4 }

// monitorRetries is how many reads of the held lock in a row may fail
// before the leader gives it up (as Consul's own lock did): the session
// kept alive does not prove the key was not deleted or released.
const monitorRetries = 3

// errNotHeld is what a round of the election ends with when the lock
// is no longer the session's.
var errNotHeld = errors.New("the lock is no longer held")

// holdOnce is one round of the election: a session, the lock acquired
// with it and held while the session is proven alive, then the lock
// released and the session destroyed. It reports whether it led. Every
// call to Consul is bounded: a Consul agent that never answers makes the
// round fail, and ends leadership within the session's lease.
func (l *ConsulLeader) holdOnce(ctx context.Context) (led bool, err error) {
	id, err := l.createSession(ctx)
	if err != nil {
		return false, err
	}
	// sctx ends with the session's lease: the renewals' failure cancels
	// it, with the cause.
	sctx, lapse := context.WithCancelCause(ctx)
	renewing := make(chan struct{})
	go func() { defer close(renewing); l.keepSession(sctx, id, lapse) }()
	defer func() {
		lapse(nil)
		<-renewing
		l.endSession(ctx, id, led)
	}()
	if err := l.acquire(sctx, id); err != nil {
		if ctx.Err() == nil && sctx.Err() != nil {
			err = context.Cause(sctx)
		}
		return false, err
	}
	l.set(true)
	l.log.Info("leadership acquired", "advertise", l.cfg.Advertise)
	err = l.watch(sctx, id)
	l.set(false)
	if ctx.Err() != nil {
		l.log.Info("leadership released", "advertise", l.cfg.Advertise)
		return true, nil
	}
	if sctx.Err() != nil {
		err = context.Cause(sctx)
	}
	l.log.Warn("leadership lost", "advertise", l.cfg.Advertise, "err", err)
	return true, nil
}

// createSession creates the session of a round of the election, the
// lease of its leadership starting as it was asked for.
func (l *ConsulLeader) createSession(ctx context.Context) (string, error) {
	wctx, cancel := kvstore.WriteContext(ctx, l.cfg.SessionTTL)
	defer cancel()
	sent := time.Now()
	id, _, err := l.api.Session().Create(&api.SessionEntry{
		Name: sessionPrefix + l.cfg.Advertise, TTL: l.cfg.SessionTTL.String(),
		LockDelay: l.cfg.LockDelay, Behavior: api.SessionBehaviorRelease,
	}, (&api.WriteOptions{}).WithContext(wctx))
	if err != nil {
		return "", fmt.Errorf("create a session for the lock %s: %w", l.cfg.Key, err)
	}
	l.mu.Lock()
	l.until = sent.Add(leaseFor(l.cfg.SessionTTL))
	l.mu.Unlock()
	return id, nil
}

// keepSession renews session id every renewEvery until ctx ends. When
// Consul says the session is gone, or no renewal succeeded within the
// lease, it ends the round with lapse.
func (l *ConsulLeader) keepSession(ctx context.Context, id string, lapse context.CancelCauseFunc) {
	every := renewEvery(l.cfg.SessionTTL)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var failed error // the last renewal's error, nil when it succeeded
	for {
		l.mu.Lock()
		until := l.until
		l.mu.Unlock()
		lapsed := time.NewTimer(time.Until(until))
		select {
		case <-ctx.Done():
			lapsed.Stop()
			return
		case <-lapsed.C:
			lapse(fmt.Errorf("no renewal of session %s succeeded within %s, Consul may have ended it (last renewal: %v)", id, leaseFor(l.cfg.SessionTTL), failed))
			return
		case <-tick.C:
			lapsed.Stop()
		}
		deadline := time.Now().Add(every)
		if until.Before(deadline) {
			deadline = until
		}
		failed = l.renew(ctx, id, deadline)
		if errors.Is(failed, api.ErrSessionExpired) {
			lapse(failed)
			return
		}
		if failed != nil && ctx.Err() == nil {
			l.log.Debug("session renewal failed; retrying", "err", failed, "lease_left", time.Until(until))
		}
	}
}

// renew renews session id, giving up at deadline, and extends the lease
// from when the renewal was sent. A session Consul no longer knows is
// api.ErrSessionExpired.
func (l *ConsulLeader) renew(ctx context.Context, id string, deadline time.Time) error {
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	sent := time.Now()
	se, _, err := l.api.Session().Renew(id, (&api.WriteOptions{}).WithContext(rctx))
	if err != nil {
		return fmt.Errorf("renew session %s: %w", id, err)
	}
	if se == nil {
		return fmt.Errorf("renew session %s: %w", id, api.ErrSessionExpired)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// A lease that ran out stays out: the round is ending.
	if time.Now().Before(l.until) {
		l.until = sent.Add(leaseFor(l.cfg.SessionTTL))
	}
	return nil
}

// readLock reads the lock's key, waiting on index (kvstore's rules for
// blocking reads), bounded.
func (l *ConsulLeader) readLock(ctx context.Context, index *kvstore.BlockingIndex) (*api.KVPair, error) {
	rctx, cancel := kvstore.BlockingContext(ctx, index.Wait())
	defer cancel()
	q := (&api.QueryOptions{WaitIndex: index.Next(), WaitTime: index.Wait(), RequireConsistent: true}).WithContext(rctx)
	p, meta, err := l.api.KV().Get(l.cfg.Key, q)
	if err != nil {
		index.Failed()
		return nil, fmt.Errorf("read the lock %s: %w", l.cfg.Key, err)
	}
	index.Answered(meta.LastIndex)
	return p, nil
}

// lockEntry is the lock's key as session id holds it: Consul's own lock's
// flags, so that instances using it (before this one) and this one share
// the lock.
func (l *ConsulLeader) lockEntry(id string) *api.KVPair {
	return &api.KVPair{Key: l.cfg.Key, Value: []byte(l.cfg.Advertise), Flags: api.LockFlagValue, Session: id}
}

// acquire takes the lock with session id, waiting while another session
// holds it, until ctx ends.
func (l *ConsulLeader) acquire(ctx context.Context, id string) error {
	var index kvstore.BlockingIndex
	for {
		p, err := l.readLock(ctx, &index)
		if err != nil {
			return err
		}
		if p != nil && p.Flags != api.LockFlagValue {
			return fmt.Errorf("lock %s: %w", l.cfg.Key, api.ErrLockConflict)
		}
		if p != nil && p.Session == id {
			return nil // an acquire answered too late to be heard
		}
		if p != nil && p.Session != "" {
			continue // held: wait for a change
		}
		wctx, cancel := kvstore.WriteContext(ctx, l.cfg.SessionTTL)
		ok, _, err := l.api.KV().Acquire(l.lockEntry(id), (&api.WriteOptions{}).WithContext(wctx))
		cancel()
		if err != nil {
			return fmt.Errorf("acquire the lock %s: %w", l.cfg.Key, err)
		}
		if ok {
			return nil
		}
		// Refused: taken meanwhile, or free under the lock delay of the
		// session that held it; in both, read again at once after the
		// delay (that of this instance's own sessions).
		index = kvstore.BlockingIndex{}
		backoff.Sleep(ctx, l.cfg.LockDelay)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// watch follows the lock while session id holds it, until ctx ends or
// the lock is lost: released, deleted or taken by another session, or
// read in vain monitorRetries times in a row.
func (l *ConsulLeader) watch(ctx context.Context, id string) error {
	var index kvstore.BlockingIndex
	failed := 0
	for ctx.Err() == nil {
		p, err := l.readLock(ctx, &index)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			failed++
			if failed == monitorRetries {
				return err
			}
			backoff.Sleep(ctx, renewEvery(l.cfg.SessionTTL))
		case p == nil || p.Session != id:
			return fmt.Errorf("%w by session %s", errNotHeld, id)
		default:
			failed = 0
		}
	}
	return ctx.Err()
}

// endSession releases the lock (when the round held it) and destroys
// session id, so that another instance takes over at once, with no lock
// delay, within kvstore.WriteWait (or the session's TTL, when shorter).
// A leader whose ctx ended does so all the same: that is how it hands
// over; otherwise it is given up when ctx ends (the session's TTL ends
// it anyway).
func (l *ConsulLeader) endSession(ctx context.Context, id string, held bool) {
	if held && ctx.Err() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	wctx, cancel := kvstore.WriteContext(ctx, l.cfg.SessionTTL)
	defer cancel()
	w := (&api.WriteOptions{}).WithContext(wctx)
	if held {
		if _, _, err := l.api.KV().Release(l.lockEntry(id), w); err != nil {
			l.log.Warn("release of the lock failed; another instance takes it once Consul ends the session", "err", err)
		}
	}
	if _, err := l.api.Session().Destroy(id, w); err != nil && wctx.Err() == nil {
		l.log.Debug("destroy the election's session", "session", id, "err", err)
	}
}
