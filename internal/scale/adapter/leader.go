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
	// minimum, 10s, when zero).
	SessionTTL time.Duration
	// LockDelay is how long Consul refuses the lock after its holder's
	// session was invalidated (1s when zero; Consul's default is 15s). A
	// leader that stops cleanly releases the lock with no delay; after a
	// crash, Consul's client library retries a refused lock every 5s.
	LockDelay time.Duration
}

// ConsulLeader elects one leader among control instances with a Consul
// lock (a session and a KV acquire); it implements scale.Leadership. Run
// competes for the lock until its context ends, then releases it.
type ConsulLeader struct {
	cfg LeaderConfig
	api *api.Client
	log *slog.Logger

	mu      sync.Mutex // guards following fields
	leading bool
	term    uint64
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

// Leading implements scale.Leadership.
func (l *ConsulLeader) Leading() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term, l.leading
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
// ErrLeaderKeyTampered (and logged once), and no leader is named.
func (l *ConsulLeader) Leader(ctx context.Context) (string, error) {
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

// holdOnce acquires the lock, then holds it until it is lost or ctx ends.
func (l *ConsulLeader) holdOnce(ctx context.Context) (bool, error) {
	lock, err := l.api.LockOpts(&api.LockOptions{
		Key:   l.cfg.Key,
		Value: []byte(l.cfg.Advertise),
		SessionOpts: &api.SessionEntry{
			Name: sessionPrefix + l.cfg.Advertise, TTL: l.cfg.SessionTTL.String(),
			LockDelay: l.cfg.LockDelay, Behavior: api.SessionBehaviorRelease,
		},
		MonitorRetries: 3,
		LockWaitTime:   5 * time.Second,
	})
	if err != nil {
		return false, err
	}
	// stop aborts the wait for the lock when ctx ends.
	stop, waited := make(chan struct{}), make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			close(stop)
		case <-waited:
		}
	}()
	lost, err := lock.Lock(stop)
	close(waited)
	if err != nil || lost == nil {
		return false, err
	}
	l.set(true)
	l.log.Info("leadership acquired", "advertise", l.cfg.Advertise)
	select {
	case <-lost:
		l.set(false)
		l.log.Warn("leadership lost", "advertise", l.cfg.Advertise)
	case <-ctx.Done():
		l.set(false)
		l.log.Info("leadership released", "advertise", l.cfg.Advertise)
	}
	if err := lock.Unlock(); err != nil && err != api.ErrLockNotHeld {
		l.log.Debug("unlock", "err", err)
	}
	return true, nil
}
