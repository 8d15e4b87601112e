package doctor

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/underlay/underlay/internal/termtext"
)

// Status is the outcome of one check.
type Status string

// Statuses, from good to bad.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Result is one line of the doctor's report.
type Result struct {
	Node  string `json:"node"`
	Check string `json:"check"`
	// Status is OK, Warn or Fail.
	Status  Status `json:"status"`
	Message string `json:"message"`
	// Fix is the command that repairs a warning or failure; empty when OK
	// or when nothing can be run.
	Fix string `json:"fix"`
	// Omitted counts, by status, the rows of its check that this one
	// stands for (past MaxRows, see capRows): its Status is only their
	// worst. Nil on a row that stands for itself.
	Omitted *Omitted `json:"omitted,omitempty"`
}

// Counts counts rs by status: a row standing for others (Omitted) as
// those, and a status neither OK nor a warning as a failure, as readers
// of a report count it.
func Counts(rs []Result) Omitted {
	var c Omitted
	for _, r := range rs {
		c.add(r)
	}
	return c
}

// add counts r into c, as Counts does.
func (c *Omitted) add(r Result) {
	switch {
	case r.Omitted != nil:
		c.OK, c.Warn, c.Fail = c.OK+r.Omitted.OK, c.Warn+r.Omitted.Warn, c.Fail+r.Omitted.Fail
	case r.Status == OK:
		c.OK++
	case r.Status == Warn:
		c.Warn++
	default:
		c.Fail++
	}
}

// Logf is where checks log their progress (debug output, not results).
type Logf func(format string, args ...any)

// Check is one area the doctor examines. Run returns one or more results
// (a check over networks gives one per network and aspect); it must not
// panic, and reports trouble reaching what it checks as a failed result.
type Check interface {
	// Name identifies the check; results' Check fields start with it.
	Name() string
	Run(ctx context.Context, logf Logf) []Result
}

// CheckTimeout bounds each check's Run.
const CheckTimeout = 15 * time.Second

// MaxText bounds a result's message and fix, in bytes: they quote what
// others wrote (a node's report's error, a Consul key), and the results
// an agent publishes share one Consul key.
const MaxText = 4 << 10

// MaxCheckName bounds a result's check name, in bytes: it may quote
// what others wrote (a spec key's network name).
const MaxCheckName = 256

// CheckGrace is how long Run waits, once a check's time is over, for it
// to return its own results (which say what timed out).
const CheckGrace = 2 * time.Second

// DebugLogf is a Logf that logs each line at debug level on log, with the
// doctor's component.
func DebugLogf(log *slog.Logger) Logf {
	log = log.With("component", "doctor")
	return func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) }
}

// Runner runs checks. Its zero value is the doctor's: tests shorten its
// times to prove the bounds without waiting for the production ones.
type Runner struct {
	// Timeout bounds each check's Run; 0 means CheckTimeout.
	Timeout time.Duration
	// Grace is how long a check may go on past its time to return its
	// own results; 0 means CheckGrace.
	Grace time.Duration
}

// times is r's Timeout and Grace, the defaults in place of zeros.
func (r Runner) times() (timeout, grace time.Duration) {
	return cmp.Or(r.Timeout, CheckTimeout), cmp.Or(r.Grace, CheckGrace)
}

// Run runs every check in parallel and returns their results in the order
// of checks, each stamped with node (Runner{}.Run).
func Run(ctx context.Context, node string, checks []Check, logf Logf) []Result {
	return Runner{}.Run(ctx, node, checks, logf)
}

// Run runs every check in parallel and returns their results in the order
// of checks, each stamped with node.
func (r Runner) Run(ctx context.Context, node string, checks []Check, logf Logf) []Result {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	timeout, grace := r.times()
	out := make([][]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			start := time.Now()
			rs := runBounded(cctx, c, grace, logf)
			logf("check %s: %d result(s) in %s", c.Name(), len(rs), time.Since(start).Round(time.Millisecond))
			if len(rs) == 0 {
				rs = []Result{{Check: c.Name(), Status: OK, Message: "nothing to check"}}
			}
			out[i] = rs
		}()
	}
	wg.Wait()
	var all []Result
	for _, rs := range out {
		for _, r := range rs {
			r.Node = node
			all = append(all, bounded(r))
		}
	}
	return all
}

// bounded cuts r's message to MaxText bytes, saying how much more there
// was, and leaves out a fix longer than that, saying so: cut short, it
// would be another command. A check name past MaxCheckName keeps its
// start and its end (the aspect), around a mark.
func bounded(r Result) Result {
	if len(r.Check) > MaxCheckName {
		const mark, tail = "…", 64
		r.Check = termtext.Head(r.Check, MaxCheckName-tail-len(mark)) + mark + termtext.Tail(r.Check, tail)
	}
	if len(r.Message) > MaxText {
		head := termtext.Head(r.Message, MaxText)
		r.Message = head + fmt.Sprintf("… (%d bytes more)", len(r.Message)-len(head))
	}
	if len(r.Fix) > MaxText {
		r.Message += fmt.Sprintf(" (its fix, of %d bytes, is not shown)", len(r.Fix))
		r.Fix = ""
	}
	return r
}

// runBounded runs c until ctx ends and grace more: a check blocked where
// no context reaches (netlink while a driver holds the kernel's rtnl
// lock) is then a failed result, and left to return on its own.
func runBounded(ctx context.Context, c Check, grace time.Duration, logf Logf) []Result {
	start := time.Now()
	done := make(chan []Result, 1) // the one send never blocks, even once abandoned
	go func() { done <- runCheck(ctx, c, logf) }()
	select {
	case rs := <-done:
		return rs
	case <-ctx.Done():
	}
	select {
	case rs := <-done:
		return rs
	case <-time.After(grace):
		return []Result{{Check: c.Name(), Status: Fail,
			Message: fmt.Sprintf("did not finish in %s (%v): something it reads (netlink, a file under /proc or /sys, Docker, Consul) does not answer",
				time.Since(start).Round(time.Millisecond), ctx.Err())}}
	}
}

// runCheck runs c, a panic in it being its failed result: a check meets
// what other nodes and daemons wrote, and one that panics on what no one
// foresaw must not end the doctor, nor the agent whose periodic doctor
// runs it.
func runCheck(ctx context.Context, c Check, logf Logf) (rs []Result) {
	defer func() {
		if p := recover(); p != nil {
			logf("check %s panicked: %v\n%s", c.Name(), p, debug.Stack())
			rs = []Result{{Check: c.Name(), Status: Fail,
				Message: fmt.Sprintf("the check stopped on a bug (please report it, with the --log-level debug output): %v", p)}}
		}
	}()
	return c.Run(ctx, logf)
}

// Failed reports whether any result failed; warnings alone do not count.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// WriteTable writes results as a table, each fix on its own line below its
// result so that it can be copied whole.
func WriteTable(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCHECK\tSTATUS\tMESSAGE")
	// Messages and fixes name what other nodes wrote (node names, Consul
	// keys): quoted when they hold what would break their row.
	c := termtext.Cell
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c(r.Node), c(r.Check), c(string(r.Status)), c(r.Message))
		if r.Fix != "" && r.Status != OK {
			fmt.Fprintf(tw, "\t\t\t  fix: %s\n", c(r.Fix))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Every result, those a row stands for (capRows) too.
	n := Counts(rs)
	_, err := fmt.Fprintf(w, "\n%d check(s): %d ok, %d warning(s), %d failed\n", n.OK+n.Warn+n.Fail, n.OK, n.Warn, n.Fail)
	return err
}

// WriteJSON writes results as a JSON list ([] when none), indented, with
// every character that is not graphic as a \u escape (termtext.WriteJSON):
// results quote what other nodes wrote, and the output may go to a
// terminal.
func WriteJSON(w io.Writer, rs []Result) error {
	if rs == nil {
		rs = []Result{}
	}
	return termtext.WriteJSON(w, rs)
}
