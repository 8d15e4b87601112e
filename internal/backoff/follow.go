package backoff

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Stream is what Follow needs of an event subscription.
type Stream[E any] struct {
	// Subscribe opens the stream: its events, and the error that ends it.
	Subscribe func(ctx context.Context) (<-chan E, <-chan error)
	// Opened runs after each subscription: a resync there misses nothing,
	// since it lists after subscribing.
	Opened func()
	// Handle takes one event.
	Handle func(ctx context.Context, ev E)
	// Lost runs each time the stream ends before ctx.
	Lost func()
}

// Follow reads s until ctx ends, reopening it with a delay that doubles
// from 500ms to 30s (and starts over once a stream lasted a minute).
func Follow[E any](ctx context.Context, log *slog.Logger, what string, s Stream[E]) {
	delays := Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		events, errs := s.Subscribe(sctx)
		s.Opened()
		opened := time.Now()
		err := consume(sctx, events, errs, s.Handle)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.Lost()
		if time.Since(opened) > time.Minute {
			delays.Reset()
		}
		delay := delays.Next()
		log.Warn(what+" ended; reconnecting", "err", err, "retry_in", delay)
		Sleep(ctx, delay)
	}
}

func consume[E any](ctx context.Context, events <-chan E, errs <-chan error, handle func(context.Context, E)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case ev, ok := <-events:
			if !ok {
				return errors.New("event stream closed")
			}
			handle(ctx, ev)
		}
	}
}
