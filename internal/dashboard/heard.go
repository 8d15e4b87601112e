package dashboard

import (
	"slices"
	"time"

	"github.com/underlay/underlay/internal/netspec"
)

// hearAgents sets each agent's HeardAt: when the dashboard's clock first
// saw the stamp of its latest report, facts or doctor (netspec.Hear: an
// agent whose clock is behind would otherwise read as stale while it
// reports, and a dead one whose clock was ahead as up for as long), by
// node name and swarm node ID: two hosts' agents may use one name. The
// doctor report of a name several swarm nodes have (shared, sharedNames)
// is no heartbeat when an older agent published it by name
// (!DoctorByID): it may be either's. prev
// is what the last refresh heard; it returns what this one heard.
func hearAgents(agents []AgentInput, shared map[string][]string, prev map[string]netspec.Heard, now time.Time) map[string]netspec.Heard {
	next := make(map[string]netspec.Heard, len(agents))
	for i := range agents {
		a := &agents[i]
		latest := a.FactsAt
		if a.Doctor != nil && a.Doctor.At.After(latest) && (shared[a.Node] == nil || a.DoctorByID) {
			latest = a.Doctor.At
		}
		if latest.IsZero() {
			continue // never reported: absent
		}
		key := a.Node + "\x00" + a.ID
		was, seen := prev[key]
		h := netspec.Hear(was, seen, latest, now)
		next[key] = h
		a.HeardAt = h.At
	}
	return next
}

// sharedNames are, by host name, the IDs of the swarm nodes nodes lists
// under a name several have, in order.
func sharedNames(nodes []SwarmNode) map[string][]string {
	ids := map[string][]string{}
	for _, n := range nodes {
		ids[n.Hostname] = append(ids[n.Hostname], n.ID)
	}
	for name, is := range ids {
		if len(is) < 2 {
			delete(ids, name)
			continue
		}
		slices.Sort(is)
	}
	return ids
}
