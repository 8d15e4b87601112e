package dashboard

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/termtext"
)

// limit returns snap as pages get it: its doctor problems and its pools'
// address lists cut (MaxProblems, MaxPoolAddresses, MaxPool6Addresses),
// with counts of what was left out, and each problem's and holder's text
// cut at MaxEventMessage. They come from documents any agent may write,
// or grow with the cluster, and every page load carries them. The server
// diffs the whole snapshots, so that no event is lost or made up by the
// cut; snap itself is not changed, nor the lists it shares. whole reports
// that nothing was cut, so that snap's JSON is the page's too.
func limit(snap Snapshot) (_ Snapshot, whole bool) {
	whole = true
	var cut bool
	snap.Problems, snap.ProblemsOmitted, cut = limitProblems(snap.Problems)
	whole = whole && !cut
	snap.Nodes = slices.Clone(snap.Nodes)
	for i, n := range snap.Nodes {
		if n.Doctor != nil {
			d := *n.Doctor
			var omitted int
			d.Problems, omitted, cut = limitProblems(d.Problems)
			whole = whole && !cut
			d.ProblemsOmitted += omitted // past those the agent left out
			snap.Nodes[i].Doctor = &d
		}
	}
	snap.Networks = slices.Clone(snap.Networks)
	for i := range snap.Networks {
		nw := &snap.Networks[i]
		nw.Pool.Addresses, nw.Pool.Omitted, cut = limitAddresses(nw.Pool.Addresses, MaxPoolAddresses)
		whole = whole && !cut
		if nw.IPv6Pool != nil {
			p := *nw.IPv6Pool
			p.Addresses, p.Omitted, cut = limitAddresses(p.Addresses, MaxPool6Addresses)
			whole = whole && !cut
			nw.IPv6Pool = &p
		}
		nw.Outside, nw.OutsideOmitted, cut = limitAddresses(nw.Outside, MaxPool6Addresses)
		whole = whole && !cut
	}
	return snap, whole
}

// limitProblems returns the first MaxProblems of ps, their texts cut, how
// many were left out, and whether the list differs from ps in any way (a
// nil ps becomes empty); ps itself when it does not. A fix too long to
// show as it is (fixUnshown) is left out, with a note.
func limitProblems(ps []DoctorResult) (_ []DoctorResult, omitted int, changed bool) {
	fits := func(p DoctorResult) bool {
		return len(p.Check) <= MaxEventMessage && len(p.Message) <= MaxEventMessage && fixUnshown(p.Fix) == ""
	}
	if ps != nil && len(ps) <= MaxProblems && !slices.ContainsFunc(ps, func(p DoctorResult) bool { return !fits(p) }) {
		return ps, 0, false
	}
	n := min(len(ps), MaxProblems)
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
