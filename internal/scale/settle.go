package scale

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Settling a scale-down. Swarm's orchestrator marks each task a scale-down
// removes from a copy of the task it read before; a task that changed in
// between (typically a replacement task starting) fails that write on its
// version, is logged by dockerd as "failed to update task to REMOVE" and
// nothing retries it: the task runs on above the count, holding its
// address, until the service is next updated (swarmkit's
// manager/orchestrator/replicated/services.go, setTasksDesiredState; seen
// on Docker 29). So after each scale-down it applies, the controller checks
// that swarm wants no more tasks running than the count, and writes the
// count again when it does, which makes swarm reconcile the service anew.

// Task is a task of a service that swarm wants running.
type Task struct {
	ID    string
	Slot  int
	State string // its observed state: "running", "starting", ...
}

func (t Task) String() string { return fmt.Sprintf("slot %d task %s %s", t.Slot, t.ID, t.State) }

// settleTries is how many times a scale-down is checked, each SettleAfter
// after the write before it.
const settleTries = 3

// settleJob is a scale-down to check.
type settleJob struct {
	id, name string
	to       int
}

// queueSettle asks for a check of the scale-down of id to replicas. It
// never blocks a decision: with the queue full, the check is skipped.
func (c *Controller) queueSettle(j settleJob) {
	select {
	case c.settleC <- j:
	default:
		c.log.Warn("scale-down not checked: too many checks queued", "service", j.name, "replicas", j.to)
	}
}

// settleLoop checks the queued scale-downs until ctx ends, each service's
// in a goroutine of its own, one at a time: a scale-down queued while its
// service's check is under way replaces that check's target (the latest
// wins), so that a burst of scale-downs starts one check, not one each.
func (c *Controller) settleLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	// newer holds, by service ID, the latest scale-down queued for the
	// service's check under way and not yet taken by it (buffer 1); a
	// service has an entry while its check is under way.
	newer := map[string]chan settleJob{}
	ended := make(chan string)
	start := func(j settleJob, next chan settleJob) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.settle(ctx, j, next)
			select {
			case ended <- j.id:
			case <-ctx.Done():
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-c.settleC:
			if next, ok := newer[j.id]; ok {
				select {
				case <-next: // replaced: the newer write is the count now
				default:
				}
				next <- j
				continue
			}
			next := make(chan settleJob, 1)
			newer[j.id] = next
			c.settling.Store(int64(len(newer)))
			start(j, next)
		case id := <-ended:
			select {
			case j := <-newer[id]:
				start(j, newer[id]) // queued as the check ended
			default:
				delete(newer, id)
				c.settling.Store(int64(len(newer)))
			}
		}
	}
}

// settle checks one scale-down settleTries times at most, writing the
// count again while swarm wants more tasks running than it. A scale-down
// of the service received from newer meanwhile replaces j, with tries of
// its own, each SettleAfter after its write. A nil newer brings none.
func (c *Controller) settle(ctx context.Context, j settleJob, newer <-chan settleJob) {
	for try := 1; try <= settleTries; try++ {
		select {
		case <-ctx.Done():
			return
		case j = <-newer:
			try = 0
			continue
		case <-time.After(c.cfg.SettleAfter):
		}
		done, err := c.settleOnce(ctx, j, try)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("scale-down not checked", "service", j.name, "replicas", j.to, "err", err)
			}
			return
		}
		if done {
			return
		}
	}
	c.log.Warn("swarm still wants more tasks running than the scale-down left, after writing the count again; leaving it to the next update",
		"service", j.name, "replicas", j.to, "tries", settleTries)
}

// settleOnce checks the scale-down once under the service's decision lock,
// so that no decision runs in between: done is true when there is nothing
// more to check (settled, changed since, or no longer ours to write).
func (c *Controller) settleOnce(ctx context.Context, j settleJob, try int) (done bool, err error) {
	if _, err := c.leading(ctx); err != nil {
		return true, nil // the new leader's own scale-downs are its to check
	}
	c.mu.Lock()
	st := c.states[j.id]
	c.mu.Unlock()
	if st == nil {
		return true, nil // forgotten: the service is gone
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := c.leadingNow(); !ok {
		return true, nil // lost while waiting for a decision to end
	}
	svc, err := c.swarm.Service(ctx, j.id)
	if errors.Is(err, ErrNotFound) {
		return true, nil
	}
	if err != nil {
		c.metrics.errors.WithLabelValues("docker_inspect").Inc()
		return true, fmt.Errorf("inspect service %s: %w", j.name, err)
	}
	if svc.Replicas != j.to {
		return true, nil // scaled again since: that write is checked, or not ours
	}
	wanted, err := c.swarm.Wanted(ctx, j.id)
	if err != nil {
		c.metrics.errors.WithLabelValues("docker_tasks").Inc()
		return true, fmt.Errorf("list tasks of service %s: %w", j.name, err)
	}
	if len(wanted) <= j.to {
		return true, nil
	}
	// Which tasks swarm lost cannot be told: the warning names them all.
	names := make([]string, len(wanted))
	for i, t := range wanted {
		names[i] = t.String()
	}
	c.log.Warn("swarm still wants more tasks running than a scale-down left (it lost the removal of some); writing the count again",
		"service", j.name, "replicas", j.to, "wanted", len(wanted), "tasks", strings.Join(names, ", "), "try", try)
	c.metrics.resettles.Inc()
	if err := c.swarm.SetReplicas(ctx, svc.ID, svc.Version, j.to); err != nil {
		if errors.Is(err, ErrVersionConflict) {
			return true, nil // someone updated it: swarm reconciles it anyway
		}
		c.metrics.errors.WithLabelValues("docker_update").Inc()
		return true, fmt.Errorf("write %d replicas of service %s again: %w", j.to, j.name, err)
	}
	return false, nil
}
