package dashboard

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/pkg/stringid"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/termtext"
)

// Event kinds.
const (
	EventSource       = "source"
	EventNode         = "node"
	EventDoctor       = "doctor"
	EventScale        = "scale"
	EventTask         = "task"
	EventRegistration = "registration"
	EventHealth       = "health"
	EventAllocation   = "allocation"
)

// Diff lists what changed from old to cur as events: sources lost and
// back, node and agent states, doctor checks failing and passing again,
// scaling decisions, tasks started, changed and gone, registrations,
// health changes and addresses allocated, changed and released. It is
// pure; Seq is left to the server. From no snapshot (old nil), nothing
// changed.
func Diff(old, cur *Snapshot) []Event {
	if old == nil || cur == nil {
		return nil
	}
	d := differ{at: cur.GeneratedAt}
	d.sources(old.Sources, cur.Sources)
	d.nodes(old.Nodes, cur.Nodes)
	d.problems("cluster", "", old.Problems, cur.Problems)
	d.decisions(old.Services, cur.Services)
	d.cards(allCards(old), allCards(cur))
	d.pools(old.Networks, cur.Networks)
	return d.out
}

// MaxEventMessage bounds an event's message, and each name it carries
// (node, service, address), in bytes: what it reports comes from
// documents any agent may write, and registrations in Consul's catalog,
// and the server keeps EventBacklog events and sends them to every page
// that connects.
const MaxEventMessage = 1024

type differ struct {
	at  time.Time
	out []Event
}

func (d *differ) add(e Event) {
	if e.Time.IsZero() {
		e.Time = d.at
	}
	e.Message = cut(e.Message, MaxEventMessage)
	e.Node, e.Service, e.IP = cut(e.Node, MaxEventMessage), cut(e.Service, MaxEventMessage), cut(e.IP, MaxEventMessage)
	d.out = append(d.out, e)
}

// cut is s when it has at most n bytes, else as much of it as fits in n
// bytes with "…", cut as termtext.Head cuts.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	return termtext.Head(s, n-len(mark)) + mark
}

func (d *differ) sources(old, cur []SourceError) {
	was := map[string]string{}
	for _, s := range old {
		was[s.Source] = s.Error
	}
	now := map[string]bool{}
	for _, s := range cur {
		now[s.Source] = true
		if _, ok := was[s.Source]; !ok {
			d.add(Event{Kind: EventSource, Message: fmt.Sprintf("%s cannot be read: %s (showing what it returned last)", s.Source, s.Error)})
		}
	}
	for _, s := range old {
		if !now[s.Source] {
			d.add(Event{Kind: EventSource, Message: s.Source + " can be read again"})
		}
	}
}

// agentChange is the change of an agent's state worth an event, none when
// from == to: an agent turning unknown is the dashboard's outage, which
// the sources' event tells once for every agent, so its state is compared
// with the one it had before.
func agentChange(old, cur Agent) (from, to string) {
	from, to = old.State, cur.State
	if from == AgentUnknown {
		from = old.LastState
	}
	if to == AgentUnknown {
		return from, from
	}
	return from, to
}

func (d *differ) nodes(old, cur []Node) {
	was := map[string]Node{}
	for _, n := range old {
		was[n.ID] = n
	}
	label := nodeLabels(old, cur)
	seen := map[string]bool{}
	for _, n := range cur {
		seen[n.ID] = true
		name := label(n)
		o, ok := was[n.ID]
		if !ok {
			d.add(Event{Kind: EventNode, Node: n.Name, Message: fmt.Sprintf("node %s joined the swarm (%s, %s)", name, n.Role, n.State)})
			continue
		}
		if o.State != n.State || o.Availability != n.Availability || o.Role != n.Role {
			d.add(Event{Kind: EventNode, Node: n.Name, Message: fmt.Sprintf("node %s: %s → %s", name, nodeDesc(o), nodeDesc(n))})
		}
		if from, to := agentChange(o.Agent, n.Agent); from != to {
			d.add(Event{Kind: EventNode, Node: n.Name, Message: fmt.Sprintf("node %s: underlay agent %s → %s", name, from, to)})
		}
		switch ids := sharedBy(n.Doctor); {
		case ids == nil:
			d.doctor(n.Name, name, o.Doctor, n.Doctor)
		case ids[0] == n.ID:
			// The name's report, which every node of the name shows: told
			// once, as the name's.
			d.doctor(n.Name, n.Name+" (the report of the name, which swarm nodes "+strings.Join(ids, ", ")+" have)", o.Doctor, n.Doctor)
		}
	}
	for _, n := range old {
		if !seen[n.ID] {
			d.add(Event{Kind: EventNode, Node: n.Name, Message: fmt.Sprintf("node %s left the swarm", label(n))})
		}
	}
}

// sharedBy is the nodes a doctor report is shown on (Doctor.SharedBy),
// nil when it is one node's.
func sharedBy(d *Doctor) []string {
	if d == nil {
		return nil
	}
	return d.SharedBy
}

// nodeLabels names a node in events: by its name, and its swarm node ID
// too when another node of old or cur has the same name.
func nodeLabels(old, cur []Node) func(Node) string {
	ids := map[string]map[string]bool{}
	for _, n := range slices.Concat(old, cur) {
		if ids[n.Name] == nil {
			ids[n.Name] = map[string]bool{}
		}
		ids[n.Name][n.ID] = true
	}
	return func(n Node) string {
		if len(ids[n.Name]) > 1 {
			return n.Name + " (swarm node " + n.ID + ")"
		}
		return n.Name
	}
}

// doctor reports checks that started or stopped failing or warning on
// node, named label in the messages; none stopped when its report is
// gone.
func (d *differ) doctor(node, label string, old, cur *Doctor) {
	if cur == nil {
		return
	}
	var was []DoctorResult
	if old != nil {
		was = old.Problems
	}
	d.problems("doctor on "+label, node, was, cur.Problems)
}

// problems reports the problems that are new or changed in cur, and those
// gone from it, each line starting with what.
func (d *differ) problems(what, node string, old, cur []DoctorResult) {
	byCheck := func(ps []DoctorResult) map[string]DoctorResult {
		m := map[string]DoctorResult{}
		for _, p := range ps {
			m[p.Check] = p
		}
		return m
	}
	was, now := byCheck(old), byCheck(cur)
	for _, k := range slices.Sorted(maps.Keys(now)) {
		p := now[k]
		if o, ok := was[k]; ok && o.Status == p.Status {
			continue
		}
		msg := fmt.Sprintf("%s: %s %s: %s", what, p.Check, p.Status, p.Message)
		if why := fixUnshown(p.Fix); p.Fix != "" && why == "" {
			msg += " — fix: " + p.Fix
		} else if p.Fix != "" {
			msg += " (" + why + ")"
		}
		d.add(Event{Kind: EventDoctor, Node: node, Message: msg})
	}
	for _, k := range slices.Sorted(maps.Keys(was)) {
		if _, ok := now[k]; !ok {
			d.add(Event{Kind: EventDoctor, Node: node, Message: fmt.Sprintf("%s: %s ok again", what, k)})
		}
	}
}

// decisions reports the records that are new in cur's histories.
func (d *differ) decisions(old, cur []Service) {
	key := func(r scale.Record) string {
		return fmt.Sprintf("%s|%s|%d", r.Service, r.Time.Format(time.RFC3339Nano), r.Seq)
	}
	was := map[string]bool{}
	for _, s := range old {
		for _, r := range s.Decisions {
			was[key(r)] = true
		}
	}
	for _, s := range cur {
		for i := len(s.Decisions) - 1; i >= 0; i-- { // oldest first
			r := s.Decisions[i]
			if was[key(r)] {
				continue
			}
			d.add(Event{Kind: EventScale, Time: r.Time, Service: s.Name, Message: decisionText(r)})
		}
	}
}

// decisionText says what a decision did, and why, and who asked.
func decisionText(r scale.Record) string {
	var what string
	switch {
	case r.Refused:
		what = fmt.Sprintf("%s %s refused (%s)", r.Service, r.Direction, r.Reason)
	case r.DryRun:
		what = fmt.Sprintf("%s %s %d → %d (dry run, not applied)", r.Service, r.Direction, r.From, r.To)
	default:
		what = fmt.Sprintf("%s %s %d → %d", r.Service, r.Direction, r.From, r.To)
	}
	if r.Why != "" {
		what += ": " + r.Why
	}
	if r.Source != "" {
		what += " — asked by " + r.Source
	}
	return what
}

// allCards lists a snapshot's cards by node and ID.
func allCards(s *Snapshot) map[string]Task {
	out := map[string]Task{}
	for _, n := range s.Nodes {
		for _, t := range n.Tasks {
			out[t.Kind+"|"+t.ID] = t
		}
	}
	for _, t := range s.Unplaced {
		out[t.Kind+"|"+t.ID] = t
	}
	return out
}

func (d *differ) cards(old, cur map[string]Task) {
	for _, k := range slices.Sorted(maps.Keys(cur)) {
		t := cur[k]
		o, ok := old[k]
		switch {
		case !ok:
			d.add(Event{Kind: EventTask, Node: t.Node, Service: t.Service, IP: firstIP(t),
				Message: fmt.Sprintf("%s %s on %s%s", cardName(t), t.State, orNone(t.Node), ips(t))})
		case o.State != t.State || o.Node != t.Node:
			msg := fmt.Sprintf("%s on %s: %s → %s", cardName(t), orNone(t.Node), o.State, t.State)
			if t.Message != "" && t.Message != o.Message {
				msg += " (" + t.Message + ")"
			}
			d.add(Event{Kind: EventTask, Node: t.Node, Service: t.Service, IP: firstIP(t), Message: msg})
		}
		if !ok {
			continue
		}
		switch {
		case o.Health == t.Health:
		case o.Health == HealthNotRegistered:
			d.add(Event{Kind: EventRegistration, Node: t.Node, Service: t.Service, IP: firstIP(t),
				Message: fmt.Sprintf("%s registered in Consul as %s%s, %s", cardName(t), t.ConsulID, ips(t), t.Health)})
		case t.Health == HealthNotRegistered:
			d.add(Event{Kind: EventRegistration, Node: t.Node, Service: t.Service, IP: firstIP(o),
				Message: fmt.Sprintf("%s deregistered from Consul (was %s)", cardName(t), o.ConsulID)})
		default:
			d.add(Event{Kind: EventHealth, Node: t.Node, Service: t.Service, IP: firstIP(t),
				Message: fmt.Sprintf("%s%s: %s → %s%s", cardName(t), ips(t), o.Health, t.Health, failingOutput(t))})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(old)) {
		if _, ok := cur[k]; !ok {
			t := old[k]
			d.add(Event{Kind: EventTask, Node: t.Node, Service: t.Service, IP: firstIP(t),
				Message: fmt.Sprintf("%s gone from %s (was %s)", cardName(t), orNone(t.Node), t.State)})
		}
	}
}

// pools reports the addresses of the networks' pools, of both families,
// allocated, changed and freed.
func (d *differ) pools(old, cur []Network) {
	type key struct{ network, ip string }
	was := map[key]PoolAddress{}
	for _, n := range old {
		for _, a := range poolAddresses(n) {
			was[key{n.Name, a.IP}] = a
		}
	}
	now := map[key]bool{}
	for _, n := range cur {
		for _, a := range poolAddresses(n) {
			k := key{n.Name, a.IP}
			now[k] = true
			o, ok := was[k]
			switch {
			case !ok:
				d.add(Event{Kind: EventAllocation, Node: a.Node, IP: a.IP, Message: fmt.Sprintf("%s/%s %s: %s", n.Name, a.IP, a.State, a.Holder)})
			case o.State != a.State || o.Task != a.Task:
				d.add(Event{Kind: EventAllocation, Node: a.Node, IP: a.IP, Message: fmt.Sprintf("%s/%s %s → %s: %s", n.Name, a.IP, o.State, a.State, a.Holder)})
			}
		}
	}
	for _, n := range old {
		for _, a := range poolAddresses(n) {
			if !now[key{n.Name, a.IP}] {
				d.add(Event{Kind: EventAllocation, Node: a.Node, IP: a.IP, Message: fmt.Sprintf("%s/%s free again (was %s: %s)", n.Name, a.IP, a.State, a.Holder)})
			}
		}
	}
}

// poolAddresses are the addresses of n's pools that are not free: the
// IPv4 pool's, then the IPv6 one's.
func poolAddresses(n Network) []PoolAddress {
	if n.IPv6Pool == nil {
		return n.Pool.Addresses
	}
	return slices.Concat(n.Pool.Addresses, n.IPv6Pool.Addresses)
}

// cardName is "service.slot" (or the service and a short ID).
func cardName(t Task) string {
	if t.Slot > 0 {
		return fmt.Sprintf("%s.%d", t.Service, t.Slot)
	}
	return t.Service + " " + stringid.TruncateID(t.ID)
}

func ips(t Task) string {
	if len(t.Addresses) == 0 {
		return ""
	}
	var s []string
	for _, a := range t.Addresses {
		s = append(s, a.IP)
	}
	return " (" + strings.Join(s, ", ") + ")"
}

func firstIP(t Task) string {
	if len(t.Addresses) == 0 {
		return ""
	}
	return t.Addresses[0].IP
}

func failingOutput(t Task) string {
	for _, c := range t.Checks {
		if c.Status != HealthPassing && c.Output != "" {
			return ": " + cut(c.Output, 160)
		}
	}
	return ""
}

func orNone(node string) string {
	if node == "" {
		return "no node"
	}
	return node
}

// nodeDesc is a node's role, state and availability.
func nodeDesc(n Node) string {
	var parts []string
	for _, p := range []string{n.Role, n.State, n.Availability} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}
