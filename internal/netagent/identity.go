package netagent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/termtext"
)

// Heartbeat is how often an agent refreshes its node's facts; facts older
// than StaleAfter mean no live agent holds the node's identity.
const (
	Heartbeat  = 10 * time.Second
	StaleAfter = 3 * Heartbeat
)

// Facts publishes this node's facts under its identity (the swarm node
// ID) and keeps them fresh, as proof that a live agent holds it.
type Facts struct {
	Store *netspec.Store
	// ID is the node's identity, Node its name for display.
	ID, Node string
	Holder   netspec.Holder
	// Log is told of heartbeats that fail (see Run); nil discards.
	Log *slog.Logger

	mu sync.Mutex // guards published
	// published is the interface list last published: Sync runs on every
	// KV change, so facts are written only when they change (or at a
	// heartbeat), or agents would wake each other forever.
	published []string
}

// Claim takes the node's identity for this agent, publishing its facts;
// it fails with netspec.ErrIdentityHeld, naming the holder, when another
// live agent holds it.
func (f *Facts) Claim(ctx context.Context) error {
	ifaces, err := interfaces()
	if err != nil {
		return err
	}
	err = f.Store.Claim(ctx, f.facts(ifaces), netspec.ClaimOptions{Stale: StaleAfter, Poll: time.Second, Running: Running})
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.published = ifaces
	f.mu.Unlock()
	return nil
}

func (f *Facts) facts(ifaces []string) netspec.NodeFacts {
	return netspec.NodeFacts{ID: f.ID, Node: f.Node, Interfaces: ifaces, Holder: f.Holder}
}

// Publish writes the node's facts if its interfaces changed, or always
// with force.
func (f *Facts) Publish(ctx context.Context, force bool) error {
	ifaces, err := interfaces()
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !force && slices.Equal(ifaces, f.published) {
		return nil
	}
	if err := f.Store.PublishNode(ctx, f.facts(ifaces)); err != nil {
		return err
	}
	f.published = ifaces
	return nil
}

// Run refreshes the facts every period until ctx ends. It returns
// netspec.ErrIdentityHeld if another agent took the identity over (this
// one looked gone), and netspec.ErrNodeRemoved if `underlay node rm`
// removed the node (this agent cut off from Consul meanwhile): this
// agent must stop serving it. Each refresh is given up after
// kvstore.WriteWait, or period when shorter. A refresh that fails
// otherwise is warned of once until one succeeds again: facts left
// StaleAfter old make the node look down to every other.
func (f *Facts) Run(ctx context.Context, period time.Duration) error {
	t := time.NewTicker(period)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := f.heartbeat(ctx, period)
		switch {
		case errors.Is(err, netspec.ErrIdentityHeld), errors.Is(err, netspec.ErrNodeRemoved):
			return err
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			f.log().Warn("cannot refresh this node's facts; retrying at every heartbeat. Facts not refreshed for "+StaleAfter.String()+
				" make the node look down to the others (node ls, node rm, another agent's claim of its identity)", "node", f.Node, "node_id", f.ID, "err", err)
		case err == nil && failing:
			failing = false
			f.log().Info("this node's facts are refreshed again", "node", f.Node, "node_id", f.ID)
		}
	}
}

// heartbeat publishes the facts once, given up after kvstore.WriteWait,
// or period when shorter: a Consul agent that never answers would hold
// the heartbeat for good, and with it the lock Publish holds, which the
// network sync's publish waits on.
func (f *Facts) heartbeat(ctx context.Context, period time.Duration) error {
	ctx, cancel := kvstore.WriteContext(ctx, period)
	defer cancel()
	if err := f.Publish(ctx, true); err != nil {
		// The node's name is its hostname as Docker gives it: any bytes.
		return fmt.Errorf("refresh facts of node %s (swarm node %s): %w", termtext.Shorten(termtext.Cell(f.Node), maxQuoted), f.ID, err)
	}
	return nil
}

// log is Log, or a discarding logger.
func (f *Facts) log() *slog.Logger {
	if f.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Log
}

func interfaces() ([]string, error) {
	list, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	out := make([]string, len(list))
	for i, l := range list {
		out[i] = l.Name
	}
	slices.Sort(out)
	return out, nil
}

// Self describes this agent process: a fresh instance name, and where its
// process ID is valid, so that a later agent on this host can tell whether
// it still runs.
func Self() netspec.Holder {
	b := make([]byte, 8)
	rand.Read(b)
	h := netspec.Holder{Instance: hex.EncodeToString(b), PID: os.Getpid()}
	h.Host, _ = os.Hostname()
	if id, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		h.BootID = strings.TrimSpace(string(id))
	}
	h.PIDNS, _ = os.Readlink("/proc/self/ns/pid")
	h.Start, _ = startTime(h.PID)
	return h
}

// Running reports whether the process pid, started at start (clock ticks
// after boot), still runs in this process-ID space.
func Running(pid int, start uint64) bool {
	got, err := startTime(pid)
	return err == nil && got == start
}

// startTime reads a process's start time from /proc/PID/stat (field 22;
// the command name, field 2, may hold spaces and parentheses).
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(fields))
	}
	return strconv.ParseUint(fields[19], 10, 64)
}
