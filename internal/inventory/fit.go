package inventory

import (
	"cmp"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/termtext"
)

// maxNameBytes is how long a container, service, slot or task name of an
// entry stays in an inventory fit shortens: the names Docker and swarm
// give are far shorter (a service's 63 bytes, a task container's about
// 100); only a label set by hand on a plain container is longer, and of
// any size.
const maxNameBytes = 256

// fitted is what fit did to a node's inventory.
type fitted struct {
	// leftOut are the entries left out, in fitOrder's order: listed by
	// address only (Entry.LeftOut), or, the last unlisted of them, not
	// at all.
	leftOut []Entry
	// shortened counts the entries whose names were shortened.
	shortened int
	// unlisted counts the entries of leftOut not listed even by address.
	unlisted int
}

// unlistedRoom is what the count of unlisted entries adds to the entry
// that carries it, at most: ,"unlisted":N.
const unlistedRoom = len(`,"unlisted":`) + 20

// fit brings es, when encoded above Consul's value limit
// (kvstore.MaxValueSize: Consul refuses it, and the node's rows would
// stay stale), under it. It first shortens the names above maxNameBytes,
// which loses no address; then, while es is still above the limit, it
// leaves out the fewest entries in fitOrder's order, each listed by its
// address only (leftOutEntry), so that `underlay ips` shows its address
// as not reported, not as a pool's leak. Past a few thousand, even those
// are above the limit: the last of them in fitOrder's order are left out
// too, and counted on the first kept (Entry.Unlisted). It returns the
// entries, in their order, each left out where it was.
//
// Fitting one key was chosen over splitting the inventory across keys:
// the agents' ACL policy grants each node its one key
// (deploy/nodepolicy.go), which `node rm` deletes, and readers of every
// version take each key under KVPrefix for a node's whole inventory
// (an older reader ignores left_out and unlisted: it lists a left-out
// address as in use by no container).
func fit(es []Entry) ([]Entry, fitted) {
	if encodedSize(es) <= kvstore.MaxValueSize {
		return es, fitted{}
	}
	var f fitted
	es = slices.Clone(es)
	for i := range es {
		if shorten(&es[i]) {
			f.shortened++
		}
	}
	size := make([]int, len(es))
	total := 2 + max(len(es)-1, 0) // [ , ]
	for i, e := range es {
		size[i] = encodedSize(e)
		total += size[i]
	}
	order := fitOrder(es, size)
	for _, i := range order {
		if total <= kvstore.MaxValueSize {
			break
		}
		f.leftOut = append(f.leftOut, es[i])
		es[i] = leftOutEntry(es[i])
		was := size[i]
		size[i] = encodedSize(es[i])
		total += size[i] - was
	}
	drop := make([]bool, len(es))
	if total > kvstore.MaxValueSize {
		// Every entry is listed by address only: the last in order go,
		// but one, which carries their count.
		total += unlistedRoom
		for _, i := range order[:len(order)-1] {
			if total <= kvstore.MaxValueSize {
				break
			}
			total -= size[i] + 1 // and its comma
			drop[i] = true
			f.unlisted++
		}
	}
	kept := es[:0:0]
	for i, e := range es {
		if !drop[i] {
			kept = append(kept, e)
		}
	}
	if f.unlisted > 0 {
		kept[0].Unlisted = f.unlisted
	}
	return kept, f
}

// leftOutEntry is what an inventory lists of entry e when it leaves it
// out: its address, network and node.
func leftOutEntry(e Entry) Entry {
	return Entry{IP: e.IP, Node: e.Node, NodeID: e.NodeID, Network: e.Network, LeftOut: true}
}

// shorten shortens e's names above maxNameBytes, and says whether it did.
func shorten(e *Entry) bool {
	did := false
	for _, s := range []*string{&e.Container, &e.Service, &e.Slot, &e.Task} {
		if len(*s) > maxNameBytes {
			*s = termtext.Shorten(*s, maxNameBytes)
			did = true
		}
	}
	return did
}

// fitOrder is the order, as indexes of es (of encoded sizes size), in
// which fit leaves entries out: first those of containers of no swarm
// task, which have no task card on the dashboard and which no scaling
// touches; then the longest, to leave out fewer; then by network and
// address, the last first; then by container ID. The same inventory is
// fitted the same way each time, so its warning is not repeated.
func fitOrder(es []Entry, size []int) []int {
	order := make([]int, len(es))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int {
		a, b := es[i], es[j]
		return cmp.Or(
			-cmp.Compare(b2i(a.Task == ""), b2i(b.Task == "")),
			-cmp.Compare(size[i], size[j]),
			-strings.Compare(a.Network, b.Network),
			-CompareIP(a.IP, b.IP),
			strings.Compare(a.ID, b.ID))
	})
	return order
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// encodedSize is the length of v as json.Marshal encodes it; 0 when it
// cannot be encoded (Publish says why).
func encodedSize(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return 0
	}
	return len(b)
}

// maxNamed is how many entries a warning names at most.
const maxNamed = 10

// noteFitted logs what fit did (now) when it differs from what it did
// last time (was): a warning naming how many entries it left out and
// shortened, and the first maxNamed left out; or, once it does nothing
// any more, that the inventory is whole again. It returns now.
func noteFitted(log *slog.Logger, was, now fitted) fitted {
	same := was.shortened == now.shortened && was.unlisted == now.unlisted && slices.EqualFunc(was.leftOut, now.leftOut, func(a, b Entry) bool {
		return a.Network == b.Network && a.IP == b.IP && a.ID == b.ID
	})
	switch {
	case same:
	case len(now.leftOut) > 0 || now.shortened > 0:
		named := make([]string, 0, maxNamed)
		for _, e := range now.leftOut[:min(len(now.leftOut), maxNamed)] {
			// Network names are Docker's: shortened all the same, as
			// an entry's may be what made the inventory too large.
			named = append(named, e.IP+"@"+termtext.Shorten(e.Network, 64))
		}
		log.Warn("the node's inventory is above Consul's value limit: names shortened, then entries left out (first those of no swarm task, then the longest, then by network and address, the last first); underlay ips lists those left out by address only, as not reported, and those unlisted not at all",
			"left_out", len(now.leftOut), "unlisted", now.unlisted, "shortened", now.shortened, "entries", strings.Join(named, ","), "unnamed", len(now.leftOut)-len(named), "limit_bytes", kvstore.MaxValueSize)
	default:
		log.Info("the node's inventory fits Consul's value limit again: nothing left out or shortened", "was_left_out", len(was.leftOut), "was_shortened", was.shortened)
	}
	return now
}
