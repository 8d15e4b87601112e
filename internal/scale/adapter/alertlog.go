package adapter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// DefaultAlertPrefix is where KVAlertLog keeps the Alertmanager firings
// that scaled: <prefix>/<sha256 of the key>.
const DefaultAlertPrefix = "underlay/scale/alerts"

// DefaultAlertRetention is how long a firing is kept.
const DefaultAlertRetention = 7 * 24 * time.Hour

// KVAlertLog keeps the Alertmanager firings that scaled in Consul KV, so
// that a restarted control, or a new leader, does not scale again on
// Alertmanager's re-sends of them; it implements scale.AlertLog. Entries
// older than the retention are deleted, at most once an hour, as new ones
// are written.
type KVAlertLog struct {
	api       *api.Client
	prefix    string
	retention time.Duration

	mu     sync.Mutex // guards pruned
	pruned time.Time
}

// NewKVAlertLog returns a log under prefix (DefaultAlertPrefix when empty)
// keeping firings for retention (DefaultAlertRetention when ≤ 0).
func NewKVAlertLog(c *api.Client, prefix string, retention time.Duration) *KVAlertLog {
	if prefix == "" {
		prefix = DefaultAlertPrefix
	}
	if retention <= 0 {
		retention = DefaultAlertRetention
	}
	return &KVAlertLog{api: c, prefix: prefix, retention: retention}
}

// alertEntry is the value of one key.
type alertEntry struct {
	Key     string    `json:"key"`
	Service string    `json:"service"`
	Time    time.Time `json:"time"`
}

// Key is the KV key of a firing.
func (l *KVAlertLog) Key(key string) string {
	sum := sha256.Sum256([]byte(key))
	return l.prefix + "/" + hex.EncodeToString(sum[:16])
}

// Seen implements scale.AlertLog.
func (l *KVAlertLog) Seen(ctx context.Context, key string) (bool, error) {
	p, _, err := l.api.KV().Get(l.Key(key), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("get %s: %w", l.Key(key), err)
	}
	return p != nil, nil
}

// Mark implements scale.AlertLog.
func (l *KVAlertLog) Mark(ctx context.Context, key, service string, at time.Time) error {
	b, _ := json.Marshal(alertEntry{Key: key, Service: service, Time: at.UTC()})
	w := (&api.WriteOptions{}).WithContext(ctx)
	if _, err := l.api.KV().Put(&api.KVPair{Key: l.Key(key), Value: b}, w); err != nil {
		return fmt.Errorf("put %s: %w", l.Key(key), err)
	}
	l.mu.Lock()
	due := at.Sub(l.pruned) > time.Hour
	if due {
		l.pruned = at
	}
	l.mu.Unlock()
	if due {
		return l.prune(ctx, at.Add(-l.retention))
	}
	return nil
}

// prune deletes the entries written before before.
func (l *KVAlertLog) prune(ctx context.Context, before time.Time) error {
	pairs, _, err := l.api.KV().List(l.prefix+"/", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list %s: %w", l.prefix, err)
	}
	w := (&api.WriteOptions{}).WithContext(ctx)
	for _, p := range pairs {
		var e alertEntry
		if json.Unmarshal(p.Value, &e) == nil && e.Time.After(before) {
			continue
		}
		if _, err := l.api.KV().Delete(p.Key, w); err != nil {
			return fmt.Errorf("delete %s: %w", p.Key, err)
		}
	}
	return nil
}
