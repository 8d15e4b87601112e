package adapter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
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
// Alertmanager's re-sends of them; it implements scale.AlertLog. Run
// deletes the entries older than the retention, a part of the log at a
// time (pruneParts, one each pruneEvery), so that no request reads the
// whole log and none waits on a webhook's write; an entry it cannot read is
// kept and named in a warning (the prefix may hold what another writer put
// there).
type KVAlertLog struct {
	api       *api.Client
	prefix    string
	retention time.Duration
	log       *slog.Logger
	// every is the time between two prunes (pruneEvery).
	every time.Duration
}

// pruneParts is how many parts the log is pruned in: the entries whose
// keys' hashes start with one byte (two hex digits) are one part. In
// dry-run a notification may add 1,000 entries, kept for the retention;
// a prune lists a 256th of them.
const pruneParts = 256

// pruneEvery is the time between two prunes: the whole log is gone
// through in about an hour (256 × 15 s), whether firings come or not. A
// prune is a listing of a 256th of the log; at rest, one small request.
const pruneEvery = 15 * time.Second

// pruneTimeout bounds one prune, within pruneEvery.
const pruneTimeout = 10 * time.Second

// NewKVAlertLog returns a log under prefix (DefaultAlertPrefix when empty)
// keeping firings for retention (DefaultAlertRetention when ≤ 0).
func NewKVAlertLog(c *api.Client, prefix string, retention time.Duration, log *slog.Logger) *KVAlertLog {
	if prefix == "" {
		prefix = DefaultAlertPrefix
	}
	if retention <= 0 {
		retention = DefaultAlertRetention
	}
	return &KVAlertLog{api: c, prefix: prefix, retention: retention, log: log.With("component", "alert_log"), every: pruneEvery}
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
	return nil
}

// Run prunes the log until ctx ends: the next part each interval, so that
// the time an entry outlives the retention depends on no firing coming.
// What it could not do it logs; the part comes round again.
func (l *KVAlertLog) Run(ctx context.Context) error {
	t := time.NewTicker(l.every)
	defer t.Stop()
	for part := 0; ; part = (part + 1) % pruneParts {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		l.prunePart(ctx, part)
	}
}

// prunePart prunes one part of the log, within pruneTimeout, and logs
// what it could not do.
func (l *KVAlertLog) prunePart(ctx context.Context, part int) {
	pctx, cancel := context.WithTimeout(ctx, pruneTimeout)
	defer cancel()
	if err := l.prune(pctx, part, time.Now()); err != nil && ctx.Err() == nil {
		l.log.Warn("old alert firings not pruned", "prefix", l.prefix, "part", fmt.Sprintf("%02x", part), "err", err)
	}
}

// prune deletes the entries of one part of the log written a retention
// before now, or stamped too far after it (see pruneSet).
func (l *KVAlertLog) prune(ctx context.Context, part int, now time.Time) error {
	prefix := fmt.Sprintf("%s/%02x", l.prefix, part)
	pairs, _, err := l.api.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	expired, ahead, unreadable := pruneSet(pairs, now.Add(-l.retention), now)
	if len(ahead) > 0 {
		l.log.Warn("alert firings stamped more than the allowed clock skew ahead of this clock: deleted, so that Alertmanager's re-sends of them scale again",
			"prefix", l.prefix, "skew", maxAhead, "keys", someOf(ahead, maxNamed))
	}
	expired = append(expired, ahead...)
	w := (&api.WriteOptions{}).WithContext(ctx)
	for _, k := range expired {
		if _, err := l.api.KV().Delete(k, w); err != nil {
			return fmt.Errorf("delete %s: %w", k, err)
		}
	}
	if len(unreadable) > 0 {
		return fmt.Errorf("kept %d entries that are no alert firing: %s", len(unreadable), someOf(unreadable, maxNamed))
	}
	return nil
}

// maxNamed bounds the keys a warning names: the prefix may hold any
// number of others' values, and the warning comes every round.
const maxNamed = 10

// someOf joins the first n of keys, and counts the others.
func someOf(keys []string, n int) string {
	if len(keys) <= n {
		return strings.Join(keys, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(keys[:n], ", "), len(keys)-n)
}

// maxAhead is how far after this clock an entry may be stamped and be
// kept: another control's clock (a leader before) may be ahead of it.
const maxAhead = 24 * time.Hour

// pruneSet splits the entries under the prefix into those written before
// before, to delete; those stamped more than maxAhead after now, to delete
// with a warning, since they would never be past the retention and their
// firings would count as seen for good; and those that are no alert entry,
// to keep: deleting what it cannot read would lose another writer's data.
func pruneSet(pairs api.KVPairs, before, now time.Time) (expired, ahead, unreadable []string) {
	for _, p := range pairs {
		var e alertEntry
		if err := json.Unmarshal(p.Value, &e); err != nil || e.Time.IsZero() {
			unreadable = append(unreadable, p.Key)
			continue
		}
		switch {
		case !e.Time.After(before):
			expired = append(expired, p.Key)
		case e.Time.Sub(now) > maxAhead:
			ahead = append(ahead, p.Key)
		}
	}
	return expired, ahead, unreadable
}
