package dashboard

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/termtext"
)

// caps are the most of each list a snapshot as pages get it holds.
type caps struct {
	// cards bounds the cards in all, nodeCards those of one column (a
	// node's, or Snapshot.Unplaced).
	cards, nodeCards int
	services         int
	// problems bounds a node's doctor problems, and the cluster's.
	problems int
	// pool bounds an IPv4 pool's addresses; pool6 an IPv6 pool's and
	// the addresses outside a network's subnets.
	pool, pool6 int
}

// defaultCaps are the caps of every snapshot (MaxCards, …).
func defaultCaps() caps {
	return caps{cards: MaxCards, nodeCards: MaxNodeCards, services: MaxServices, problems: MaxProblems,
		pool: MaxPoolAddresses, pool6: MaxPool6Addresses}
}

// halved is c with every cap halved; false when every one is 0 already.
func (c caps) halved() (caps, bool) {
	if c == (caps{}) {
		return c, false
	}
	return caps{cards: c.cards / 2, nodeCards: c.nodeCards / 2, services: c.services / 2, problems: c.problems / 2,
		pool: c.pool / 2, pool6: c.pool6 / 2}, true
}

// limit returns snap as pages get it: its cards, services, doctor
// problems and its pools' address lists cut (MaxCards, MaxNodeCards,
// MaxServices, MaxProblems, MaxPoolAddresses, MaxPool6Addresses), with
// counts of what was left out, and each problem's and holder's text cut
// at MaxEventMessage. They come from documents any agent may write, or
// grow with the cluster, and every page load carries them. The server
// diffs the whole snapshots, so that no event is lost or made up by the
// cut; snap itself is not changed, nor the lists it shares. whole reports
// that nothing was cut, so that snap's JSON is the page's too.
func limit(snap Snapshot) (_ Snapshot, whole bool) {
	return limitTo(snap, defaultCaps())
}

// fit returns the JSON of snap as pages get it, within most bytes: limit's,
// or, when that is larger, with every cap halved until it fits (cards,
// texts of agents' documents and checks' outputs make any count of them
// any size). fits is false when even no card, service, problem nor
// address left makes more than most: the nodes and networks alone.
func fit(snap Snapshot, most int) (body []byte, fits bool, err error) {
	c := defaultCaps()
	for {
		lim, _ := limitTo(snap, c)
		if body, err = json.Marshal(lim); err != nil {
			return nil, false, fmt.Errorf("encode snapshot: %w", err)
		}
		if len(body) <= most {
			return body, true, nil
		}
		var more bool
		if c, more = c.halved(); !more {
			return body, false, nil
		}
	}
}

// limitTo is limit with the caps c.
func limitTo(snap Snapshot, c caps) (_ Snapshot, whole bool) {
	whole = true
	var cut bool
	snap.Problems, snap.ProblemsOmitted, cut = limitProblems(snap.Problems, c.problems)
	whole = whole && !cut
	snap.Nodes = slices.Clone(snap.Nodes)
	columns := make([]int, 0, len(snap.Nodes)+1)
	for _, n := range snap.Nodes {
		columns = append(columns, len(n.Tasks))
	}
	perColumn := share(append(columns, len(snap.Unplaced)), c.nodeCards, c.cards)
	for i, n := range snap.Nodes {
		if n.Doctor != nil {
			d := *n.Doctor
			var omitted int
			d.Problems, omitted, cut = limitProblems(d.Problems, c.problems)
			whole = whole && !cut
			d.ProblemsOmitted += omitted // past those the agent left out
			snap.Nodes[i].Doctor = &d
		}
		snap.Nodes[i].Tasks, snap.Nodes[i].TasksOmitted = limitCards(n.Tasks, perColumn)
		whole = whole && snap.Nodes[i].TasksOmitted == 0
	}
	snap.Unplaced, snap.UnplacedOmitted = limitCards(snap.Unplaced, perColumn)
	whole = whole && snap.UnplacedOmitted == 0
	snap.Services, snap.ServicesOmitted = limitServices(snap.Services, c.services)
	whole = whole && snap.ServicesOmitted == 0
	snap.Networks = slices.Clone(snap.Networks)
	for i := range snap.Networks {
		nw := &snap.Networks[i]
		nw.Pool.Addresses, nw.Pool.Omitted, cut = limitAddresses(nw.Pool.Addresses, c.pool)
		whole = whole && !cut
		if nw.IPv6Pool != nil {
			p := *nw.IPv6Pool
			p.Addresses, p.Omitted, cut = limitAddresses(p.Addresses, c.pool6)
			whole = whole && !cut
			nw.IPv6Pool = &p
		}
		nw.Outside, nw.OutsideOmitted, cut = limitAddresses(nw.Outside, c.pool6)
		whole = whole && !cut
	}
	return snap, whole
}

// share is the most cards one column may list so that no column lists
// more than perColumn and all of them, of sizes columns, no more than
// total: the largest such k, so that small columns list all theirs and
// the large ones share the rest evenly.
func share(columns []int, perColumn, total int) int {
	listed := func(k int) int {
		sum := 0
		for _, n := range columns {
			sum += min(n, k)
		}
		return sum
	}
	// The largest k in [0, perColumn] with listed(k) <= total; listed
	// grows with k.
	lo, hi := 0, perColumn
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if listed(mid) <= total {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// cardAttention ranks a card by how much it needs attention: what a cut
// column keeps first.
func cardAttention(t Task) int {
	switch {
	case t.Mismatch || t.Duplicate || len(t.Problems) > 0:
		return 3
	case t.Health == HealthCritical || t.Health == HealthWarning:
		return 2
	case t.State != "running":
		return 1
	}
	return 0
}

// limitCards returns the first n cards of ts in most need of attention,
// in ts's order, and how many were left out; ts itself when it has at
// most n.
func limitCards(ts []Task, n int) ([]Task, int) {
	if len(ts) <= n {
		return ts, 0
	}
	idx := make([]int, len(ts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(cardAttention(ts[b]), cardAttention(ts[a])) })
	idx = idx[:n]
	slices.Sort(idx)
	out := make([]Task, n)
	for i, j := range idx {
		out[i] = ts[j]
	}
	return out, len(ts) - n
}

// limitServices returns at most n of ss, those in most need of attention
// first (autoscaled, fewer running or passing than desired), in ss's
// order, and how many were left out; ss itself when it has at most n.
func limitServices(ss []Service, n int) ([]Service, int) {
	if len(ss) <= n {
		return ss, 0
	}
	rank := func(s Service) int {
		r := 0
		if s.Autoscaled {
			r += 2
		}
		if s.Running < s.Desired || s.Passing < s.Running || len(s.BadRecords) > 0 || s.PolicyError != "" {
			r++
		}
		return r
	}
	idx := make([]int, len(ss))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(rank(ss[b]), rank(ss[a])) })
	idx = idx[:n]
	slices.Sort(idx)
	out := make([]Service, n)
	for i, j := range idx {
		out[i] = ss[j]
	}
	return out, len(ss) - n
}

// limitProblems returns the first most of ps, their texts cut, how
// many were left out, and whether the list differs from ps in any way (a
// nil ps becomes empty); ps itself when it does not. A fix too long to
// show as it is (fixUnshown) is left out, with a note.
func limitProblems(ps []DoctorResult, most int) (_ []DoctorResult, omitted int, changed bool) {
	fits := func(p DoctorResult) bool {
		return len(p.Check) <= MaxEventMessage && len(p.Message) <= MaxEventMessage && fixUnshown(p.Fix) == ""
	}
	if ps != nil && len(ps) <= most && !slices.ContainsFunc(ps, func(p DoctorResult) bool { return !fits(p) }) {
		return ps, 0, false
	}
	n := min(len(ps), most)
	out := make([]DoctorResult, n)
	changed = ps == nil || n < len(ps)
	for i, p := range ps[:n] {
		p.Check = cut(p.Check, MaxEventMessage)
		if why := fixUnshown(p.Fix); why != "" {
			note := " (" + why + ": underlay doctor on the node prints it)"
			p.Message, p.Fix = cut(p.Message, MaxEventMessage-len(note))+note, ""
		}
		p.Message = cut(p.Message, MaxEventMessage)
		changed = changed || p.Check != ps[i].Check || p.Message != ps[i].Message || p.Fix != ps[i].Fix
		out[i] = p
	}
	return out, len(ps) - n, changed
}

// fixUnshown says why a fix, a command to copy, cannot be shown: too long
// to show whole (cut, it would be a command that does something else), or
// holding a character not shown as it is (a control or format character,
// such as a bidi override or a zero-width space, or invalid UTF-8), by
// which it would be shown as one command and copied as another. Any
// agent may publish a report; underlay's own fixes are graphic
// (shellword.Quote). "" when it can be shown.
func fixUnshown(fix string) string {
	switch {
	case len(fix) > MaxEventMessage:
		return fmt.Sprintf("its fix, of %d bytes, is too long to show", len(fix))
	case !termtext.Graphic(fix):
		return "its fix holds characters that are not shown as they are"
	}
	return ""
}

// attention ranks address states by how much they need it, as the page's
// map does (RANK in app.js): what a cut list keeps first.
var attention = map[string]int{StateDuplicate: 6, StateLeaked: 5, StateTask: 4, StateSpare: 3, StateReserved: 2}

// limitAddresses returns as, in address order, cut to at most n
// addresses, those of the states most in need of attention first, with
// holders cut at MaxEventMessage, how many were left out, and whether
// anything was cut; as itself when nothing was.
func limitAddresses(as []PoolAddress, n int) (_ []PoolAddress, omitted int, changed bool) {
	if len(as) <= n && !slices.ContainsFunc(as, func(a PoolAddress) bool { return len(a.Holder) > MaxEventMessage }) {
		return as, 0, false
	}
	out := slices.Clone(as)
	for i := range out {
		out[i].Holder = cut(out[i].Holder, MaxEventMessage)
		changed = changed || out[i].Holder != as[i].Holder
	}
	if len(out) <= n {
		return out, 0, changed
	}
	byIP := func(x, y PoolAddress) int { return inventory.CompareIP(x.IP, y.IP) }
	slices.SortStableFunc(out, func(x, y PoolAddress) int {
		return cmp.Or(cmp.Compare(attention[y.State], attention[x.State]), byIP(x, y))
	})
	out = out[:n:n]
	slices.SortFunc(out, byIP)
	return out, len(as) - n, true
}
