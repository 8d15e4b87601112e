package taskmetrics

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/underlay/underlay/internal/termtext"
)

// LeaveOutAfter is how many rounds in a row a task container's stats
// read must fail before Run leaves the container out of the report and
// publishes the rest. A failure of fewer rounds fails the round: left out
// at once, the task would be missing from its service's count, and, next
// round, counted with no CPU. With the default period (10 s), the report
// a stuck container holds back stays well within the autoscaler's minute.
const LeaveOutAfter = 3

// Unmeasured is a task container whose stats could not be read, though
// it was not gone since the listing.
type Unmeasured struct {
	ContainerID string
	Service     string
	Err         error
}

// NotSampledError is what a Source returns, with the samples it did
// read, when some task containers' stats could not be read.
type NotSampledError struct {
	Unmeasured []Unmeasured
	// Listed is how many task containers the round listed.
	Listed int
}

func (e *NotSampledError) Error() string {
	// One named: a daemon that fails one fails many alike.
	return fmt.Sprintf("%d of %d task containers not sampled (%v)", len(e.Unmeasured), e.Listed, e.first())
}

// Unwrap gives the first container's failure.
func (e *NotSampledError) Unwrap() error { return e.first() }

func (e *NotSampledError) first() error {
	if len(e.Unmeasured) == 0 {
		return nil
	}
	return e.Unmeasured[0].Err
}

// unmeasured follows the task containers whose stats reads fail, so that
// one that fails round after round is left out of the report instead of
// holding the whole report back for good.
type unmeasured struct {
	// rounds counts each failing container's failed rounds in a row, by
	// container ID; one measured or gone is forgotten.
	rounds map[string]int
	// leftOut holds the containers left out of the last report published,
	// by ID.
	leftOut map[string]Unmeasured
}

// round judges a round of samples (cur, err: Source.Samples's answer).
// It returns the samples to count, or the error that fails the round: a
// failure other than containers' (NotSampledError), a container that has
// failed fewer than LeaveOutAfter rounds in a row, or no container
// measured at all (a report of no service would say the node runs none).
// A container measured again after it was left out counts from the next
// round: with no previous sample, it would count with no CPU, pulling
// its service's CPU per task down.
func (u *unmeasured) round(log *slog.Logger, cur []Sample, err error) ([]Sample, error) {
	var ns *NotSampledError
	if err != nil && !errors.As(err, &ns) {
		return nil, err // no container read: their counts stand
	}
	var failed []Unmeasured
	if ns != nil {
		failed = ns.Unmeasured
	}
	rounds := make(map[string]int, len(failed))
	recent := 0
	for _, f := range failed {
		rounds[f.ContainerID] = u.rounds[f.ContainerID] + 1
		if rounds[f.ContainerID] < LeaveOutAfter {
			recent++
		}
	}
	u.rounds = rounds
	if recent > 0 || len(failed) > 0 && len(cur) == 0 {
		return nil, err
	}
	leftOut := make(map[string]Unmeasured, len(failed))
	for _, f := range failed {
		leftOut[f.ContainerID] = f
		if _, was := u.leftOut[f.ContainerID]; !was {
			log.Warn("task container left out of the node's task metrics: its stats read failed round after round; the node's other tasks are published",
				"container", shortID(f.ContainerID), "service", termtext.Shorten(f.Service, maxNameLog), "failed_rounds", rounds[f.ContainerID], "err", f.Err)
		}
	}
	measured := make(map[string]bool, len(cur))
	for _, s := range cur {
		measured[s.ContainerID] = true
	}
	for _, id := range slices.Sorted(maps.Keys(u.leftOut)) {
		if _, still := leftOut[id]; !still {
			log.Info("task container no longer left out of the node's task metrics", "container", shortID(id),
				"service", termtext.Shorten(u.leftOut[id].Service, maxNameLog), "measured", measured[id])
		}
	}
	was := u.leftOut
	u.leftOut = leftOut
	return slices.DeleteFunc(slices.Clone(cur), func(s Sample) bool { _, ok := was[s.ContainerID]; return ok }), nil
}

// shortID is a container ID as docker ps shows it.
func shortID(id string) string {
	return id[:min(len(id), 12)]
}
