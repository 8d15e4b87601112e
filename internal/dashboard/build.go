package dashboard

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/pkg/stringid"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/unregistered"
)

// Timings and limits of Build.
const (
	// RegisterGrace is how long a running task may go unregistered in
	// Consul before its card is marked: the agent registers within moments.
	RegisterGrace = 20 * time.Second
	// RecentlyEnded is how long a task that ended (failed, shut down)
	// stays on the page, so that a change is seen, not only a card gone.
	RecentlyEnded = 2 * time.Minute
	// MaxDecisions is how many decisions a service shows.
	MaxDecisions = 10
	// MaxPoints bounds a service's chart.
	MaxPoints = 200
	// MaxCells bounds the cells of a subnet map.
	MaxCells = 1024
	// MaxProblems bounds the doctor problems a node lists, and the
	// cluster's problems; each problem's texts are cut at
	// MaxEventMessage. They come from documents any agent may write.
	MaxProblems = 100
	// MaxPoolAddresses bounds the addresses an IPv4 pool lists (a /24
	// lists all of its 256); MaxPool6Addresses those of an IPv6 pool,
	// as many as the page shows, and a network's addresses outside its
	// subnets. The counts stay whole.
	MaxPoolAddresses  = 2048
	MaxPool6Addresses = 256
	// MaxCardChecks bounds the checks a card lists: whoever registers a
	// service gives it as many as they like, and every snapshot carries
	// every card.
	MaxCardChecks = 16
	// MaxNodeCards bounds the cards a node's column lists, and those of
	// no node (Snapshot.Unplaced); MaxCards the cards listed in all,
	// shared out evenly among the columns. Those in most need of
	// attention are kept (limitCards); the others are counted
	// (Node.TasksOmitted, Snapshot.UnplacedOmitted). A card is about
	// 500 bytes: 50,000 tasks made a snapshot of 26 MB, sent to every
	// page on every change.
	MaxNodeCards = 200
	MaxCards     = 3000
	// MaxServices bounds the services listed (Snapshot.ServicesOmitted
	// counts the others).
	MaxServices = 1000
	// MaxSnapshotBytes bounds the JSON of a snapshot as pages get it:
	// past it, the caps above (cards, services, problems, addresses)
	// are halved until it fits (fit). Nodes and networks are never left
	// out.
	MaxSnapshotBytes = 4 << 20
	// agentStaleAfter is the least time without a report before an agent
	// counts as stale; twice its report period when that is longer.
	agentStaleAfter = 90 * time.Second
)

// Build assembles a snapshot from what the sources returned. It is pure:
// the same inputs give the same snapshot (Version is the server's).
func Build(in Inputs) Snapshot {
	return build(in, sharedNames(in.Nodes))
}

// build is Build with in.Nodes' shared names (sharedNames), which the
// server has already worked out to hear the agents.
func build(in Inputs, shared map[string][]string) Snapshot {
	inv := append(slices.Clone(in.Inventory), clashes(in)...)
	inventory.Check(inv)
	ix := newIndex(in, inv)
	s := Snapshot{
		GeneratedAt: utc(in.Now),
		Control:     in.Control,
		Sources:     sourceErrors(in.Errors, in.FailingSince),
	}
	byNode, unplaced := cards(in, ix)
	var onNodes map[string]bool
	s.Nodes, onNodes = nodes(in, byNode, shared)
	s.Problems = append(problems(in, onNodes), badUnregistered(in.BadUnregistered)...)
	s.Unplaced = unplaced
	s.Services = services(in, ix)
	s.Networks = networks(in, inv, ix)
	s.Summary = summarize(s)
	s.Summary.Duplicates = duplicates(inv)
	s.Summary.DuplicateContainers = duplicateContainers(inv)
	return s
}

// clashes are, as entries, the cluster-IPAM allocations whose address a
// container holds that is not theirs (inventory.AllocationEntries): a
// host shim, or an allocation of another node. Check flags them with the
// container, so that the clash shows on the map, the card and in the
// summary, as `underlay ips` shows it; merged into the container's
// address, it did not show. Entries with no task and no container ID,
// they make no card.
func clashes(in Inputs) []inventory.Entry {
	names := map[string]string{}
	for _, n := range in.Nodes {
		if n.Hostname != "" {
			names[n.ID] = n.Hostname
		}
	}
	// The facts' names first, as the inventories' entries name nodes.
	maps.Copy(names, in.NodeNames)
	held := map[string]bool{}
	for _, e := range in.Inventory {
		held[e.Network+"|"+e.IP] = true
	}
	var out []inventory.Entry
	for _, n := range in.Networks {
		if n.Refused != "" || len(n.Blocks) == 0 {
			continue
		}
		allocs := map[netip.Addr]ipam.Alloc{}
		for _, doc := range n.Blocks {
			for k, al := range doc.Allocs {
				if a, err := netip.ParseAddr(k); err == nil && held[n.Spec.Name+"|"+a.String()] {
					allocs[a] = al
				}
			}
		}
		out = append(out, inventory.AllocationEntries(n.Spec.Name, allocs, n.Kept, in.Inventory, names)...)
	}
	return out
}

// duplicates counts the addresses (per network) several containers hold.
func duplicates(inv []inventory.Entry) int {
	holders := map[string]int{}
	for _, e := range inv {
		holders[e.Network+"|"+e.IP]++
	}
	n := 0
	for _, c := range holders {
		if c > 1 {
			n++
		}
	}
	return n
}

// duplicateContainers counts the container IDs entries of several nodes
// list (one container on several networks of its node is one node's):
// of several names, or of one name and several swarm node IDs (an entry
// giving none may be any of its name's: inventory.OtherNode).
func duplicateContainers(inv []inventory.Entry) int {
	ids := map[string]map[string]map[string]bool{} // container ID → node name → node IDs given
	for _, e := range inv {
		if e.ID == "" {
			continue
		}
		if ids[e.ID] == nil {
			ids[e.ID] = map[string]map[string]bool{}
		}
		if ids[e.ID][e.Node] == nil {
			ids[e.ID][e.Node] = map[string]bool{}
		}
		if e.NodeID != "" {
			ids[e.ID][e.Node][e.NodeID] = true
		}
	}
	n := 0
	for _, names := range ids {
		for _, nodeIDs := range names {
			if len(names) > 1 || len(nodeIDs) > 1 {
				n++
				break
			}
		}
	}
	return n
}

// index holds the inputs by the keys cards are matched on.
type index struct {
	nodeName map[string]string // swarm node ID → host name
	// behind names the source, docker or consul, read last time, not
	// this one: Swarm's tasks and Consul's instances are then not
	// compared (no card is marked mismatched), since one side may have
	// changed unseen. Empty when both were read.
	behind string
	// factsName maps node identities (swarm node IDs) to node names, as
	// the node facts give them (Inputs.NodeNames).
	factsName map[string]string
	// sharedName holds, by name, the identities of a name several have,
	// swarm nodes' or facts' (nodeOf), in order: label tells their nodes
	// apart by ID, byName says a record naming the name only is theirs.
	sharedName map[string][]string
	service    map[string]SwarmService
	invTask    map[string][]inventory.Entry // by task ID
	invCtr     map[string][]inventory.Entry // by container ID
	instTask   map[string][]Instance        // by swarm task ID
	instCtr    map[string][]Instance        // by container ID
	task       map[string]SwarmTask
	// unreg holds the tasks the nodes' agents report they leave out of
	// Consul on purpose, by the report's swarm node ID and task ID: a
	// report speaks for its own node's tasks only.
	unreg map[string]unregistered.Task
}

func newIndex(in Inputs, inv []inventory.Entry) *index {
	ix := &index{
		nodeName: map[string]string{}, factsName: in.NodeNames, service: map[string]SwarmService{},
		invTask: map[string][]inventory.Entry{}, invCtr: map[string][]inventory.Entry{},
		instTask: map[string][]Instance{}, instCtr: map[string][]Instance{}, task: map[string]SwarmTask{},
		unreg: map[string]unregistered.Task{},
	}
	for _, r := range in.Unregistered {
		for _, t := range r.Tasks {
			ix.unreg[r.NodeID+"/"+t.TaskID] = t
		}
	}
	for _, source := range []string{"docker", "consul"} {
		if _, failed := in.Errors[source]; failed && ix.behind == "" {
			ix.behind = source
		}
	}
	for _, n := range in.Nodes {
		ix.nodeName[n.ID] = n.Hostname
	}
	ids := map[string]map[string]bool{} // by name
	for _, m := range []map[string]string{ix.nodeName, ix.factsName} {
		for id := range m {
			if name := ix.nodeOf(id); name != id {
				if ids[name] == nil {
					ids[name] = map[string]bool{}
				}
				ids[name][id] = true
			}
		}
	}
	ix.sharedName = map[string][]string{}
	for name, is := range ids {
		if len(is) > 1 {
			ix.sharedName[name] = slices.Sorted(maps.Keys(is))
		}
	}
	for _, s := range in.Services {
		ix.service[s.ID] = s
	}
	for _, t := range in.Tasks {
		ix.task[t.ID] = t
	}
	for _, e := range inv {
		if e.Task != "" {
			ix.invTask[e.Task] = append(ix.invTask[e.Task], e)
		}
		if e.ID != "" {
			ix.invCtr[e.ID] = append(ix.invCtr[e.ID], e)
		}
	}
	for _, i := range in.Instances {
		if t := i.Meta[register.MetaSwarmTask]; t != "" {
			ix.instTask[t] = append(ix.instTask[t], i)
		}
		if c := i.Meta[register.MetaContainerID]; c != "" {
			ix.instCtr[c] = append(ix.instCtr[c], i)
		}
	}
	return ix
}

func (ix *index) node(id string) string {
	if n, ok := ix.nodeName[id]; ok && n != "" {
		return n
	}
	return stringid.TruncateID(id)
}

// nodeOf names the node of identity id as `underlay ips` does: by its
// facts' name, else its swarm host name; id itself when neither is known.
func (ix *index) nodeOf(id string) string {
	return cmp.Or(ix.factsName[id], ix.nodeName[id], id)
}

// label names the node of identity id (nodeOf) where the page shows
// what it holds (ranges, blocks, shims, allocations, network reports),
// with id when other identities have its name: "n1 (swarm node ID)".
// known is false when no facts nor swarm node name id.
func (ix *index) label(id string) (name string, known bool) {
	name = ix.nodeOf(id)
	if name == id {
		return name, false
	}
	if ix.sharedName[name] != nil {
		return name + " (swarm node " + id + ")", true
	}
	return name, true
}

// stateLabel names the node of a network report: by its identity when
// known (label), else as the report names it.
func (ix *index) stateLabel(st netspec.NodeState) (name, id string) {
	if n, ok := ix.label(st.ID); ok && st.ID != "" {
		return n, st.ID
	}
	return st.Node, ""
}

// byName names a node a record knows by its name only (an inventory
// entry's): as it is, and when several identities have the name, with
// theirs, since it may be any one's.
func (ix *index) byName(name string) string {
	if ids := ix.sharedName[name]; ids != nil {
		return name + " (a name swarm nodes " + strings.Join(ids, ", ") + " have)"
	}
	return name
}

func (ix *index) serviceName(id string) string {
	if s, ok := ix.service[id]; ok {
		return s.Name
	}
	return stringid.TruncateID(id)
}

func sourceErrors(errs map[string]string, since map[string]time.Time) []SourceError {
	out := []SourceError{}
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		out = append(out, SourceError{Source: k, Error: cutError(errs[k]), Since: utc(since[k])})
	}
	return out
}

// visible reports whether a task belongs on the page: meant to run, or
// ended a short while ago.
func visible(t SwarmTask, now time.Time) bool {
	return t.DesiredState == "running" || now.Sub(t.Since) < RecentlyEnded
}

// cards makes every card, by swarm node ID; cards of no known node are
// unplaced. A card known by its node's name only (a Consul instance whose
// registration names no swarm node) goes to the node of that name; when
// several have it, to none: it is unplaced, with a problem naming them,
// rather than shown on a node that may not run it.
func cards(in Inputs, ix *index) (map[string][]Task, []Task) {
	byNode := map[string][]Task{}
	unplaced := []Task{}
	used := map[string]bool{} // Consul instance IDs matched to a card
	known, named := map[string]bool{}, map[string][]string{}
	for _, n := range in.Nodes {
		known[n.ID] = true
		named[n.Hostname] = append(named[n.Hostname], n.ID)
	}
	for _, ids := range named {
		slices.Sort(ids)
	}
	add := func(c Task) {
		id := c.NodeID
		if ids := named[c.Node]; !known[id] && len(ids) == 1 {
			id = ids[0]
		} else if !known[id] && len(ids) > 1 {
			c.Problems = append(c.Problems, fmt.Sprintf("its node is known by its name only, %s, which swarm nodes %s have: shown on neither", c.Node, strings.Join(ids, ", ")))
		}
		if known[id] && c.Node != "" {
			byNode[id] = append(byNode[id], c)
		} else {
			unplaced = append(unplaced, c)
		}
	}
	for _, t := range in.Tasks {
		if !visible(t, in.Now) {
			continue
		}
		c := taskCard(t, in.Now, ix)
		for _, i := range ix.instances(t) {
			used[i.Node+"/"+i.ID] = true
		}
		add(c)
	}
	for _, i := range in.Instances {
		if used[i.Node+"/"+i.ID] || i.Meta[register.MetaNode] == "" {
			continue // matched, or not registered by underlay
		}
		add(instanceCard(i, ix, in.Now))
	}
	for n := range byNode {
		sortCards(byNode[n])
	}
	sortCards(unplaced)
	return byNode, unplaced
}

// instances are the Consul instances of a task: by task ID, else by
// container ID.
func (ix *index) instances(t SwarmTask) []Instance {
	if is := ix.instTask[t.ID]; len(is) > 0 {
		return is
	}
	if t.ContainerID != "" {
		return ix.instCtr[t.ContainerID]
	}
	return nil
}

func (ix *index) entries(t SwarmTask) []inventory.Entry {
	if es := ix.invTask[t.ID]; len(es) > 0 {
		return es
	}
	if t.ContainerID != "" {
		return ix.invCtr[t.ContainerID]
	}
	return nil
}

func taskCard(t SwarmTask, now time.Time, ix *index) Task {
	c := Task{
		Kind: KindTask, ID: t.ID, Service: ix.serviceName(t.ServiceID), ServiceID: t.ServiceID, Slot: t.Slot,
		Node: ix.node(t.NodeID), Image: shortImage(t.Image), State: t.State, DesiredState: t.DesiredState,
		Message: cutError(cmp.Or(t.Err, t.Message)), Since: utc(t.Since), ContainerID: t.ContainerID,
		Addresses: []Address{}, Checks: []Check{}, Problems: []string{},
	}
	if t.NodeID == "" {
		c.Node = ""
	} else if ix.nodeName[t.NodeID] != "" {
		c.NodeID = t.NodeID
	}
	for _, e := range ix.entries(t) {
		c.Addresses = append(c.Addresses, Address{Network: e.Network, IP: e.IP, MAC: e.MAC})
		c.Container = e.Container
		if e.Duplicate != "" {
			c.Duplicate = true
			c.Problems = append(c.Problems, fmt.Sprintf("%s on %s: %s", e.IP, e.Network, e.Duplicate))
		}
	}
	insts := ix.instances(t)
	running := t.State == "running"
	switch {
	case len(insts) == 0:
		c.Health = HealthNotRegistered
		if why, ok := ix.leftOut(t); ok && running {
			c.Unregistered = why
		} else if running && now.Sub(t.Since) > RegisterGrace && ix.behind == "" {
			c.Mismatch = true
			c.Problems = append(c.Problems, "Swarm runs this task, but Consul does not list it")
		}
	default:
		applyInstances(&c, insts)
		if !running && ix.behind == "" {
			c.Mismatch = true
			c.Problems = append(c.Problems, fmt.Sprintf("Consul lists it (%s), but Swarm reports the task %s", insts[0].ID, t.State))
		}
	}
	return c
}

// leftOut says why the agent of t's node leaves t out of Consul on
// purpose, when that node's report lists it: by its node's swarm node
// ID, and with its container when both name one.
func (ix *index) leftOut(t SwarmTask) (string, bool) {
	if t.NodeID == "" {
		return "", false
	}
	u, ok := ix.unreg[t.NodeID+"/"+t.ID]
	if !ok || (t.ContainerID != "" && t.ContainerID != u.ContainerID) {
		return "", false
	}
	return cut(u.Reason, MaxEventMessage), true
}

// applyInstances sets a card's Consul side: health (the worst check over
// its instances), checks, and addresses when the inventory had none.
func applyInstances(c *Task, insts []Instance) {
	c.ConsulID = insts[0].ID
	c.Health = HealthPassing
	for _, i := range insts {
		for _, ch := range i.Checks {
			if ch.Status == HealthPassing {
				ch.Output = "" // the same on every card; only failures need theirs
			}
			// The container checked writes it, and Consul keeps up to its
			// check_output_max_size: on every card, in every snapshot. Its
			// name is whoever registered it's.
			ch.Output, ch.Name = cut(ch.Output, MaxEventMessage), cut(ch.Name, MaxEventMessage)
			c.Checks = append(c.Checks, ch)
			c.Health = worse(c.Health, ch.Status)
		}
	}
	if n := len(c.Checks); n > MaxCardChecks {
		// Those that need attention are kept.
		slices.SortStableFunc(c.Checks, func(a, b Check) int {
			return cmp.Compare(boolInt(a.Status == HealthPassing), boolInt(b.Status == HealthPassing))
		})
		c.Checks, c.ChecksOmitted = slices.Clip(c.Checks[:MaxCardChecks]), n-MaxCardChecks
	}
	if len(c.Addresses) == 0 {
		for _, i := range insts {
			if i.Address != "" && !slices.ContainsFunc(c.Addresses, func(a Address) bool { return a.IP == i.Address }) {
				c.Addresses = append(c.Addresses, Address{Network: i.Meta[register.MetaNetwork], IP: i.Address, MAC: i.Meta[register.MetaMAC]})
			}
		}
	}
	if c.Container == "" {
		c.Container = insts[0].Meta[register.MetaContainerName]
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// instanceCard is the card of a Consul instance no visible task matched.
func instanceCard(i Instance, ix *index, now time.Time) Task {
	c := Task{
		Kind: KindContainer, ID: i.Meta[register.MetaContainerID], Service: i.Service,
		Node: cmp.Or(i.Meta[register.MetaNode], i.Node), Image: shortImage(i.Meta[register.MetaImage]),
		State: "running", ContainerID: i.Meta[register.MetaContainerID],
		Addresses: []Address{}, Checks: []Check{}, Problems: []string{},
	}
	if slot, err := strconv.Atoi(i.Meta[register.MetaSwarmSlot]); err == nil {
		c.Slot = slot
	}
	if id := i.Meta[register.MetaSwarmNode]; ix.nodeName[id] != "" {
		// The agent registered it from its container's swarm labels.
		c.NodeID = id
	}
	for _, e := range ix.invCtr[c.ContainerID] {
		c.Addresses = append(c.Addresses, Address{Network: e.Network, IP: e.IP, MAC: e.MAC})
		c.Container = e.Container
		if e.Duplicate != "" {
			c.Duplicate = true
			c.Problems = append(c.Problems, fmt.Sprintf("%s on %s: %s", e.IP, e.Network, e.Duplicate))
		}
	}
	applyInstances(&c, []Instance{i})
	if id := i.Meta[register.MetaSwarmTask]; id != "" {
		c.Kind, c.ID, c.State = KindConsulOnly, id, "unknown"
		t, ok := ix.task[id]
		if ok {
			c.State, c.Since, c.ServiceID = t.State, utc(t.Since), t.ServiceID
		}
		switch {
		case ix.behind != "":
		case ok:
			c.Mismatch = true
			c.Problems = append(c.Problems, fmt.Sprintf("Consul lists it (%s), but Swarm reports the task %s", i.ID, t.State))
		default:
			c.Mismatch = true
			c.Problems = append(c.Problems, fmt.Sprintf("Consul lists it (%s), but Swarm knows no such task", i.ID))
		}
	}
	return c
}

// worse returns the worse of two health states.
func worse(a, b string) string {
	rank := func(s string) int {
		switch s {
		case HealthPassing:
			return 0
		case HealthWarning:
			return 1
		}
		return 2 // critical, or anything Consul may add
	}
	if rank(b) > rank(a) {
		if b != HealthPassing && b != HealthWarning {
			return HealthCritical
		}
		return b
	}
	return a
}

func sortCards(cs []Task) {
	slices.SortFunc(cs, func(a, b Task) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), cmp.Compare(a.Slot, b.Slot),
			cmp.Compare(stateRank(a.State), stateRank(b.State)), strings.Compare(a.ID, b.ID))
	})
}

func stateRank(s string) int {
	if s == "running" {
		return 0
	}
	return 1
}

// nodes are the swarm's nodes; shared is sharedNames(in.Nodes). It
// also gives the swarm node IDs of the reports under an ID (DoctorByID)
// that a node shows as its agent's.
func nodes(in Inputs, byNode map[string][]Task, shared map[string][]string) ([]Node, map[string]bool) {
	listed := map[string]bool{}
	for _, n := range in.Nodes {
		listed[n.ID] = true
	}
	named, byID := map[string][]AgentInput{}, map[string]AgentInput{}
	for _, a := range in.Agents {
		named[a.Node] = append(named[a.Node], a)
		if a.ID != "" {
			byID[a.ID] = a
		}
	}
	out, shown := make([]Node, 0, len(in.Nodes)), map[string]bool{}
	for _, n := range in.Nodes {
		agents := named[n.Hostname]
		if a, ok := byID[n.ID]; ok && a.Node != n.Hostname {
			// Its agent's --node is not its host name: the node is
			// known by its swarm node ID.
			agents = append([]AgentInput{a}, agents...)
		}
		a := agentOf(n, agents, listed)
		if a.DoctorByID && a.Doctor != nil {
			shown[a.ID] = true
		}
		doctor := doctorSummary(withWarnings(a.Doctor, a.Warnings))
		if ids := shared[n.Hostname]; ids != nil && !a.DoctorByID {
			// Published by name: it may be any of theirs, so it is no
			// heartbeat of this node's agent, and its version none of it.
			a.Doctor = nil
			if doctor != nil {
				doctor.SharedBy = slices.Clone(ids)
			}
		}
		node := Node{
			ID: n.ID, Name: n.Hostname, Role: n.Role, Leader: n.Leader, State: n.State, Availability: n.Availability,
			Addr: n.Addr, DockerVersion: n.EngineVersion, Message: cutError(n.Message),
			Agent: agentHealth(a, in.Now, in.AgentsUnread), Doctor: doctor, Tasks: byNode[n.ID],
		}
		// Facts not naming this node, taken by its name: under a name
		// other nodes have, they may be another node's agent's.
		node.Agent.NameOnly = shared[n.Hostname] != nil && node.Agent.State != AgentAbsent && a.ID != n.ID
		if node.Tasks == nil {
			node.Tasks = []Task{}
		}
		out = append(out, node)
	}
	slices.SortFunc(out, func(a, b Node) int { return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID)) })
	return out, shown
}

// agentOf is the agent of swarm node n among agents, those of its name
// and the one naming its ID: the one whose facts (or, with none, report)
// name n's ID; else the
// newest whose facts name no swarm node listed (an older agent's, naming
// none, or a former identity's), so that a node of a name another node's
// agent uses is not taken for that one's. A report alone under an ID
// nobody has (NoFacts, not listed) is no node's agent: it is among the
// cluster's problems (problems). With none, it has no heartbeat, and the
// name's doctor report and warnings.
func agentOf(n SwarmNode, agents []AgentInput, listed map[string]bool) AgentInput {
	var found, named bool
	out := AgentInput{Node: n.Hostname}
	for _, a := range agents {
		switch {
		case a.ID != "" && a.ID == n.ID:
			return a
		case a.NoFacts && !listed[a.ID]:
			// Anyone may write a report under a new ID naming any node:
			// taken by its name, it would stand in for that node's agent.
		case listed[a.ID]:
			if !found && !named {
				out, named = AgentInput{Node: a.Node, Warnings: a.Warnings}, true
				if !a.DoctorByID { // the name's, not that node's own
					out.Doctor = a.Doctor
				}
			}
		case !found || agentLatest(a).After(agentLatest(out)):
			out, found = a, true
		}
	}
	return out
}

// agentLatest is when a's agent last reported, by its own clock.
func agentLatest(a AgentInput) time.Time {
	if a.Doctor != nil && a.Doctor.At.After(a.FactsAt) {
		return a.Doctor.At
	}
	return a.FactsAt
}

// withWarnings is report r with the warnings ws among its results, each
// once (the node's own doctor may report it too); r when there are none.
// With no report, they are its only results. r is not changed: the inputs
// are kept as the last good answer of their source.
func withWarnings(r *DoctorReport, ws []DoctorResult) *DoctorReport {
	if len(ws) == 0 {
		return r
	}
	out := &DoctorReport{}
	if r != nil {
		*out = *r
		out.Results = slices.Clone(r.Results)
	}
	for _, w := range ws {
		if !slices.Contains(out.Results, w) {
			out.Results = append(out.Results, w)
		}
	}
	return out
}

// problems are the warnings of the agents of nodes the page has no column
// for (a misfiled facts document naming no node; an agent naming a swarm
// node listed is on that node's), by node name, each once,
// and the failed doctor/report checks (a report refused, naming its key
// and the command that deletes it) of the reports no node shows: of a
// node the page has no column for, or under a swarm node ID the swarm
// does not list (a key naming no node: the ID layout's prefix itself, a
// nested key, a forged or a former ID); and, for a report read as
// written under an ID nobody has (no facts name it, the swarm does not
// list it), a warning naming its key and the node it names
// (unownedReport). A report under an ID a node shows as its agent's
// (onNodes: a former identity's, whose facts name the node) is that
// node's only. Otherwise the operator would never learn of them.
func problems(in Inputs, onNodes map[string]bool) []DoctorResult {
	column, listed := map[string]bool{}, map[string]bool{}
	for _, n := range in.Nodes {
		column[n.Hostname], listed[n.ID] = true, true
	}
	agents := slices.Clone(in.Agents)
	slices.SortStableFunc(agents, func(a, b AgentInput) int { return strings.Compare(a.Node, b.Node) })
	out := []DoctorResult{}
	add := func(r DoctorResult) {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	for _, a := range agents {
		// On its node's column: by its swarm node ID, or by its name.
		shown := column[a.Node] || a.ID != "" && listed[a.ID]
		if !shown {
			for _, w := range a.Warnings {
				add(w)
			}
		}
		if a.Doctor == nil || shown && !(a.DoctorByID && !listed[a.ID] && !onNodes[a.ID]) {
			continue
		}
		refused := false
		for _, r := range a.Doctor.Results {
			if r.Check == "doctor/report" && r.Status == "fail" {
				add(r)
				refused = true
			}
		}
		if a.NoFacts && !listed[a.ID] && !refused {
			add(unownedReport(a))
		}
	}
	return out
}

// badUnregistered are the nodes' reports of unregistered tasks that
// readers refuse, as problems with their fix: their tasks are shown as
// without a report.
func badUnregistered(bad []unregistered.BadReport) []DoctorResult {
	out := make([]DoctorResult, 0, len(bad))
	for _, b := range bad {
		out = append(out, DoctorResult{Check: "unregistered/report", Status: "warn",
			Message: cut(b.Problem, MaxEventMessage) + " (its node's tasks Consul does not list are shown as mismatches)", Fix: b.Fix})
	}
	return out
}

// unownedReport is the warning of a's doctor report, under a swarm node
// ID nobody has (a.NoFacts, not listed): the report is read as written,
// but is no node's.
func unownedReport(a AgentInput) DoctorResult {
	key := a.Doctor.Key
	r := DoctorResult{Check: "doctor/report", Status: "warn",
		Message: fmt.Sprintf("the doctor report under %q names node %s and swarm node %q, which the swarm does not list and no agent's facts name: "+
			"it is shown on no node (that node left the swarm, or the report is forged)", key, a.Node, a.ID)}
	if key != "" {
		var why string
		r.Fix, why = shellword.KVRemoval(key, " (an agent that still runs publishes its node's report again within its period)")
		r.Message += why
	}
	return r
}

// agentHealth judges a node's agent by its latest report: the node facts
// it publishes every network sync, or its doctor report. Their stamps are
// the agent's clock; when the server watched them, the report's age is
// counted from when it first saw it, by its own clock (HeardAt). While
// the reports cannot be read (unread), and after, until the agent's period
// has passed without a report since they could, the agent is unknown,
// with the state it had when the reads began to fail: the dashboard's
// outage is no agent's.
func agentHealth(a AgentInput, now time.Time, unread Outage) Agent {
	ag, last, window := judgeAgent(a, now)
	switch {
	case unread.From.IsZero():
		return ag
	case unread.To.IsZero(), ag.State == AgentStale && last.Before(unread.To) && now.Sub(unread.To) <= window:
		was, _, _ := judgeAgent(a, unread.From)
		ag.State, ag.LastState = AgentUnknown, was.State
	}
	return ag
}

// judgeAgent is a's agent as of now by its latest report, heard at last;
// it turns stale when window passes without one.
func judgeAgent(a AgentInput, now time.Time) (ag Agent, last time.Time, window time.Duration) {
	last, every := a.FactsAt, time.Duration(0)
	var version string
	if d := a.Doctor; d != nil {
		if d.At.After(last) {
			last = d.At
		}
		every, version = d.Every, d.Version
	}
	window = max(agentStaleAfter, 2*every)
	if last.IsZero() {
		return Agent{State: AgentAbsent}, last, window
	}
	if !a.HeardAt.IsZero() {
		last = a.HeardAt
	}
	st := AgentUp
	if now.Sub(last) > window {
		st = AgentStale
	}
	return Agent{State: st, LastSeen: utc(last), Version: version}, last, window
}

func doctorSummary(r *DoctorReport) *Doctor {
	if r == nil {
		return nil
	}
	// The results the agent left out are counted, and its problems among
	// those not listed.
	d := &Doctor{At: utc(r.At), Problems: []DoctorResult{}, OK: r.OmittedOK, Warn: r.OmittedWarn, Fail: r.OmittedFail,
		ProblemsOmitted: r.OmittedWarn + r.OmittedFail}
	var warns []DoctorResult
	for _, res := range r.Results {
		c := res.counts()
		d.OK, d.Warn, d.Fail = d.OK+c.OK, d.Warn+c.Warn, d.Fail+c.Fail
		listed := 1
		switch res.Status {
		case "ok":
			listed = 0
		case "warn":
			warns = append(warns, res)
		default:
			d.Problems = append(d.Problems, res)
		}
		// A row standing for others is listed as one of their problems.
		d.ProblemsOmitted += max(c.Warn+c.Fail-listed, 0)
	}
	d.Problems = append(d.Problems, warns...)
	return d
}

// counts counts r by status: as the results it stands for, when it does
// (Stands); a status neither ok nor warn as a failure.
func (r DoctorResult) counts() DoctorCounts {
	switch {
	case r.Stands != nil:
		return *r.Stands
	case r.Status == "ok":
		return DoctorCounts{OK: 1}
	case r.Status == "warn":
		return DoctorCounts{Warn: 1}
	}
	return DoctorCounts{Fail: 1}
}

func services(in Inputs, ix *index) []Service {
	autoscaled := map[string]scale.ServiceInfo{}
	for _, si := range in.Autoscaled {
		autoscaled[si.Service] = si
	}
	type counts struct {
		running, passing, global int
		networks                 map[string]bool
	}
	per := map[string]*counts{}
	for _, t := range in.Tasks {
		c := per[t.ServiceID]
		if c == nil {
			c = &counts{networks: map[string]bool{}}
			per[t.ServiceID] = c
		}
		if t.DesiredState == "running" {
			c.global++
		}
		if t.State != "running" || t.DesiredState != "running" {
			continue
		}
		c.running++
		if h := healthOf(ix.instances(t)); h == HealthPassing {
			c.passing++
		}
		for _, e := range ix.entries(t) {
			c.networks[e.Network] = true
		}
	}
	out := make([]Service, 0, len(in.Services))
	for _, s := range in.Services {
		c := per[s.ID]
		if c == nil {
			c = &counts{networks: map[string]bool{}}
		}
		// A list even when empty (slices.Sorted's is nil, null in JSON):
		// the page reads its length.
		nets := slices.AppendSeq(make([]string, 0, len(c.networks)), maps.Keys(c.networks))
		slices.Sort(nets)
		svc := Service{
			ID: s.ID, Name: s.Name, Mode: "replicated", Image: shortImage(s.Image), Desired: s.Replicas,
			Running: c.running, Passing: c.passing, Networks: nets,
			Replicas: []ReplicaPoint{}, Metrics: []MetricPoint{}, Decisions: []scale.Record{},
		}
		if s.Global {
			svc.Mode, svc.Desired = "global", c.global
		}
		if si, ok := autoscaled[s.Name]; ok {
			p := si.Policy
			svc.Autoscaled, svc.Policy, svc.PolicyError = true, &p, cutError(si.Error)
		}
		history := in.History[s.Name]
		svc.Decisions = lastDecisions(history)
		svc.BadRecords = cutBadRecords(in.BadHistory[s.Name])
		svc.Metrics = metricPoints(history)
		svc.Replicas = replicaPoints(history, in.Samples[s.Name])
		out = append(out, svc)
	}
	slices.SortFunc(out, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// healthOf is the worst health over instances; "not registered" when none.
func healthOf(insts []Instance) string {
	if len(insts) == 0 {
		return HealthNotRegistered
	}
	h := HealthPassing
	for _, i := range insts {
		for _, ch := range i.Checks {
			h = worse(h, ch.Status)
		}
	}
	return h
}

// lastDecisions are the newest MaxDecisions records, newest first.
func lastDecisions(history []scale.Record) []scale.Record {
	out := slices.Clone(history)
	slices.Reverse(out)
	if len(out) > MaxDecisions {
		out = out[:MaxDecisions]
	}
	for i := range out {
		out[i].Time = utc(out[i].Time)
		if slices.ContainsFunc(out[i].Metrics, func(m scale.MetricValue) bool { return len(m.Error) > MaxEventMessage }) {
			out[i].Metrics = slices.Clone(out[i].Metrics) // the history's own
			for j := range out[i].Metrics {
				out[i].Metrics[j].Error = cutError(out[i].Metrics[j].Error)
			}
		}
	}
	if out == nil {
		out = []scale.Record{}
	}
	return out
}

// cutError is an error text of a source — a client's error, or a text of
// a document or record read through one — as the snapshot holds it: cut
// at MaxEventMessage, as the events' fields are. Docker, Consul and what
// others wrote there make it any size, and every page load carries it.
func cutError(s string) string { return cut(s, MaxEventMessage) }

// cutBadRecords are bad, their errors cut (cutError); bad itself is not
// changed.
func cutBadRecords(bad []scale.BadRecord) []scale.BadRecord {
	if !slices.ContainsFunc(bad, func(b scale.BadRecord) bool { return len(b.Error) > MaxEventMessage }) {
		return bad
	}
	out := slices.Clone(bad)
	for i := range out {
		out[i].Error = cutError(out[i].Error)
	}
	return out
}

// metricPoints are the metric values decisions were made on, oldest first.
func metricPoints(history []scale.Record) []MetricPoint {
	out := []MetricPoint{}
	for _, r := range history {
		for _, m := range r.Metrics {
			if m.Error == "" {
				out = append(out, MetricPoint{Time: utc(r.Time), Name: m.Name, Value: m.Value, Target: m.Target})
			}
		}
	}
	return lastN(out, MaxPoints)
}

// replicaPoints merges the applied decisions of the history with the
// server's samples, oldest first. History points know only the desired
// count (Running -1).
func replicaPoints(history []scale.Record, samples []ReplicaSample) []ReplicaPoint {
	out := []ReplicaPoint{}
	for _, r := range history {
		if r.Refused || r.DryRun || r.From == r.To {
			continue
		}
		at := utc(r.Time)
		out = append(out, ReplicaPoint{Time: at, Desired: r.From, Running: -1}, ReplicaPoint{Time: at, Desired: r.To, Running: -1})
	}
	if len(samples) > 0 {
		// Samples are exact from their first one on: history points after it
		// would only repeat them.
		first := samples[0].Time
		out = slices.DeleteFunc(out, func(p ReplicaPoint) bool { return !p.Time.Before(first) })
		for _, s := range samples {
			out = append(out, ReplicaPoint{Time: utc(s.Time), Desired: s.Desired, Running: s.Running})
		}
	}
	return lastN(out, MaxPoints)
}

func lastN[T any](s []T, n int) []T {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func networks(in Inputs, inv []inventory.Entry, ix *index) []Network {
	out := make([]Network, 0, len(in.Networks))
	for _, n := range in.Networks {
		s := n.Spec
		nw := Network{
			Name: s.Name, Subnet: s.Subnet.String(), Gateway: s.Gateway.String(), Parent: s.Parent,
			IPAM: string(s.IPAM), Deleting: s.Deleting,
		}
		if s.IPRange.IsValid() {
			nw.IPRange = s.IPRange.String()
		}
		if len(s.Aux) > 0 {
			nw.Aux = map[string]string{}
			for k, v := range s.Aux {
				nw.Aux[k] = v.String()
			}
		}
		if s.IPv6Subnet.IsValid() {
			nw.IPv6Subnet = s.IPv6Subnet.String()
		}
		nw.Nodes = networkNodes(s, n.States, ix)
		slices.SortFunc(nw.Nodes, func(a, b NetworkNode) int {
			return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.ID, b.ID))
		})
		if nw.Refused = cutError(n.Refused); nw.Refused != "" {
			nw.Pool = emptyPool() // the IPAM plugin serves none of it
		} else {
			es := inventory.Filter(inv, s.Name, "")
			nw.Pool = buildPool(n, es, ix, in.Now)
			nw.IPv6Pool = buildPool6(n, es, ix, in.Now)
			nw.Outside = outside(s, es, ix)
		}
		out = append(out, nw)
	}
	slices.SortFunc(out, func(a, b Network) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// outside lists the entries of es, network s's, whose address is in none
// of s's subnets (inventory.Outside), in address order: no map lays them
// out, and left out, the stale or forged inventory that lists them would
// not show.
func outside(s netspec.Spec, es []inventory.Entry, ix *index) []PoolAddress {
	var out []PoolAddress
	for _, e := range es {
		if inventory.Outside(e, []netip.Prefix{s.Subnet, s.IPv6Subnet}) {
			pa := ix.heldAddress(e)
			pa.IP, pa.State = e.IP, StateOutside
			out = append(out, pa)
		}
	}
	slices.SortFunc(out, func(x, y PoolAddress) int {
		return cmp.Or(inventory.CompareIP(x.IP, y.IP), strings.Compare(x.Holder, y.Holder))
	})
	return out
}

// networkNodes are the nodes' reports on network s, with the IPv6 range
// of each node that holds one of its own (netspec.IPv6Ranges, as network
// inspect shows it).
func networkNodes(s netspec.Spec, states []netspec.NodeState, ix *index) []NetworkNode {
	ranges := make([]netip.Prefix, len(states))
	for i, st := range states {
		ranges[i] = st.Range
	}
	v6 := netspec.IPv6Ranges(s, ranges)
	out := make([]NetworkNode, 0, len(states))
	for i, st := range states {
		nn := NetworkNode{State: st.State, Error: cutError(st.Error)}
		nn.Node, nn.ID = ix.stateLabel(st)
		if st.Range.IsValid() {
			nn.Range = st.Range.String()
		}
		if v6[i].IsValid() {
			nn.IPv6Range = v6[i].String()
		}
		if st.Shim.IsValid() {
			nn.Shim = st.Shim.String()
		}
		if st.Shim6.IsValid() {
			nn.Shim6 = st.Shim6.String()
		}
		out = append(out, nn)
	}
	return out
}

// heldAddress is the map entry of an inventory entry's address, state
// and address left to the caller.
func (ix *index) heldAddress(e inventory.Entry) PoolAddress {
	_, id := ix.entryNode(e)
	return PoolAddress{Holder: ix.holder(e), Node: e.Node, NodeID: id, Task: e.Task, MAC: e.MAC, Since: utc(e.Since)}
}

// entryNode names the node of an inventory entry: by its swarm node ID
// when it has one the dashboard knows (label: with the ID when another
// node has its name), else by its name only (byName: an older agent's
// entries carry no ID), with no ID.
func (ix *index) entryNode(e inventory.Entry) (name, id string) {
	if e.NodeID != "" {
		if name, known := ix.label(e.NodeID); known {
			return name, e.NodeID
		}
	}
	return ix.byName(e.Node), ""
}

// holder names what holds an inventory entry's address: service.slot and
// container, on its node.
func (ix *index) holder(e inventory.Entry) string {
	node, _ := ix.entryNode(e)
	if e.LeftOut {
		return "not reported by " + node + " (its inventory is full): the address only"
	}
	if e.Container == "" && e.ID == "" {
		// A pool's allocation (clashes).
		switch e.State {
		case inventory.StateShim:
			return "host shim of " + node
		case inventory.StateSpare:
			return "spare of " + node
		}
		return "allocated to " + node
	}
	name := e.Container
	if e.Service != "" {
		name = e.Service
		if e.Slot != "" {
			name += "." + e.Slot
		}
		name += " (" + e.Container + ")"
	}
	return name + " on " + node
}

func summarize(s Snapshot) Summary {
	sum := Summary{Nodes: len(s.Nodes), Services: len(s.Services)}
	count := func(ts []Task) {
		for _, t := range ts {
			if t.Kind == KindTask {
				sum.Tasks++
			}
			if t.State == "running" && t.Kind != KindConsulOnly {
				sum.Running++
				if t.Health == HealthPassing {
					sum.Passing++
				}
			}
			if t.Mismatch {
				sum.Mismatches++
			}
		}
	}
	for _, n := range s.Nodes {
		count(n.Tasks)
		// A report several nodes show (SharedBy) is counted once.
		if n.Doctor != nil && (n.Doctor.SharedBy == nil || n.Doctor.SharedBy[0] == n.ID) {
			sum.DoctorFailures += n.Doctor.Fail
		}
	}
	count(s.Unplaced)
	return sum
}

// shortImage drops the digest Swarm pins images with.
func shortImage(ref string) string {
	if i := strings.Index(ref, "@sha256:"); i >= 0 {
		return ref[:i]
	}
	return ref
}

// utc is t in UTC as the snapshot carries it, or the zero time (unknown)
// when JSON cannot carry it: a year past 9999 or before 0 in UTC. Stamps
// come from documents any agent may write (an offset can carry one read
// as 9999-12-31 past the year's end), and one the encoder refuses would
// fail the whole snapshot, every node's, not only its own.
func utc(t time.Time) time.Time {
	u := t.UTC()
	if y := u.Year(); y < 0 || y > 9999 {
		return time.Time{}
	}
	return u
}
