// Package dockerhost connects underlay to one Docker daemon: it builds the
// API client (with version negotiation, so dockerd 20.10 to 29 all work) and
// adapts it to the small interfaces that underlay's packages declare.
//
// Every Docker client underlay makes is built here (NewClient from
// DOCKER_HOST, NewClientAt for a given daemon). The adapters here implement
// the interfaces other packages declare: Source (register.Docker,
// inventory.Source, ipam's Held, taskmetrics.Source) and Networks
// (netagent.Docker and Swarm, ipam.Cluster, netspec.NetworkLister and
// SwarmManager); their mapping from Docker's types (toEvent, toContainer,
// configRange) is pure and unit-tested. It may import the packages whose
// interfaces it implements and backoff; its I/O edge is the Docker API.
package dockerhost

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/termtext"
)

// NewClient connects to DOCKER_HOST (or the local socket) and negotiates the
// API version with the daemon on first use.
func NewClient() (*client.Client, error) {
	if err := checkHost(os.Getenv(client.EnvOverrideHost), "DOCKER_HOST"); err != nil {
		return nil, err
	}
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation(), noTracing(), keepConns())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return c, nil
}

// checkHost refuses a Docker daemon's address (what names it: from)
// holding a password: Docker's client never sends it (a tcp:// address
// keeps its host alone), yet quotes the address as given in every failed
// connection's error, which underlay logs and the dashboard shows. The
// error names it with the password hidden (termtext.RedactAddr).
func checkHost(host, from string) error {
	if safe := termtext.RedactAddr(host); safe != host {
		return fmt.Errorf("%s %q: a password, which Docker's client never sends and would quote in every error: remove the user information", from, safe)
	}
	return nil
}

// noTracing passes every request straight to the client's transport.
// Docker's client wraps its transport in OpenTelemetry's, which starts a
// span and builds a metric's attribute set at every request, whether or
// not anything collects them; nothing in underlay does. That was 7.5 %
// of the agent's CPU in a profile of 200 starts.
func noTracing() client.Opt {
	return client.WithTraceOptions(otelhttp.WithFilter(func(*http.Request) bool { return false }))
}

// idleConns is how many idle connections to the daemon a client keeps:
// as many as the registration's default workers, whose requests a burst
// of starts sends at once (and dockerd holds an inspect for a start).
const idleConns = 32

// keepConns lets the client keep idleConns idle connections. Docker's
// client keeps Go's default of two per host: after each burst of
// concurrent requests all but two connections were closed, and the next
// burst dialled them again, a new connection (and dockerd's goroutines
// for it) per request, 16 % of the agent's CPU in a profile of 100 starts.
// Idle ones still close after the client's 30 s.
func keepConns() client.Opt {
	return func(c *client.Client) error {
		if t, ok := c.HTTPClient().Transport.(*http.Transport); ok {
			t.MaxIdleConns, t.MaxIdleConnsPerHost = idleConns, idleConns
		}
		return nil
	}
}

// NewClientAt connects to the daemon at host (a DOCKER_HOST value, such as
// unix:///run/docker.sock), whatever the environment says, and negotiates
// the API version on first use. opts come after those (a test's
// instrumented transport).
func NewClientAt(host string, opts ...client.Opt) (*client.Client, error) {
	if err := checkHost(host, "docker host"); err != nil {
		return nil, err
	}
	c, err := client.NewClientWithOpts(append([]client.Opt{client.WithHost(host), client.WithAPIVersionNegotiation(), noTracing(), keepConns()}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", host, err)
	}
	return c, nil
}

// registrationInspectWait bounds the registration's inspect of a
// container: dockerd answered one after 17 s, waiting for the container's
// start, on a host at load average 30.
const registrationInspectWait = 2 * time.Minute

// Source adapts a Docker client to register.Docker.
type Source struct {
	api *client.Client

	mu sync.Mutex // guards drivers
	// drivers caches network ID → driver; a network's driver never
	// changes. A network's destroy event drops its entry, and it holds
	// at most maxDrivers (see rememberDriver).
	drivers map[string]string
	// connected follows container starts Docker's listing does not show
	// (see WatchConnects).
	connected connects
	// networkReads shares network reads among connect events.
	networkReads *networkReads
	// statsWait bounds one container's stats read (Samples).
	statsWait time.Duration
	// callWait bounds each listing of containers (the inventory's, the
	// registration's, the task containers' for Samples) and each network
	// inspect (Endpoints, driver).
	callWait time.Duration
	// inspectWait bounds a container's inspect (register.Docker's).
	inspectWait time.Duration
}

// maxDrivers bounds the network drivers a Source keeps: a host whose
// jobs make and remove a network each (CI runners, compose projects)
// grew the cache for as long as the agent ran, each destroy the event
// stream missed (down meanwhile) an entry for good. Past it an entry
// goes, read again (one inspect) if its network is still asked for.
const maxDrivers = 1024

// rememberDriver keeps network id's driver, letting go of another
// network's at maxDrivers.
func (s *Source) rememberDriver(id, driver string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.drivers[id]; !ok && len(s.drivers) >= maxDrivers {
		for other := range s.drivers {
			delete(s.drivers, other)
			break
		}
	}
	s.drivers[id] = driver
}

// forgetRemovedNetwork drops the driver of the network m says was
// removed (its destroy event).
func (s *Source) forgetRemovedNetwork(m events.Message) {
	if m.Type == events.NetworkEventType && m.Action == events.ActionDestroy {
		s.mu.Lock()
		delete(s.drivers, m.Actor.ID)
		s.mu.Unlock()
	}
}

// NewSource wraps api.
func NewSource(api *client.Client) *Source {
	s := &Source{api: api, drivers: map[string]string{}, statsWait: statsWait, callWait: callWait, inspectWait: registrationInspectWait}
	s.networkReads = newNetworkReads(s.readNetwork)
	return s
}

// relevantActions are the events after which a container's registrations
// may have to change, and create, at which a container is read before it
// starts.
var relevantActions = map[string]bool{
	"create": true, "start": true, "restart": true, "unpause": true, "pause": true, "die": true, "stop": true,
	"kill": true, "destroy": true, "rename": true, "connect": true, "disconnect": true, "health_status": true,
}

// Events implements register.Docker.
func (s *Source) Events(ctx context.Context) (<-chan register.Event, <-chan error) {
	// Networks' destroys come too (eventFilter): they prune the drivers.
	return Subscribe(ctx, s.api, eventFilter(), 256, func(m events.Message) (register.Event, bool) {
		s.forgetRemovedNetwork(m)
		return toEvent(m)
	})
}

// eventFilter asks dockerd for the relevant actions only. Without it every
// event of every container came, each decoded to be dropped: a container's
// HEALTHCHECK alone sends exec_create, exec_start and exec_die at each
// probe, so an idle host of many checked containers kept the agent busy.
// With health_status among the values dockerd matches an action that
// begins with a value (daemon/events/filter.go, since Docker 1.13), which
// lets "health_status: healthy" through; no other action begins with one
// of these. toEvent still checks each event.
func eventFilter() filters.Args {
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)), filters.Arg("type", string(events.NetworkEventType)))
	for action := range relevantActions {
		f.Add("event", action)
	}
	return f
}

// Subscribe streams the Docker events that match f, as convert turns them
// (dropping those it refuses), until ctx ends or the stream fails; the
// error channel then says why.
func Subscribe[E any](ctx context.Context, api *client.Client, f filters.Args, buffer int, convert func(events.Message) (E, bool)) (<-chan E, <-chan error) {
	msgs, errs := negotiatedEvents(ctx, api, events.ListOptions{Filters: f})
	out := make(chan E, buffer)
	outErr := make(chan error, 1)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-errs:
				outErr <- err
				return
			case m := <-msgs:
				ev, ok := convert(m)
				if !ok {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, outErr
}

// negotiatedEvents is api.Events once the client's API version is
// negotiated. Docker's client reads the version to build an events
// request without negotiating it, while another goroutine's first request
// negotiates and writes it: a data race, at each agent start (the IPAM
// reclaimer's first listing and the connect watch's subscription go out
// together). A versioned request first (/version) negotiates under the
// client's lock; once negotiated the version is not written again. Its
// failure is left to the subscription to report: with dockerd out of
// reach that fails too.
func negotiatedEvents(ctx context.Context, api *client.Client, opts events.ListOptions) (<-chan events.Message, <-chan error) {
	api.ServerVersion(ctx)
	return api.Events(ctx, opts)
}

func toEvent(m events.Message) (register.Event, bool) {
	action, _, _ := strings.Cut(string(m.Action), ":") // "health_status: healthy"
	if !relevantActions[action] {
		return register.Event{}, false
	}
	id, networkID := m.Actor.ID, ""
	if m.Type == events.NetworkEventType {
		id, networkID = m.Actor.Attributes["container"], m.Actor.ID
	}
	if id == "" {
		return register.Event{}, false
	}
	at := time.Unix(0, m.TimeNano)
	if m.TimeNano == 0 {
		at = time.Now()
	}
	return register.Event{ContainerID: id, Action: action, Time: at, NetworkID: networkID}, true
}

// RunningContainers implements register.Docker.
func (s *Source) RunningContainers(ctx context.Context) ([]string, error) {
	// Bounded, as every listing here: a dockerd that never answered held
	// the registration's resyncs for good.
	ctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	list, err := s.api.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	ids := make([]string, len(list))
	for i, c := range list {
		ids[i] = c.ID
	}
	return ids, nil
}

// Inspect implements register.Docker.
func (s *Source) Inspect(ctx context.Context, id string) (register.Container, error) {
	// dockerd holds an inspect until the container's start or stop is
	// over, seconds on a busy host: bounded far above that, so that one
	// never answered frees its worker and is retried.
	ctx, cancel := context.WithTimeout(ctx, s.inspectWait)
	defer cancel()
	j, err := s.api.ContainerInspect(ctx, id)
	if client.IsErrNotFound(err) {
		return register.Container{}, register.ErrNotFound
	}
	if err != nil {
		return register.Container{}, err
	}
	return toContainer(j, func(networkID string) (string, error) { return s.driver(ctx, networkID) })
}

// RunningEndpoints implements register.Docker. dockerd finds listed IDs
// directly in its snapshot (daemon/list.go), not by a walk of every
// container, and the snapshot is saved before the start event is sent.
func (s *Source) RunningEndpoints(ctx context.Context, ids []string) (map[string][]register.Endpoint, error) {
	if len(ids) == 0 {
		return map[string][]register.Endpoint{}, nil
	}
	f := filters.NewArgs()
	for _, id := range ids {
		f.Add("id", id)
	}
	// Bounded: one never answered held the checks of every later start.
	ctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	list, err := s.api.ContainerList(ctx, container.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list %d containers: %w", len(ids), err)
	}
	return runningEndpoints(list, ids), nil
}

// runningEndpoints maps a listing to the endpoints of the running
// containers among ids. A filter is also a prefix: only exact IDs count.
func runningEndpoints(list []container.Summary, ids []string) map[string][]register.Endpoint {
	asked := make(map[string]bool, len(ids))
	for _, id := range ids {
		asked[id] = true
	}
	out := map[string][]register.Endpoint{}
	for _, c := range list {
		if !asked[c.ID] || c.State != container.StateRunning {
			continue
		}
		eps := []register.Endpoint{}
		if c.NetworkSettings != nil {
			for name, ep := range c.NetworkSettings.Networks {
				if ep == nil {
					continue
				}
				eps = append(eps, register.Endpoint{Network: name, NetworkID: ep.NetworkID,
					IPv4: ep.IPAddress, IPv6: ep.GlobalIPv6Address, MAC: ep.MacAddress})
			}
		}
		out[c.ID] = eps
	}
	return out
}

// Endpoint implements register.Docker. dockerd answers a network read
// without the container's lock, so it serves while the container starts.
// The read is shared with other connects to the network (networkReads).
func (s *Source) Endpoint(ctx context.Context, networkID, containerID string, after time.Time) (register.Endpoint, error) {
	n, err := s.networkReads.get(ctx, networkID, after)
	if err != nil {
		return register.Endpoint{}, err
	}
	ep, ok := n.endpoints[containerID]
	if !ok {
		return register.Endpoint{}, register.ErrNotFound
	}
	return ep, nil
}

// readNetwork reads a network's endpoints for networkReads.
func (s *Source) readNetwork(ctx context.Context, networkID string) (networkRead, error) {
	n, err := s.api.NetworkInspect(ctx, networkID, network.InspectOptions{})
	if client.IsErrNotFound(err) {
		return networkRead{}, register.ErrNotFound
	}
	if err != nil {
		return networkRead{}, fmt.Errorf("inspect network %s: %w", networkID, err)
	}
	s.rememberDriver(n.ID, n.Driver)
	eps := make(map[string]register.Endpoint, len(n.Containers))
	for id, ep := range n.Containers {
		eps[id] = toEndpoint(n, ep)
	}
	return networkRead{endpoints: eps}, nil
}

// toEndpoint maps a network's record of one of its endpoints to what
// inspecting the container would give.
func toEndpoint(n network.Inspect, ep network.EndpointResource) register.Endpoint {
	addr := func(cidr string) string { a, _, _ := strings.Cut(cidr, "/"); return a }
	return register.Endpoint{
		Network: n.Name, NetworkID: n.ID, Driver: n.Driver,
		IPv4: addr(ep.IPv4Address), IPv6: addr(ep.IPv6Address), MAC: ep.MacAddress,
	}
}

// toContainer maps Docker's inspect answer to what registration needs;
// driver names a network's driver by its ID.
func toContainer(j container.InspectResponse, driver func(networkID string) (string, error)) (register.Container, error) {
	c := register.Container{
		ID:   j.ID,
		Name: strings.TrimPrefix(j.Name, "/"),
	}
	if j.Config != nil {
		c.Image = j.Config.Image
		c.Labels = j.Config.Labels
		c.Env = j.Config.Env
		for p := range j.Config.ExposedPorts {
			c.Exposed = append(c.Exposed, toPort(p))
		}
		// As dockerd decides to run a probe (daemon/health.go getProbe).
		if h := j.Config.Healthcheck; h != nil && len(h.Test) > 0 {
			c.HealthConfigured = h.Test[0] == "CMD" || h.Test[0] == "CMD-SHELL"
		}
	}
	if j.HostConfig != nil {
		c.NetworkMode = string(j.HostConfig.NetworkMode)
		c.PublishRequested = len(j.HostConfig.PortBindings) > 0 || j.HostConfig.PublishAllPorts
	}
	if j.State != nil {
		c.Running = j.State.Running
		c.Created = j.State.Status == container.StateCreated
		c.ExitCode = j.State.ExitCode
		if h := j.State.Health; h != nil {
			c.Health = h.Status
			if n := len(h.Log); n > 0 {
				c.HealthOutput = truncate(strings.TrimSpace(h.Log[n-1].Output), 200)
			}
		}
	}
	if ns := j.NetworkSettings; ns != nil {
		for p, bindings := range ns.Ports {
			for _, b := range bindings {
				hp, _ := strconv.Atoi(b.HostPort)
				c.Published = append(c.Published, register.Binding{Port: toPort(p), HostIP: b.HostIP, HostPort: hp})
			}
		}
		for name, ep := range ns.Networks {
			if ep == nil {
				continue
			}
			d, err := driver(ep.NetworkID)
			if err != nil {
				return register.Container{}, fmt.Errorf("network %s of container %s: %w", name, c.Name, err)
			}
			c.Networks = append(c.Networks, register.Endpoint{
				Network: name, NetworkID: ep.NetworkID, Driver: d,
				IPv4: ep.IPAddress, IPv6: ep.GlobalIPv6Address, MAC: ep.MacAddress,
			})
		}
	}
	return c, nil
}

func (s *Source) driver(ctx context.Context, networkID string) (string, error) {
	if networkID == "" {
		return "", nil
	}
	s.mu.Lock()
	d, ok := s.drivers[networkID]
	s.mu.Unlock()
	if ok {
		return d, nil
	}
	// Bounded: a dockerd that never answers held the caller for good.
	ctx, cancel := context.WithTimeout(ctx, s.callWait)
	defer cancel()
	n, err := s.api.NetworkInspect(ctx, networkID, network.InspectOptions{})
	if client.IsErrNotFound(err) {
		return "", nil // removed since; the container is about to lose it too
	}
	if err != nil {
		return "", fmt.Errorf("inspect network %s: %w", networkID, err)
	}
	s.rememberDriver(networkID, n.Driver)
	return n.Driver, nil
}

func toPort(p interface {
	Port() string
	Proto() string
}) register.Port {
	n, _ := strconv.Atoi(p.Port())
	return register.Port{Port: n, Proto: p.Proto()}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
