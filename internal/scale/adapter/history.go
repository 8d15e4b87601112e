package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/shellword"
)

// DefaultHistoryPrefix is where decision records live in Consul KV:
// <prefix>/<service>/<time>. Everything under underlay/scale/ is underlay's.
const DefaultHistoryPrefix = "underlay/scale/history"

// DefaultHistoryLimit is how many records are kept per service.
const DefaultHistoryLimit = 100

// historyTime names records so that keys sort in time order.
const historyTime = "20060102T150405.000000000Z"

// KVHistory keeps decision records in Consul KV, the newest Limit per
// service; older ones are deleted as new ones arrive. The latest applied
// scale-up and scale-down of each service are also kept apart, under
// <prefix>/<service>/last-up and last-down, so that trimming never loses
// the times cooldowns are measured from.
type KVHistory struct {
	api    *api.Client
	prefix string
	limit  int
}

// NewKVHistory returns a history under prefix (DefaultHistoryPrefix when
// empty) that keeps limit records per service (DefaultHistoryLimit when ≤ 0).
func NewKVHistory(c *api.Client, prefix string, limit int) *KVHistory {
	if prefix == "" {
		prefix = DefaultHistoryPrefix
	}
	if limit <= 0 {
		limit = DefaultHistoryLimit
	}
	return &KVHistory{api: c, prefix: strings.TrimSuffix(prefix, "/"), limit: limit}
}

// ServicePrefix is the KV prefix of one service's records, ending in "/".
// The name is one path segment: "/" is escaped, and so are the dots of "."
// and ".." (no swarm service's name), which Consul's HTTP mux would clean
// away, redirecting a list to the parent prefix.
func (h *KVHistory) ServicePrefix(service string) string {
	seg := url.PathEscape(service)
	if seg == "." || seg == ".." {
		seg = strings.ReplaceAll(seg, ".", "%2E")
	}
	return h.prefix + "/" + seg + "/"
}

// Key is the KV key of r: the record's time, then its sequence number so
// that two records of one instant stay distinct.
func (h *KVHistory) Key(r scale.Record) string {
	return fmt.Sprintf("%s%s-%08d", h.ServicePrefix(r.Service), r.Time.UTC().Format(historyTime), r.Seq)
}

// Append implements scale.History, then trims the service's oldest records.
func (h *KVHistory) Append(ctx context.Context, r scale.Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	w := (&api.WriteOptions{}).WithContext(ctx)
	key := h.Key(r)
	if _, err := h.api.KV().Put(&api.KVPair{Key: key, Value: b}, w); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if !r.Refused && !r.DryRun && r.From != r.To {
		if err := h.putLast(ctx, r, b); err != nil {
			return err
		}
	}
	return h.trim(ctx, r.Service)
}

// lastTries bounds the writes of a last-* key that other writers beat.
const lastTries = 5

// putLast stores r, encoded as b, as its service's last applied scale in
// its direction, unless a later one is kept there: records arrive out of
// order (they are appended after the decision lock is let go, and an old
// leader's may land after the new leader's), and the time cooldowns run
// from must never go back. It writes with check-and-set, so that a record
// written between its read and its write is judged again. A value that is
// not a readable record of that scale is replaced: it tells no time.
func (h *KVHistory) putLast(ctx context.Context, r scale.Record, b []byte) error {
	key := h.ServicePrefix(r.Service) + lastKey + string(r.Direction)
	q := (&api.QueryOptions{}).WithContext(ctx)
	w := (&api.WriteOptions{}).WithContext(ctx)
	for range lastTries {
		p, _, err := h.api.KV().Get(key, q)
		if err != nil {
			return fmt.Errorf("get %s: %w", key, err)
		}
		var index uint64 // 0: only if there is still none
		if p != nil {
			if at, err := decodeLast(r.Service, r.Direction, p.Value); err == nil && !at.Before(r.Time) {
				return nil
			}
			index = p.ModifyIndex
		}
		ok, _, err := h.api.KV().CAS(&api.KVPair{Key: key, Value: b, ModifyIndex: index}, w)
		if err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("put %s: it was written by someone else before each of %d tries", key, lastTries)
}

// lastKey starts the names of the latest applied scale per direction.
const lastKey = "last-"

// isRecord tells record keys from the last-* keys.
func isRecord(key string) bool {
	return !strings.HasPrefix(key[strings.LastIndex(key, "/")+1:], lastKey)
}

func (h *KVHistory) trim(ctx context.Context, service string) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	keys, _, err := h.api.KV().Keys(h.ServicePrefix(service), "", q)
	if err != nil {
		return fmt.Errorf("list history of %s: %w", service, err)
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { return !isRecord(k) })
	if len(keys) <= h.limit {
		return nil
	}
	sort.Strings(keys)
	w := (&api.WriteOptions{}).WithContext(ctx)
	for _, k := range keys[:len(keys)-h.limit] {
		if _, err := h.api.KV().Delete(k, w); err != nil {
			return fmt.Errorf("trim history: delete %s: %w", k, err)
		}
	}
	return nil
}

// List returns a service's records, oldest first, and those it could not
// read, which never fail the rest.
func (h *KVHistory) List(ctx context.Context, service string) ([]scale.Record, []scale.BadRecord, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	pairs, _, err := h.api.KV().List(h.ServicePrefix(service), q)
	if err != nil {
		return nil, nil, fmt.Errorf("list history of %s: %w", service, err)
	}
	recs, bad := decodeRecords(service, pairs)
	return recs, bad, nil
}

// Last implements scale.History from the last-up and last-down keys.
func (h *KVHistory) Last(ctx context.Context, service string) (scale.LastScale, []scale.BadRecord, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	var last scale.LastScale
	var bad []scale.BadRecord
	for _, dir := range []scale.Direction{scale.Up, scale.Down} {
		key := h.ServicePrefix(service) + lastKey + string(dir)
		p, _, err := h.api.KV().Get(key, q)
		if err != nil {
			return scale.LastScale{}, nil, fmt.Errorf("get %s: %w", key, err)
		}
		if p == nil {
			continue
		}
		at, err := decodeLast(service, dir, p.Value)
		if err != nil {
			bad = append(bad, badRecord(key, dir, err))
			continue
		}
		if dir == scale.Up {
			last.Up = at
		} else {
			last.Down = at
		}
	}
	return last, bad, nil
}

// decodeRecords reads a service's listed keys into its records, oldest
// first, setting apart those that cannot be read.
func decodeRecords(service string, pairs api.KVPairs) ([]scale.Record, []scale.BadRecord) {
	pairs = slices.Clone(pairs)
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].Key < pairs[j].Key })
	out := make([]scale.Record, 0, len(pairs))
	var bad []scale.BadRecord
	for _, p := range pairs {
		if !isRecord(p.Key) {
			continue
		}
		r, err := decodeRecord(service, p.Value)
		if err != nil {
			bad = append(bad, badRecord(p.Key, "", err))
			continue
		}
		out = append(out, r)
	}
	return out, bad
}

// decodeLast reads the record of a service's last applied scale in
// direction dir, and returns its time.
func decodeLast(service string, dir scale.Direction, value []byte) (time.Time, error) {
	r, err := decodeRecord(service, value)
	switch {
	case err != nil:
		return time.Time{}, err
	case r.Direction != dir:
		return time.Time{}, fmt.Errorf("a record of a scale %s, not %s", r.Direction, dir)
	case r.Refused || r.DryRun || r.From == r.To:
		return time.Time{}, fmt.Errorf("a record of a decision that changed nothing (%d to %d, refused %v, dry run %v)", r.From, r.To, r.Refused, r.DryRun)
	case r.Time.IsZero():
		return time.Time{}, errors.New("a record with no time")
	}
	return r.Time, nil
}

func decodeRecord(service string, value []byte) (scale.Record, error) {
	var r scale.Record
	if err := json.Unmarshal(value, &r); err != nil {
		return scale.Record{}, fmt.Errorf("decode: %w", err)
	}
	if r.Service != service {
		return scale.Record{}, fmt.Errorf("a record of service %q, not %q", r.Service, service)
	}
	return r, nil
}

func badRecord(key string, dir scale.Direction, err error) scale.BadRecord {
	fix, why := shellword.KVRemoval(key, "")
	return scale.BadRecord{Key: key, Direction: dir, Error: err.Error() + why, Fix: fix}
}
