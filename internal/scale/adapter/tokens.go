package adapter

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/scale"
)

// KVTokens are bearer tokens kept in one Consul KV key, one a line (the
// format of --token-file); it implements scale.TokenSet. Run follows the
// key with blocking queries, so that a token added or revoked counts within
// moments. While Consul is unreachable the last tokens read stay valid; a
// missing or empty key holds no token.
type KVTokens struct {
	api *api.Client
	key string
	log *slog.Logger

	mu     sync.Mutex // guards tokens
	tokens *scale.Tokens
}

// NewKVTokens returns the tokens of key; none until Run has read it.
func NewKVTokens(c *api.Client, key string, log *slog.Logger) *KVTokens {
	return &KVTokens{api: c, key: key, log: log.With("component", "scale_tokens", "key", key)}
}

// Valid implements scale.TokenSet.
func (k *KVTokens) Valid(token string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.tokens.Valid(token)
}

// Load reads the key once.
func (k *KVTokens) Load(ctx context.Context) error {
	_, err := k.load(ctx, 0)
	return err
}

// load reads the key, waiting for a change after index when index > 0, and
// returns the new index.
func (k *KVTokens) load(ctx context.Context, index uint64) (uint64, error) {
	ctx, cancel := kvstore.BlockingContext(ctx, kvstore.BlockingWait)
	defer cancel()
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: kvstore.BlockingWait}).WithContext(ctx)
	p, meta, err := k.api.KV().Get(k.key, q)
	if err != nil {
		return index, err
	}
	var t *scale.Tokens
	if p != nil && strings.TrimSpace(string(p.Value)) != "" {
		t, err = scale.ParseTokens(strings.NewReader(string(p.Value)))
		if err != nil {
			k.log.Warn("no token in the Consul key", "err", err)
		}
	}
	k.mu.Lock()
	changed := (k.tokens == nil) != (t == nil) || index == 0 || meta.LastIndex != index
	k.tokens = t
	k.mu.Unlock()
	if changed {
		k.log.Info("bearer tokens read from Consul", "present", t != nil)
	}
	return meta.LastIndex, nil
}

// Run follows the key until ctx ends.
func (k *KVTokens) Run(ctx context.Context) error {
	// Consul's rules, a failed read included: after one, read at once, as
	// Consul may have restarted with other tokens, and a wait on an index
	// it has not reached blocks until the wait time, a revoked token valid
	// all along. That wait is kvstore.BlockingWait, a minute, for a
	// restart between two reads, which fails none.
	var index kvstore.BlockingIndex
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	for ctx.Err() == nil {
		next, err := k.load(ctx, index.Next())
		if err != nil {
			index.Failed()
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil
			}
			delay := delays.Next()
			k.log.Warn("read tokens from Consul failed; the last ones read stay valid", "err", err, "retry_in", delay)
			backoff.Sleep(ctx, delay)
			continue
		}
		delays.Reset()
		index.Answered(next)
	}
	return nil
}
