package dockerhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/taskmetrics"
)

// Samples implements taskmetrics.Source: one stats sample of every running
// Swarm task container, read without holding a stream open. When some
// containers' stats could not be read, it returns the others' samples
// with a *taskmetrics.NotSampledError naming them (taskmetrics.Run judges
// whether the round may be published without them).
func (s *Source) Samples(ctx context.Context) ([]taskmetrics.Sample, error) {
	// Bounded as the inventory's calls: a dockerd that never answered held
	// the round, and so the node's task metrics, for good.
	lctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	list, err := s.api.ContainerList(lctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", labelSwarmService))})
	if err != nil {
		return nil, fmt.Errorf("list task containers: %w", err)
	}
	out := make([]taskmetrics.Sample, 0, len(list))
	var failed []taskmetrics.Unmeasured
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, c := range list {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			smp, err := s.sample(ctx, c.ID)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, errGone):
				// Gone since the list: nothing to measure.
			case err != nil:
				// Not gone, only not measured: left out, the task would
				// be missing from its service's count, and next round
				// taken for new, with no CPU.
				failed = append(failed, taskmetrics.Unmeasured{ContainerID: c.ID, Service: c.Labels[labelSwarmService], Err: err})
			default:
				smp.Service = c.Labels[labelSwarmService]
				out = append(out, smp)
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		// By ID, not in the order the reads ended: the same named first
		// each round.
		slices.SortFunc(failed, func(a, b taskmetrics.Unmeasured) int { return strings.Compare(a.ContainerID, b.ContainerID) })
		return out, &taskmetrics.NotSampledError{Unmeasured: failed, Listed: len(list)}
	}
	return out, nil
}

// errGone is a container's sample that cannot be: it was removed or
// stopped since the listing.
var errGone = errors.New("gone since the listing")

const labelSwarmService = "com.docker.swarm.service.name"

// statsWait is how long one container's stats read may take: a one-shot
// read takes milliseconds, and the default period is 10 s.
const statsWait = 5 * time.Second

func (s *Source) sample(ctx context.Context, id string) (taskmetrics.Sample, error) {
	// Bounded, answer and body: dockerd answers a container whose shim
	// or cgroup hangs never, and Samples, and so every task's report,
	// would wait with it.
	ctx, cancel := context.WithTimeout(ctx, s.statsWait)
	defer cancel()
	r, err := s.api.ContainerStatsOneShot(ctx, id)
	if client.IsErrNotFound(err) {
		return taskmetrics.Sample{}, fmt.Errorf("stats of %s: %w", id, errGone)
	}
	if err != nil {
		return taskmetrics.Sample{}, fmt.Errorf("stats of %s: %w", id, err)
	}
	defer r.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
		return taskmetrics.Sample{}, fmt.Errorf("decode stats of %s: %w", id, err)
	}
	if st.Read.IsZero() {
		// dockerd answers for a container that stopped since the listing
		// with empty stats: no time, no CPU, no memory.
		return taskmetrics.Sample{}, fmt.Errorf("stats of %s: not running: %w", id, errGone)
	}
	mem := st.MemoryStats.Usage
	// The working set, as kubelet and docker stats count it: less the
	// inactive file cache. cgroup v1 reports the hierarchy's as
	// total_inactive_file (its usage is the hierarchy's) beside the
	// cgroup's own inactive_file; cgroup v2 reports only inactive_file.
	for _, k := range []string{"total_inactive_file", "inactive_file"} {
		if v, ok := st.MemoryStats.Stats[k]; ok && v <= mem {
			mem -= v
			break
		}
	}
	return taskmetrics.Sample{
		ContainerID: id, At: st.Read,
		CPUTotal: time.Duration(st.CPUStats.CPUUsage.TotalUsage),
		Memory:   mem,
	}, nil
}
