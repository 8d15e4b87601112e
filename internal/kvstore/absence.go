package kvstore

import (
	"context"
	"log/slog"
	"sync"
)

// Getter reads one key: ok is false when it is absent (Consul answers
// 404).
type Getter interface {
	Get(ctx context.Context, key string) (p Pair, ok bool, err error)
}

// Absence confirms that a key missing from a listing is gone before
// anything is removed or freed for its absence. Consul leaves out of a
// listing, in silence, the keys the token may not read (see
// ErrPermissionDenied): an agent whose token lost read rights on a prefix
// (a policy edited, a token replaced by a narrower one) lists it empty,
// and would take everything under it for deleted. Only a direct read
// answering that the key is absent proves it gone; a refusal, or any
// other error, proves nothing, and is warned of once per key while it
// lasts. The direct read is made only for what is about to go, which is
// rare.
//
// The zero value is ready for use, by several goroutines at once.
type Absence struct {
	mu sync.Mutex // guards warned
	// warned are the keys whose read failed and was warned of, until one
	// of theirs succeeds.
	warned map[string]bool
}

// Gone reports whether key, missing from a listing, is absent, by a
// direct read through kv. A key present (written since the listing, or
// left out of it) is not gone, nor is one whose read fails: what was to
// be removed for its absence stays, and the failure is warned of through
// log (nil: not logged) once, until a read of the key succeeds.
func (a *Absence) Gone(ctx context.Context, kv Getter, log *slog.Logger, key string) bool {
	present, read := a.read(ctx, kv, log, key)
	return read && !present
}

// Readable reports whether key, missing from a listing, can be read
// directly through kv, present or not: its absence from the listing is
// then not the token's read rights, and what the listing said of it (no
// document, or one not listed as usable) stands. A read that fails is
// warned of as Gone warns.
func (a *Absence) Readable(ctx context.Context, kv Getter, log *slog.Logger, key string) bool {
	_, read := a.read(ctx, kv, log, key)
	return read
}

// read reads key through kv: whether it is present, and whether the read
// succeeded, warning once of a failure.
func (a *Absence) read(ctx context.Context, kv Getter, log *slog.Logger, key string) (present, read bool) {
	_, ok, err := kv.Get(ctx, key)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		delete(a.warned, key)
		return ok, true
	}
	if a.warned[key] || ctx.Err() != nil || log == nil {
		return false, false
	}
	if a.warned == nil {
		a.warned = map[string]bool{}
	}
	a.warned[key] = true
	log.Warn("a key missing from a Consul listing cannot be read to confirm it is gone; nothing removed for its absence: the token may lack read rights on it (Consul leaves the keys a token may not read out of listings, without error)",
		"key", key, "err", err)
	return false, false
}
