package register

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/underlay/underlay/internal/termtext"
)

// Policy is the agent-wide configuration that shapes registrations.
type Policy struct {
	// Node names this agent; it is the ownership marker and the service ID prefix.
	Node string
	// Network is the preferred network when a container is on several.
	Network string
	// HostIP is the address registered for published ports bound to all
	// interfaces and for host-network containers.
	HostIP string
	// Internal registers a container's own IP and exposed ports on any user
	// network (registrator's -internal). Macvlan and ipvlan endpoints always
	// register that way: their addresses are routable by design.
	Internal bool
	// Explicit registers only containers that name a service.
	Explicit bool
	// SwarmNames keeps a Swarm task (a container carrying Swarm's
	// service name label) to its Swarm service's name: a SERVICE_NAME or
	// SERVICE_<port>_NAME naming another service is refused with a
	// warning, and the default name used. Without it, any container may
	// join any service by naming it. Other containers are not affected.
	SwarmNames bool
	// SwarmNameAllow lists, by Swarm service name, the other names a task
	// of that service may still register under with SwarmNames (the
	// agent's --swarm-name-allow SVC=NAME). Nil allows none.
	SwarmNameAllow map[string][]string
	// Tags are added to every service.
	Tags []string
	// Labels, when set, limit the agent to containers carrying every one
	// of these labels; an empty value matches any value.
	Labels map[string]string
}

func (p Policy) matches(c Container) bool {
	for k, v := range p.Labels {
		got, ok := c.Labels[k]
		if !ok || (v != "" && got != v) {
			return false
		}
	}
	return true
}

// underlayDrivers are the network drivers whose endpoints carry routable
// addresses of an existing L2 network.
var underlayDrivers = map[string]bool{"macvlan": true, "ipvlan": true}

// attributes consumed by the agent itself; every other attribute goes into Meta.
var consumedAttrs = map[string]bool{"name": true, "id": true, "tags": true, "ignore": true, "network": true}

// ownMeta are the Meta keys underlay fills from what Docker says. An
// attribute may not set one even where underlay leaves it out (no MAC, not
// a Swarm task): it would pass for what Docker said.
var ownMeta = map[string]bool{
	MetaNode: true, MetaHash: true, MetaContainerID: true, MetaContainerName: true, MetaImage: true,
	MetaNetwork: true, MetaMAC: true, MetaSwarmService: true, MetaSwarmTask: true, MetaSwarmSlot: true, MetaSwarmNode: true,
}

// target is an address and port to register for one container port.
type target struct {
	port     Port // the container port, whose SERVICE_<port>_* settings apply
	address  string
	hostPort int
	endpoint *Endpoint // nil for published and host-network ports
}

// Reasons DesiredWhy gives for a container that has no service: short,
// for an operator (the dashboard shows them on the task's card); the
// agent's warnings say more of the metadata behind some of them.
const (
	LeftOutNotRunning = "not running"
	LeftOutLabels     = "lacks the labels the agent is limited to (--labels)"
	LeftOutIgnore     = "SERVICE_IGNORE is set"
	LeftOutNoHostIP   = "host network, and the agent knows no host IP (--host-ip)"
	LeftOutNoAddress  = "SERVICE_NETWORK names a network it has no address on"
	LeftOutNoPort     = "no port to register (none exposed or published)"
	// LeftOutNotOnNetwork is a container that exposes ports but publishes
	// none on the host, on networks whose addresses the agent does not
	// register (bridge, overlay without --internal).
	LeftOutNotOnNetwork = "not on a network the agent registers (--network, macvlan, ipvlan, or any with --internal), and no port published"
	// LeftOutPublishedUnusable is a container whose published ports are
	// all bound where no other host reaches them (loopback, link-local),
	// or on all interfaces with no --host-ip.
	LeftOutPublishedUnusable = "no published port is reachable from other hosts (loopback or link-local only, or no --host-ip)"
	LeftOutPortsIgnored      = "SERVICE_<port>_IGNORE leaves out every port"
	LeftOutExplicit          = "--explicit and no SERVICE_NAME"
	// LeftOutIgnoredOrExplicit is a container some of whose ports
	// SERVICE_<port>_IGNORE leaves out and the rest --explicit.
	LeftOutIgnoredOrExplicit = "SERVICE_<port>_IGNORE leaves out some ports, and --explicit the others (no SERVICE_NAME)"
)

// Desired returns the services that container c should have in Consul, and
// warnings about metadata that could not be used. It has no side effects.
func Desired(c Container, p Policy) ([]Service, []Warning) {
	svcs, warnings, _ := DesiredWhy(c, p)
	return svcs, warnings
}

// DesiredWhy is Desired, and when it returns no service, why (one of the
// LeftOut* reasons; "" when there are services): the same decision, so
// that the reason never tells another story than the registration.
func DesiredWhy(c Container, p Policy) ([]Service, []Warning, string) {
	var warnings []Warning
	seen := map[Warning]bool{}
	who := shorten(c.Name) // for warnings
	warn := func(key, value, problem string) {
		w := Warning{Container: who, Key: shorten(key), Value: shorten(value), Problem: problem}
		if !seen[w] {
			seen[w] = true
			warnings = append(warnings, w)
		}
	}
	if !c.Running {
		return nil, nil, LeftOutNotRunning
	}
	if !p.matches(c) {
		return nil, nil, LeftOutLabels
	}
	md := parseMetadata(c, warn)
	if s, ok := md.base["ignore"]; ok && truthy(s.value) {
		return nil, finishWarnings(who, warnings), LeftOutIgnore
	}
	c.Exposed, c.Published = usablePorts(c, warn)
	targets, why := chooseTargets(c, p, md, warn)
	if len(targets) == 0 {
		return nil, finishWarnings(who, warnings), why
	}
	group := len(targets) > 1
	var drafts []draft
	over, ignored, unnamed := 0, 0, 0
	for _, t := range targets {
		// Looked up before the port's settings are merged, which takes
		// time with every setting of the container.
		if s, ok := md.get(t.port.Port, "ignore"); ok && truthy(s.value) {
			ignored++
			continue
		}
		if s, _ := md.get(t.port.Port, "name"); s.value == "" && p.Explicit {
			unnamed++
			continue
		}
		if len(drafts) == MaxServices {
			over++
			continue
		}
		attrs, fromPort := md.forPort(t.port.Port)
		name, own := attrs["name"].value, fromPort["name"]
		if name != "" && !usableName(name) {
			warn(attrs["name"].source, name, unusableName+unreadable(name)+"; the default name is used")
			name, own = "", false
		}
		if svc := c.Labels[labelSwarmServiceName]; name != "" && p.SwarmNames && svc != "" && name != defaultName(c) && !slices.Contains(p.SwarmNameAllow[svc], name) {
			// A label or environment variable (an image's ENV too) would
			// join this task to another service's instances in Consul,
			// unless the agent allows this service that name.
			hint := "" // the agent's flag takes only a usable service name
			if usableName(svc) {
				hint = fmt.Sprintf(" (--swarm-name-allow %s=%s would allow it)", shorten(svc), shorten(name))
			}
			warn(attrs["name"].source, name, fmt.Sprintf("a task of Swarm service %s registers under that name only (--swarm-names); %s is used%s", shorten(svc), shorten(defaultName(c)), hint))
			name, own = "", false
		}
		if name == "" {
			if n := c.Labels[labelSwarmServiceName]; n != "" && !usableName(n) {
				warn(labelSwarmServiceName, n, unusableName+unreadable(n)+"; the image's name is used")
			}
			name = defaultName(c)
		}
		if group && !own {
			name += "-" + strconv.Itoa(t.port.Port)
		}
		drafts = append(drafts, draft{t: t, attrs: attrs, svc: Service{
			ID:      serviceID(c, p, t, attrs, fromPort, group, warn),
			Name:    name,
			Address: t.address,
			Port:    cmp.Or(t.hostPort, t.port.Port),
			Tags:    serviceTags(p.Tags, attrs["tags"], warn),
		}})
	}
	if over > 0 {
		warn("", "", fmt.Sprintf("%d ports to register; a container is registered with its first %d in port order, and %d are left out (SERVICE_<port>_IGNORE leaves a port out)", MaxServices+over, MaxServices, over))
	}
	if len(drafts) == 0 {
		// Every target was skipped above, by one of the two.
		why := LeftOutIgnoredOrExplicit
		switch {
		case unnamed == 0:
			why = LeftOutPortsIgnored
		case ignored == 0:
			why = LeftOutExplicit
		}
		return nil, finishWarnings(who, warnings), why
	}
	var services []Service
	for _, d := range uniqueIDs(drafts, warn) {
		svc := d.svc
		svc.Meta = serviceMeta(c, p, d.t, d.attrs, warn)
		svc.TaggedAddresses = taggedAddresses(d.t, svc.Port)
		svc.Checks = buildChecks(svc, d.t.port.Proto, d.attrs, warn)
		svc.Health = healthMirror(c, svc.ID)
		svc.Meta[MetaHash] = Hash(svc)
		services = append(services, svc)
	}
	return services, finishWarnings(who, warnings), ""
}

// MaxServices is how many services one container is registered with at
// most, one per port: Docker lets a container expose a range of ports, as
// many as 131070 with both protocols, each of which would be a Consul
// registration written and hashed at every change.
const MaxServices = 128

// draft is a service before its ID is known to be unique.
type draft struct {
	t     target
	attrs map[string]setting
	svc   Service
}

// uniqueIDs keeps service IDs unique within a container: an ID shared by a
// TCP and a UDP or SCTP port (SERVICE_53_ID=dns on 53/tcp and 53/udp) gets
// ":udp" or ":sctp" on the other one; any other clash keeps the first and
// drops the rest with a warning.
func uniqueIDs(drafts []draft, warn func(key, value, problem string)) []draft {
	count := map[string]int{}
	for _, d := range drafts {
		count[d.svc.ID]++
	}
	seen := map[string]bool{}
	var out []draft
	for _, d := range drafts {
		if suffix := protoSuffix(d.t.port); count[d.svc.ID] > 1 && suffix != "" && !strings.HasSuffix(d.svc.ID, suffix) {
			d.svc.ID += suffix
		}
		if seen[d.svc.ID] {
			s := d.attrs["id"]
			warn(s.source, s.value, fmt.Sprintf("service ID also used by another port; port %s not registered", d.t.port))
			continue
		}
		seen[d.svc.ID] = true
		out = append(out, d)
	}
	return out
}

// chooseTargets decides, deterministically, which address and ports c is
// registered with; with none, it says why (a LeftOut* reason).
func chooseTargets(c Container, p Policy, md metadata, warn func(key, value, problem string)) ([]target, string) {
	if c.NetworkMode == "host" {
		if p.HostIP == "" {
			warn("", "", "host-network container but the agent knows no host IP (--host-ip); skipped")
			return nil, LeftOutNoHostIP
		}
		var ts []target
		for _, port := range exposedAndPublished(c) {
			ts = append(ts, target{port: port, address: p.HostIP})
		}
		return ts, LeftOutNoPort
	}
	ep, ok := chooseEndpoint(c, p, md, warn)
	if !ok {
		return nil, LeftOutNoAddress
	}
	if ep != nil {
		addr := cmp.Or(ep.IPv4, ep.IPv6)
		var ts []target
		for _, port := range exposedAndPublished(c) {
			ts = append(ts, target{port: port, address: addr, endpoint: ep})
		}
		return ts, LeftOutNoPort
	}
	ts := publishedTargets(c, p, warn)
	switch {
	case len(c.Published) > 0:
		return ts, LeftOutPublishedUnusable
	case len(c.Exposed) > 0:
		return ts, LeftOutNotOnNetwork
	}
	return ts, LeftOutNoPort
}

// chooseEndpoint picks the network whose container address is registered:
// SERVICE_NETWORK, else the agent's --network, else the first underlay
// (macvlan/ipvlan) network by name, else with Internal the first network by
// name. It returns nil when published ports should be used instead.
func chooseEndpoint(c Container, p Policy, md metadata, warn func(key, value, problem string)) (*Endpoint, bool) {
	eps := slices.Clone(c.Networks)
	slices.SortFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.Network, b.Network) })
	find := func(name string) *Endpoint {
		for i := range eps {
			if eps[i].Network == name && (eps[i].IPv4 != "" || eps[i].IPv6 != "") {
				return &eps[i]
			}
		}
		return nil
	}
	if s, ok := md.base["network"]; ok && s.value != "" {
		if ep := find(s.value); ep != nil {
			return ep, true
		}
		warn(s.source, s.value, "container has no address on that network; skipped")
		return nil, false
	}
	if p.Network != "" {
		if ep := find(p.Network); ep != nil {
			return ep, true
		}
	}
	for i := range eps {
		if underlayDrivers[eps[i].Driver] && (eps[i].IPv4 != "" || eps[i].IPv6 != "") {
			return &eps[i], true
		}
	}
	if p.Internal {
		for i := range eps {
			if eps[i].IPv4 != "" || eps[i].IPv6 != "" {
				return &eps[i], true
			}
		}
	}
	return nil, true
}

// usablePorts leaves out the ports no service can have: a port number
// outside 1-65535 (dockerhost reads a port it cannot parse as 0), a
// protocol Docker does not publish, whose name would go into the service
// ID, or published on such a host port (0 is a port not bound yet, left to
// publishedTargets).
func usablePorts(c Container, warn func(key, value, problem string)) ([]Port, []Binding) {
	usable := func(p Port) bool {
		if p.Port < 1 || p.Port > 65535 {
			warn("", p.String(), "not a port number between 1 and 65535; not registered")
			return false
		}
		if !protocols[p.Proto] {
			warn("", p.String(), "not a protocol Docker publishes (tcp, udp, sctp); not registered")
			return false
		}
		return true
	}
	var exposed []Port
	for _, p := range c.Exposed {
		if usable(p) {
			exposed = append(exposed, p)
		}
	}
	var published []Binding
	for _, b := range c.Published {
		if !usable(b.Port) {
			continue
		}
		if b.HostPort < 0 || b.HostPort > 65535 {
			warn("", strconv.Itoa(b.HostPort), fmt.Sprintf("host port of %s is not a port number between 1 and 65535; not registered", b.Port))
			continue
		}
		published = append(published, b)
	}
	return exposed, published
}

// exposedAndPublished lists every container port, exposed or published,
// once, in port order.
func exposedAndPublished(c Container) []Port {
	seen := map[Port]bool{}
	var ports []Port
	add := func(p Port) {
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	for _, p := range c.Exposed {
		add(p)
	}
	for _, b := range c.Published {
		add(b.Port)
	}
	slices.SortFunc(ports, comparePorts)
	return ports
}

func publishedTargets(c Container, p Policy, warn func(key, value, problem string)) []target {
	seen := map[Port]bool{}
	var ts []target
	bindings := slices.Clone(c.Published)
	slices.SortFunc(bindings, func(a, b Binding) int {
		return cmp.Or(comparePorts(a.Port, b.Port), strings.Compare(a.HostIP, b.HostIP), cmp.Compare(a.HostPort, b.HostPort))
	})
	loopback, linkLocal := map[Port]string{}, map[Port]string{}
	for _, b := range bindings {
		if b.HostPort == 0 || seen[b.Port] {
			continue
		}
		// Docker binds a published port on its host IP, so a running
		// container's is an address of this host: registered as it is,
		// unless it names no one host. One that does not parse (stale or
		// damaged inspect data) is not the host IP, where nothing listens.
		addr := b.HostIP
		ip, err := netip.ParseAddr(addr)
		if err != nil && addr != "" {
			warn("", addr, fmt.Sprintf("port %s is published on a host IP that is not an IP address; not registered", b.Port))
			continue
		}
		ip = ip.Unmap() // ::ffff:0.0.0.0 is all interfaces, as 0.0.0.0
		if err != nil || ip.IsUnspecified() {
			addr = p.HostIP
		} else if addr = ip.String(); ip.IsLoopback() {
			// Only this host reaches it: in the catalog it would send
			// every other host's clients to themselves.
			loopback[b.Port] = cmp.Or(loopback[b.Port], net.JoinHostPort(addr, strconv.Itoa(b.HostPort)))
			continue
		} else if ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			// It names no one host, and checks would query what it
			// names from the Consul agent: 169.254.169.254 is cloud
			// instances' metadata service, which hands out credentials.
			linkLocal[b.Port] = cmp.Or(linkLocal[b.Port], net.JoinHostPort(addr, strconv.Itoa(b.HostPort)))
			continue
		}
		if addr == "" {
			warn("", "", fmt.Sprintf("port %s is published on all interfaces but the agent knows no host IP (--host-ip); not registered", b.Port))
			continue
		}
		seen[b.Port] = true
		ts = append(ts, target{port: b.Port, address: addr, hostPort: b.HostPort})
	}
	for _, port := range slices.SortedFunc(maps.Keys(loopback), comparePorts) {
		if !seen[port] {
			warn("", "", fmt.Sprintf("port %s is published only on the loopback address %s, which other hosts cannot reach; not registered", port, loopback[port]))
		}
	}
	for _, port := range slices.SortedFunc(maps.Keys(linkLocal), comparePorts) {
		if !seen[port] {
			warn("", "", fmt.Sprintf("port %s is published only on the link-local or multicast address %s, which names no one host; not registered", port, linkLocal[port]))
		}
	}
	return ts
}

func comparePorts(a, b Port) int {
	return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(a.Proto, b.Proto))
}

// unusableName says why a name fails usableName.
const unusableName = "not usable as a Consul service name: Consul's HTTP API could not look it up, or it would read as another name (a control character; a bidi override, a zero-width or other invisible character, a space other than U+0020, a space at its start or end, a line separator; or a path segment Go's HTTP server rewrites: '.', '..' or an empty one)"

// usableName says Consul's HTTP API can look a service up by name, in a
// path such as /v1/health/service/NAME, and that it reads as what it is:
// Go's HTTP server redirects a path with a ".", ".." or empty segment to
// another, a control character makes the request invalid, and one that is
// not graphic (readable reports why) makes it read as another name. A '/'
// between segments is fine: Consul takes the rest of the path as the name.
func usableName(name string) bool {
	return path.Clean("/"+name) == "/"+name && readable(name)
}

// readable says s is valid UTF-8 and its every character graphic, spaces
// included, as termtext.Graphic: no control character, and none of those
// that make text read as other text in a terminal, a log or Consul's UI
// (bidi overrides and isolates, U+202A–U+202E and U+2066–U+2069, which
// turn "admin\u202etxt.exe" into "adminexe.txt"; zero-width and other
// format characters; spaces other than U+0020, so that "web" and
// "web\u00a0" are not two services that read the same, and characters
// shown as nothing; line and paragraph separators; private-use and
// unassigned code points, which show as anything). Not UTF-8, it would
// not reach Consul as it is: JSON replaces such bytes. Nor may it start
// or end with U+0020 (termtext.CheckEdges): "web " reads as "web".
func readable(s string) bool { return termtext.Graphic(s) && termtext.CheckEdges(s) == nil }

// unreadable is ": " and the first character of s readable refuses, by
// its code point ("U+00A0 (a space other than U+0020) at byte 3"), which
// tells apart two names that read the same, or the space at its start or
// end; "" when readable takes s.
func unreadable(s string) string {
	err := termtext.CheckGraphic(s)
	if err == nil {
		err = termtext.CheckEdges(s)
	}
	if err != nil {
		return ": " + err.Error()
	}
	return ""
}

// CheckName says why name is not taken as a service's name (from
// SERVICE_NAME or SERVICE_<port>_NAME), or nil when it is.
func CheckName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if !usableName(name) {
		return errors.New(unusableName + unreadable(name))
	}
	return nil
}

// defaultName is a Swarm task's service name, else the image's base name.
func defaultName(c Container) string {
	if n := c.Labels[labelSwarmServiceName]; n != "" && usableName(n) {
		return n
	}
	img := c.Image
	if strings.HasPrefix(img, "sha256:") {
		return c.Name // started from an image ID: no name to read
	}
	img, _, _ = strings.Cut(img, "@")
	base := path.Base(img)
	base, _, _ = strings.Cut(base, ":")
	return base
}

// protocols are those Docker publishes a port with.
var protocols = map[string]bool{"tcp": true, "udp": true, "sctp": true}

// protoSuffix tells apart the IDs of one port number's protocols: ":udp"
// for UDP, as registrator does, ":sctp" for SCTP, and nothing for TCP, so
// that TCP's IDs, the most common, stay those registered so far.
func protoSuffix(p Port) string {
	if p.Proto == "tcp" {
		return ""
	}
	return ":" + p.Proto
}

// serviceID is stable for a node, container and port: SERVICE_ID when set
// and usable, else NODE:CONTAINER:PORT, with protoSuffix's ":udp" or
// ":sctp".
func serviceID(c Container, p Policy, t target, attrs map[string]setting, fromPort map[string]bool, group bool, warn func(key, value, problem string)) string {
	id := attrs["id"].value
	if id != "" && len(id) > maxLabelID {
		warn(attrs["id"].source, id, fmt.Sprintf("%d bytes, longer than the %d bytes a SERVICE_ID may have: Consul's HTTP API names the ID in a URL to deregister it; the default ID is used", len(id), maxLabelID))
		id = ""
	}
	if id != "" && !usableID(id) {
		warn(attrs["id"].source, id, "not usable as a Consul service ID: Consul's HTTP API could not name it to deregister it, and the entry would stay after the container, or it would read as another ID (a '/', '.' or '..' alone, a control character, a bidi override, a zero-width or other invisible character, a space other than U+0020, a space at its start or end, a line separator)"+unreadable(id)+"; the default ID is used")
		id = ""
	}
	if prefix := p.Node + ":"; id != "" && strings.HasPrefix(id, prefix) {
		// Another container's default ID, taken first, would be held
		// against that container for as long as this one runs.
		warn(attrs["id"].source, id, fmt.Sprintf("IDs starting with %q are reserved for the agent's own IDs (NODE:CONTAINER:PORT), which other containers are registered under; the default ID is used", prefix))
		id = ""
	}
	if id != "" {
		if group && !fromPort["id"] {
			id += "-" + strconv.Itoa(t.port.Port)
		}
		return id
	}
	name := c.Name
	// Room for the longest port and the check IDs' suffixes.
	if len(p.Node)+len(name)+len("::65535:sctp")+len(HealthCheckSuffix) > maxServiceID {
		warn("", c.Name, fmt.Sprintf("container name too long for a service ID (%d bytes at most: Consul's HTTP API names the ID in a URL to deregister it); the container ID stands for it", maxServiceID))
		name = c.ID
	}
	return fmt.Sprintf("%s:%s:%d%s", p.Node, name, t.port.Port, protoSuffix(t.port))
}

// maxLabelID is the longest SERVICE_ID taken, in bytes, and maxServiceID
// the longest service or check ID written, with what may be appended
// ("-PORT", ":sctp", HealthCheckSuffix). Consul's HTTP API names an ID in
// a URL path to deregister it, and refuses a request line over 1 MB,
// which Docker lets a label or a container name exceed: such a service
// would stay after its container.
const (
	maxLabelID   = 200
	maxServiceID = 256
)

// usableID says Consul's HTTP API can name id in a path, as deregistration
// and check updates do: Go's HTTP server cleans "." and ".." segments out
// of a path, a control character makes the request invalid, the request
// line has a bounded length, and an ID must read as what it is (readable).
func usableID(id string) bool {
	if id == "." || id == ".." || strings.Contains(id, "/") || len(id) > maxServiceID {
		return false
	}
	return readable(id)
}

// maxTags is how many tags a service gets at most: the agent's --tags,
// then SERVICE_TAGS's while they last. Docker bounds no label, and the
// tags of every port's service go to Consul at each registration.
const maxTags = 64

// AgentTags returns the agent's own tags (--tags), which go to every
// service, as a service takes SERVICE_TAGS's: each trimmed of spaces,
// empty ones and repeats dropped. It refuses, naming the tag and the
// character, one that is not readable (a control character, a bidi
// override, a space other than U+0020…), which SERVICE_TAGS would leave
// out, and more than maxTags of them, which a service takes at most.
func AgentTags(in []string) ([]string, error) {
	var out []string
	for _, t := range in {
		t = strings.TrimSpace(t)
		if t == "" || slices.Contains(out, t) {
			continue
		}
		if err := termtext.CheckGraphic(t); err != nil {
			return nil, fmt.Errorf("tag %s: %w: it would read as another tag", termtext.QuoteShort(t, maxWarningValue), err)
		}
		out = append(out, t)
	}
	if len(out) > maxTags {
		return nil, fmt.Errorf("%d tags, more than the %d a service takes", len(out), maxTags)
	}
	return out, nil
}

// serviceTags is the agent's tags, then those of s, without repeats.
func serviceTags(policy []string, s setting, warn func(key, value, problem string)) []string {
	var tags []string
	seen := map[string]bool{}
	dropped := 0
	add := func(t string, fromLabel bool) {
		switch {
		case seen[t]:
		case fromLabel && len(tags) >= maxTags:
			seen[t] = true
			dropped++
		default:
			seen[t] = true
			tags = append(tags, t)
		}
	}
	for _, t := range policy {
		add(t, false)
	}
	for t := range strings.SplitSeq(s.value, ",") {
		t = strings.TrimSpace(t)
		if t != "" && !readable(t) {
			// Consul takes it, but its CLI prints tags as they are, and
			// it would read as another tag or rewrite the terminal.
			warn(s.source, s.value, fmt.Sprintf("tag %s left out: a control character, a bidi override, a zero-width or other invisible character, a space other than U+0020, or a line separator would make it read as another tag%s", termtext.QuoteShort(t, maxWarningValue), unreadable(t)))
			continue
		}
		if t != "" {
			add(t, true)
		}
	}
	if dropped > 0 {
		warn(s.source, s.value, fmt.Sprintf("a service takes at most %d tags; %d left out", maxTags, dropped))
	}
	return tags
}

// MaxMeta is how many Meta pairs Consul takes on one service: it refuses
// a registration with more (HTTP 400), which would leave the container
// unregistered.
const MaxMeta = 64

// serviceMeta holds what underlay knows of the container, then the
// container's own attributes; attributes may not override underlay's keys.
func serviceMeta(c Container, p Policy, t target, attrs map[string]setting, warn func(key, value, problem string)) map[string]string {
	meta := map[string]string{
		MetaNode:          p.Node,
		MetaContainerID:   c.ID,
		MetaContainerName: c.Name,
		MetaImage:         c.Image,
	}
	if t.endpoint != nil {
		meta[MetaNetwork] = t.endpoint.Network
		if t.endpoint.MAC != "" {
			meta[MetaMAC] = t.endpoint.MAC
		}
	}
	swarm := map[string]string{
		MetaSwarmService: c.Labels[labelSwarmServiceID],
		MetaSwarmTask:    c.Labels[labelSwarmTaskID],
		MetaSwarmNode:    c.Labels[labelSwarmNodeID],
		MetaSwarmSlot:    SwarmSlot(c.Labels[labelSwarmTaskName]),
	}
	for k, v := range swarm {
		if v != "" {
			meta[k] = v
		}
	}
	dropLongDockerValues(meta, warn)
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		s := attrs[k]
		switch {
		case consumedAttrs[k] || strings.HasPrefix(k, "check_"):
		case ownMeta[k] || strings.HasPrefix(k, "underlay"):
			warn(s.source, s.value, "reserved by underlay; not copied into Meta")
		case strings.HasPrefix(k, "consul"):
			warn(s.source, s.value, "Consul reserves Meta keys starting with consul; not copied into Meta")
		case len(k) > 128 || len(s.value) > maxMetaValue:
			warn(s.source, s.value, "too long for Consul Meta (128-byte key, 512-byte value); not copied")
		case len(meta) >= MaxMeta-1: // Desired adds the hash
			warn(s.source, s.value, fmt.Sprintf("Consul takes at most %d Meta pairs per service, and underlay's own and the attributes before it in key order hold them all; not copied", MaxMeta))
		default:
			meta[k] = s.value
		}
	}
	return meta
}

// maxMetaValue is the longest Meta value Consul takes, in bytes.
const maxMetaValue = 512

// dockerMetaSource names, for the Meta values underlay copies from Docker
// that Docker does not bound, the label each comes from ("" for the
// container's name, image and network).
var dockerMetaSource = map[string]string{
	MetaContainerName: "", MetaImage: "", MetaNetwork: "",
	MetaSwarmService: labelSwarmServiceID, MetaSwarmTask: labelSwarmTaskID, MetaSwarmNode: labelSwarmNodeID,
}

// dropLongDockerValues leaves out of meta the values copied from Docker
// that are too long for Consul, which would refuse the whole registration
// for one of them: Docker bounds neither a container's name nor a label's
// value, and a plain container may carry Swarm's labels.
func dropLongDockerValues(meta map[string]string, warn func(key, value, problem string)) {
	for _, k := range slices.Sorted(maps.Keys(dockerMetaSource)) {
		if v := meta[k]; len(v) > maxMetaValue {
			delete(meta, k)
			warn(dockerMetaSource[k], v, fmt.Sprintf("%d bytes, too long for a Consul Meta value (%d bytes); Meta %s left out", len(v), maxMetaValue, k))
		}
	}
}

// SwarmSlot reads the slot from a replicated task's name, "web.3.taskid";
// global tasks carry a node ID there instead and have no slot.
func SwarmSlot(taskName string) string {
	parts := strings.Split(taskName, ".")
	if len(parts) < 3 {
		return ""
	}
	if _, err := strconv.Atoi(parts[len(parts)-2]); err != nil {
		return ""
	}
	return parts[len(parts)-2]
}

func taggedAddresses(t target, port int) map[string]TaggedAddress {
	tagged := map[string]TaggedAddress{}
	add := func(addr string) {
		if tag := lanTag(addr); tag != "" {
			tagged[tag] = TaggedAddress{addr, port}
		}
	}
	if t.endpoint == nil {
		add(t.address)
	} else {
		add(t.endpoint.IPv4)
		add(t.endpoint.IPv6)
	}
	if len(tagged) == 0 {
		return nil
	}
	return tagged
}

// lanTag is the tagged address Consul takes addr as, or "" for none:
// Consul refuses a whole registration (HTTP 400) whose lan_ipv4 Go's
// net.ParseIP does not read as IPv4 or whose lan_ipv6 it reads as IPv4,
// as it does an IPv4-mapped IPv6 address, or does not read at all, as an
// address with a zone.
func lanTag(addr string) string {
	ip, err := netip.ParseAddr(addr)
	switch {
	case err != nil || ip.Zone() != "" || ip.Is4In6():
		return ""
	case ip.Is4():
		return "lan_ipv4"
	default:
		return "lan_ipv6"
	}
}

// HealthCheckSuffix turns a service ID into the ID of its HEALTHCHECK mirror check.
const HealthCheckSuffix = ":docker-health"

// healthMirror maps Docker's HEALTHCHECK state to a Consul check status. A
// container still "starting" is not yet known to be healthy, so it is critical.
func healthMirror(c Container, serviceID string) *HealthMirror {
	if c.Health == "" || c.Health == "none" {
		return nil
	}
	status := "critical"
	if c.Health == "healthy" {
		status = "passing"
	}
	out := "docker health: " + c.Health
	if c.HealthOutput != "" {
		out += ": " + c.HealthOutput
	}
	return &HealthMirror{CheckID: serviceID + HealthCheckSuffix, Status: status, Output: out}
}

// Hash digests everything of a registration except the mirrored health
// status, which changes through TTL updates rather than re-registration.
func Hash(s Service) string {
	s.Meta = mapWithout(s.Meta, MetaHash)
	if s.Health != nil {
		s.Health = &HealthMirror{CheckID: s.Health.CheckID}
	}
	b, _ := json.Marshal(s) // plain strings, ints and maps: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func mapWithout(m map[string]string, key string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}

// maxWarnings is how many warnings one container's metadata gets listed,
// and maxWarningValue how much of a value one quotes, in bytes: each is
// logged, and Docker bounds neither labels nor their values.
const (
	maxWarnings     = 64
	maxWarningValue = 1024
)

// shorten cuts s to maxWarningValue bytes and says how long it was, as
// termtext.Shorten does.
func shorten(s string) string { return termtext.Shorten(s, maxWarningValue) }

// finishWarnings orders warnings by key, as metadata is read from maps,
// and keeps the first maxWarnings, counting the rest in one more.
func finishWarnings(container string, ws []Warning) []Warning {
	slices.SortFunc(ws, func(a, b Warning) int {
		return cmp.Or(strings.Compare(a.Key, b.Key), strings.Compare(a.Value, b.Value), strings.Compare(a.Problem, b.Problem))
	})
	if len(ws) > maxWarnings {
		more := len(ws) - maxWarnings
		ws = append(ws[:maxWarnings], Warning{Container: container, Problem: fmt.Sprintf("%d more problems with this container's metadata not listed", more)})
	}
	return ws
}
