package dockerhost

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stringid"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/termtext"
)

// callWait is how long one of the inventory's calls to dockerd may take
// (a listing, a network inspect), and the task metrics' listing: they take
// milliseconds, and a dockerd that never answers held the node's
// inventory, or its task metrics, for good. A listing that times out
// fails the period, tried again at the next.
const callWait = 10 * time.Second

// maxNetworkProblem is how much of a network inspect's error an entry
// carries (Entry.NetworkProblem): it is published with every address on
// the network.
const maxNetworkProblem = 200

// Endpoints implements inventory.Source: the running containers' addresses
// on macvlan and ipvlan networks, and on networks whose inspect failed,
// marked so.
func (s *Source) Endpoints(ctx context.Context, node string) ([]inventory.Entry, error) {
	lctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	list, err := s.api.ContainerList(lctx, container.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return s.endpoints(ctx, list, node)
}

// endpoints lists the underlay endpoints of the listed containers that
// show an address. An endpoint on a network whose driver cannot be read
// (its inspect failed, or timed out) is listed with the error
// (Entry.NetworkProblem): one such network failed, or held, the whole
// listing, and its address may be an underlay one, which a cluster-IPAM
// pool would show as a leak. Each network is inspected once per listing.
// The engine's own networks (bridge, host, none) are never underlay's.
func (s *Source) endpoints(ctx context.Context, list []container.Summary, node string) ([]inventory.Entry, error) {
	var out []inventory.Entry
	unreadable := map[string]string{} // network ID → why
	for _, c := range list {
		if c.NetworkSettings == nil || !holdsAddresses(c.State) {
			continue
		}
		for name, ep := range c.NetworkSettings.Networks {
			if ep == nil || ep.IPAddress == "" && ep.GlobalIPv6Address == "" {
				continue
			}
			problem, failed := unreadable[ep.NetworkID]
			if !failed {
				driver, err := s.driver(ctx, ep.NetworkID)
				switch {
				case err != nil && ctx.Err() != nil:
					return nil, err
				case err != nil:
					// Docker's error may quote anything: graphic, as
					// inventory.Load requires.
					problem = termtext.Shorten(termtext.Cell(err.Error()), maxNetworkProblem)
					unreadable[ep.NetworkID] = problem
				case driver != "macvlan" && driver != "ipvlan":
					continue
				}
			}
			if problem != "" && (name == "bridge" || name == "host" || name == "none") {
				continue
			}
			e := inventory.Entry{
				MAC: ep.MacAddress, Node: node, Network: name, ID: c.ID,
				Container:      ContainerName(c.Names, c.ID),
				Service:        c.Labels[labelSwarmService],
				Task:           c.Labels["com.docker.swarm.task.id"],
				Slot:           register.SwarmSlot(c.Labels["com.docker.swarm.task.name"]),
				Since:          time.Unix(c.Created, 0).UTC(),
				NetworkProblem: problem,
			}
			for _, ip := range []string{ep.IPAddress, ep.GlobalIPv6Address} {
				if ip != "" {
					e.IP = ip
					out = append(out, e)
				}
			}
		}
	}
	return out, nil
}

// holdsAddresses says whether a container in this state (as listed) holds
// the addresses its listing shows: only a running or paused one does.
// Docker allocates at each start and releases when the container stops or
// its start fails, yet the listing may still show the address: an exited
// container's when a crashed dockerd lost track of it, and on Docker 20.10
// that of a created container whose start failed (inspect shows none),
// and of one restarting, between its exit and its next start. The
// addresses of starts under way are kept by other means (HeldAddresses'
// Starts).
func holdsAddresses(state string) bool {
	return state == "running" || state == "paused"
}

// Changes implements inventory.Source.
func (s *Source) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	// Signalled at each (re)subscription too: anything may have changed
	// meanwhile.
	go s.follow(ctx, func(live bool) {
		if live {
			signal(out)
		}
	}, func(m events.Message) bool {
		switch m.Action {
		case "start", "die", "destroy", "connect", "disconnect", "rename":
			signal(out)
			return true
		}
		return false
	})
	return out
}

// follow streams Docker's container and network events to handle until
// ctx ends, subscribing again (with backoff) whenever the stream breaks,
// and calling stream(true) after each subscription (dockerd sends every
// later event: Docker's client returns once it answered), stream(false)
// once it broke or ended. handle says whether an event counted: only
// those reset the backoff.
func (s *Source) follow(ctx context.Context, stream func(live bool), handle func(events.Message) bool) {
	f := followFilter()
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	for ctx.Err() == nil {
		msgs, errs := negotiatedEvents(ctx, s.api, events.ListOptions{Filters: f})
		stream(true)
	read:
		for {
			select {
			case <-ctx.Done():
				stream(false)
				return
			case <-errs:
				break read
			case m := <-msgs:
				if handle(m) {
					delays.Reset()
				}
			}
		}
		stream(false)
		backoff.Sleep(ctx, delays.Next())
	}
}

// followFilter asks dockerd for the container and network actions that
// Changes and WatchConnects handle. Without it every event of every
// container came, each decoded to be dropped: a HEALTHCHECK alone sends
// exec_create, exec_start and exec_die at each probe. None of these
// values is one dockerd matches as a prefix (health_status, exec_create,
// exec_start: daemon/events/filter.go), so it matches them exactly.
func followFilter() filters.Args {
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)), filters.Arg("type", string(events.NetworkEventType)))
	for _, a := range []events.Action{events.ActionStart, events.ActionDie, events.ActionDestroy, events.ActionRename,
		events.ActionConnect, events.ActionDisconnect} {
		f.Add("event", string(a))
	}
	return f
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// ContainerName is a listed container's name: of its names ("/db"), the
// one that is no legacy link's ("/web/db", db as web's link), which
// dockerd lists too, sorted, so often first; its short ID when it has
// none. docker ps shows the same.
func ContainerName(names []string, id string) string {
	for _, n := range names {
		if n = strings.TrimPrefix(n, "/"); n != "" && !strings.Contains(n, "/") {
			return n
		}
	}
	return stringid.TruncateID(id)
}

// HeldAddresses implements ipam.Held: the addresses containers hold on
// underlay networks (containers that are not running yet count once
// Docker shows their address), and the starts that may be under way, by
// network name, from one listing.
func (s *Source) HeldAddresses(ctx context.Context) (ipam.Local, error) {
	// Bounded as the inventory's listing: a dockerd that never answered
	// held every later sweep of the node's leaks.
	lctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	list, err := s.api.ContainerList(lctx, container.ListOptions{All: true})
	if err != nil {
		return ipam.Local{}, fmt.Errorf("list containers: %w", err)
	}
	es, err := s.endpoints(ctx, list, "")
	if err != nil {
		return ipam.Local{}, err
	}
	out := ipam.Local{Held: map[string]map[netip.Addr]bool{}, Starts: map[string][]ipam.Start{}}
	for _, e := range es {
		a, err := netip.ParseAddr(e.IP)
		if err != nil {
			continue
		}
		if out.Held[e.Network] == nil {
			out.Held[e.Network] = map[netip.Addr]bool{}
		}
		out.Held[e.Network][a] = true
	}
	for _, st := range s.starts(ctx, list) {
		for _, name := range st.networks {
			out.Starts[name] = append(out.Starts[name], st.Start)
		}
	}
	return out, nil
}

// connects tracks the containers dockerd connected to a macvlan or ipvlan
// network without their start (or death) seen since: a start of an exited
// container, which a listing shows as exited until it is done. Docker
// connects a starting container once its address is allocated, and holds
// the container until the start ends.
//
// It keeps too, while its event stream is up, the created containers a
// sweep's inspect found not starting (idle): such a container's start
// connects it (an event), so until an event names it, or the listing
// shows it in another state, it need not be inspected again. The inspect
// of every container left created on an underlay network, at every
// sweep, forever, was the sweep's main cost on a host keeping them.
type connects struct {
	mu sync.Mutex // guards following fields
	// pending are the containers' IDs.
	pending map[string]bool
	// died is, by ID, when each container last died, as its die event
	// says: the inspect of one dockerd holds (restarting: restart
	// policy) does not tell it (see startOf). A missed event leaves an
	// older one, or none: the start is then taken as older than it is,
	// never younger.
	died map[string]time.Time
	// live is true while the event stream is subscribed: idle is kept,
	// and trusted, only then; it is emptied at each (re)subscription and
	// end, as events may have been missed.
	live bool
	// idle are, by ID, the containers found not starting while live, each
	// with its state as listed then.
	idle map[string]container.ContainerState
	// seen counts the events noted and the stream's changes; named is, by
	// container ID, the count at the last event naming it, and liveSince
	// the count when the stream last came up: an inspect sent before
	// either (its mark) does not tell the container is idle (see
	// settled). named is kept only while marks are taken and not done
	// (inflight), and emptied when none is: a later mark is past every
	// count in it, so it could tell nothing, and sweeps failing before
	// their listing would leave it growing with every event.
	seen, liveSince uint64
	named           map[string]uint64
	inflight        int
}

// stream records whether the event stream is up (see live).
func (c *connects) stream(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen++
	c.live, c.idle, c.liveSince = live, nil, c.seen
}

// mark is the count of events noted so far, to take before an inspect
// (see settled); done must follow once the inspect is settled or given
// up.
func (c *connects) mark() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight++
	return c.seen
}

// done ends a mark's inspect (see named).
func (c *connects) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	if c.inflight <= 0 {
		c.inflight, c.named = 0, nil
	}
}

// isIdle says whether container id, listed in state, was found not
// starting in that state with no event naming it since.
func (c *connects) isIdle(id string, state container.ContainerState) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.idle[id]
	return c.live && ok && st == state
}

// settled records that an inspect sent at mark found container id, listed
// in state, not starting: its pending connect is forgotten, and a created
// one kept idle, unless an event named it since mark (its start may have
// begun after dockerd answered), or the stream came up since (events may
// have been missed before).
func (c *connects) settled(id string, state container.ContainerState, mark uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.named[id] > mark {
		return
	}
	delete(c.pending, id)
	if c.live && c.liveSince <= mark && state == container.StateCreated {
		if c.idle == nil {
			c.idle = map[string]container.ContainerState{}
		}
		c.idle[id] = state
	}
}

func (c *connects) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		c.pending = map[string]bool{}
	}
	c.pending[id] = true
}

func (c *connects) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, id)
}

// keepOnly forgets the containers not in ids (gone).
func (c *connects) keepOnly(ids map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.DeleteFunc(c.pending, func(id string, _ bool) bool { return !ids[id] })
	maps.DeleteFunc(c.idle, func(id string, _ container.ContainerState) bool { return !ids[id] })
	maps.DeleteFunc(c.died, func(id string, _ time.Time) bool { return !ids[id] })
}

// dieTime is when die event m says its container died: its time to the
// nanosecond, else to the second (truncated: earlier, as died allows),
// else zero.
func dieTime(m events.Message) time.Time {
	switch {
	case m.TimeNano != 0:
		return time.Unix(0, m.TimeNano)
	case m.Time != 0:
		return time.Unix(m.Time, 0)
	}
	return time.Time{}
}

// diedAt is when container id's last die event said it died (zero: none
// seen).
func (c *connects) diedAt(id string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.died[id]
}

func (c *connects) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[id]
}

// WatchConnects follows Docker's events until ctx ends, so that
// HeldAddresses counts the start of an exited container (docker start,
// docker restart) as a start under way: a container connected to a
// macvlan or ipvlan network is pending until it starts, dies or is
// destroyed, or a sweep finds its start over. Without it only created and
// restarting containers count.
func (s *Source) WatchConnects(ctx context.Context) {
	s.follow(ctx, s.connected.stream, func(m events.Message) bool {
		s.forgetRemovedNetwork(m)
		s.connected.note(m)
		return true
	})
}

// note records what one event says of pending connects; any event
// naming a container makes it no longer idle.
func (c *connects) note(m events.Message) {
	id := m.Actor.ID
	if m.Type == events.NetworkEventType {
		id = m.Actor.Attributes["container"]
	}
	c.mu.Lock()
	c.seen++
	if c.inflight > 0 {
		if c.named == nil {
			c.named = map[string]uint64{}
		}
		c.named[id] = c.seen
	}
	delete(c.idle, id)
	switch {
	case m.Type == events.ContainerEventType && m.Action == events.ActionDie:
		if c.died == nil {
			c.died = map[string]time.Time{}
		}
		if at := dieTime(m); !at.IsZero() {
			c.died[id] = at
		}
	case m.Type == events.ContainerEventType && m.Action == events.ActionDestroy:
		delete(c.died, id)
	}
	c.mu.Unlock()
	switch {
	case m.Type == events.NetworkEventType && m.Action == events.ActionConnect:
		if t := m.Actor.Attributes["type"]; t == "macvlan" || t == "ipvlan" {
			c.add(m.Actor.Attributes["container"])
		}
	case m.Type == events.NetworkEventType && m.Action == events.ActionDisconnect:
		c.forget(m.Actor.Attributes["container"])
	case m.Type == events.ContainerEventType && (m.Action == events.ActionStart || m.Action == events.ActionDie || m.Action == events.ActionDestroy):
		c.forget(m.Actor.ID)
	}
}

// inspectWait is how long a start's inspect may take: dockerd answers it
// only once the container's start (which holds the container) is done.
const inspectWait = 2 * time.Second

type listedStart struct {
	ipam.Start
	networks []string
}

// starts inspects, at once, the listed containers that are created or
// restarting, or have a connect pending (see connects), on an underlay
// network (see underlayOnly), but created ones found idle (see
// connects), and returns those that may be starting (see startOf), with
// those networks. A pending connect is forgotten once its container is
// gone, running, or its start over.
func (s *Source) starts(ctx context.Context, list []container.Summary) []listedStart {
	var wg sync.WaitGroup
	found := make([]*listedStart, len(list))
	listed := map[string]bool{}
	read1 := map[string]string{} // network → driver, read this sweep
	for i, c := range list {
		listed[c.ID] = true
		pending := s.connected.has(c.ID)
		networks := startNetworks(c, pending)
		if networks == nil {
			if pending {
				s.connected.forget(c.ID) // running
			}
			continue
		}
		if !pending && s.connected.isIdle(c.ID, c.State) {
			continue
		}
		if networks = s.underlayOnly(ctx, c, networks, read1); networks == nil {
			continue
		}
		mark := s.connected.mark()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.connected.done()
			ictx, cancel := context.WithTimeout(ctx, inspectWait)
			defer cancel()
			j, err := s.api.ContainerInspect(ictx, c.ID)
			if client.IsErrNotFound(err) {
				s.connected.forget(c.ID)
				return
			}
			st, ok := startOf(c, j, err, s.connected.diedAt(c.ID))
			if ok {
				found[i] = &listedStart{Start: st, networks: networks}
			} else {
				s.connected.settled(c.ID, c.State, mark) // dockerd let go of it: no start under way
			}
		}()
	}
	wg.Wait()
	s.connected.keepOnly(listed)
	var out []listedStart
	for _, st := range found {
		if st != nil {
			out = append(out, *st)
		}
	}
	return out
}

// startNetworks are the networks of a listed container that may be
// starting on them: created or restarting, or with a connect pending and
// not running, on networks that are not the engine's own (bridge, host,
// none); nil for others.
func startNetworks(c container.Summary, pending bool) []string {
	maybe := c.State == "created" || c.State == "restarting" || pending && (c.State == "exited" || c.State == "dead")
	if !maybe || c.NetworkSettings == nil {
		return nil
	}
	var out []string
	for name := range c.NetworkSettings.Networks {
		if name != "bridge" && name != "host" && name != "none" {
			out = append(out, name)
		}
	}
	return out
}

// underlayOnly keeps, of the networks a listed container may be starting
// on, those where its start may allocate an underlay address: macvlan and
// ipvlan networks, and those whose driver cannot be read (as endpoints
// does). Only a start on those can hold an address a pool records; the
// inspect of every container left created on a user bridge network, at
// every sweep, forever, was the sweep's main cost. read1 holds the
// drivers read in one sweep, by network ID, or by name for the networks
// the listing names without their ID (a created container's, on some
// dockerd versions), which are read again at the next sweep: a name may
// go to another network meanwhile. Each network is so read at most once a
// sweep, one that fails or never answers too.
func (s *Source) underlayOnly(ctx context.Context, c container.Summary, networks []string, read1 map[string]string) []string {
	var out []string
	for _, name := range networks {
		key, read := "name "+name, func() string { return s.driverByName(ctx, name) }
		if ep := c.NetworkSettings.Networks[name]; ep != nil && ep.NetworkID != "" {
			key, read = ep.NetworkID, func() string {
				d, _ := s.driver(ctx, ep.NetworkID) // "": gone, or unreadable
				return d
			}
		}
		driver, ok := read1[key]
		if !ok {
			driver = read()
			read1[key] = driver
		}
		if driver == "" || driver == "macvlan" || driver == "ipvlan" {
			out = append(out, name)
		}
	}
	return out
}

// driverByName reads the driver of the network named name, and keeps it
// by the network's ID; "" when it cannot be read.
func (s *Source) driverByName(ctx context.Context, name string) string {
	ctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	n, err := s.api.NetworkInspect(ctx, name, network.InspectOptions{})
	if err != nil {
		return ""
	}
	s.rememberDriver(n.ID, n.Driver)
	return n.Driver
}

// startOf judges a listed container that may be starting from its inspect
// (err: dockerd did not answer it in time). A start holds its container
// from before it allocates the address until it ends (containerStart
// locks it, on 20.10 as on 29), and inspect waits for that lock: one
// dockerd does not answer for is starting, however long. One running now
// started since the listing, which does not show its address: it counts,
// for this sweep. Any other that dockerd answers for is not starting (see
// ipam.Start): counted, a container left created would hold back the
// reclaim of every later leak on its network. One held has started since
// its creation, or since it last died (died, from its die event: zero if
// none seen), whichever is later: a restart policy's start of a container
// that ran is then not taken for one begun before its last run's address
// was handed out (see ipam.Allocator's request by name of an address
// whose release is held back).
func startOf(c container.Summary, j container.InspectResponse, err error, died time.Time) (ipam.Start, bool) {
	since := time.Unix(c.Created, 0)
	switch {
	case err != nil:
		if died.After(since) {
			since = died
		}
		return ipam.Start{Since: since}, true
	case j.ContainerJSONBase == nil || j.State == nil || !j.State.Running || j.State.Restarting:
		return ipam.Start{}, false
	}
	if t, err := time.Parse(time.RFC3339Nano, j.State.FinishedAt); err == nil && t.After(since) {
		since = t // started again since its last exit
	}
	return ipam.Start{Since: since}, true
}
