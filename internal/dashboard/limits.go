package dashboard

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/underlay/underlay/internal/inventory"
)

// limit returns snap as pages get it: its doctor problems and its pools'
// address lists cut (MaxProblems, MaxPoolAddresses, MaxPool6Addresses),
// with counts of what was left out, and each problem's and holder's text
// cut at MaxEventMessage. They come from documents any agent may write,
// or grow with the cluster, and every page load carries them. The server
// diffs the whole snapshots, so that no event is lost or made up by the
// cut; snap itself is not changed, nor the lists it shares.
func limit(snap Snapshot) Snapshot {
	snap.Problems, snap.ProblemsOmitted = limitProblems(snap.Problems)
	snap.Nodes = slices.Clone(snap.Nodes)
	for i, n := range snap.Nodes {
		if n.Doctor != nil {
			d := *n.Doctor
			var omitted int
			d.Problems, omitted = limitProblems(d.Problems)
			d.ProblemsOmitted += omitted // past those the agent left out
			snap.Nodes[i].Doctor = &d
		}
	}
	snap.Networks = slices.Clone(snap.Networks)
	for i := range snap.Networks {
		nw := &snap.Networks[i]
		nw.Pool.Addresses, nw.Pool.Omitted = limitAddresses(nw.Pool.Addresses, MaxPoolAddresses)
		if nw.IPv6Pool != nil {
			p := *nw.IPv6Pool
			p.Addresses, p.Omitted = limitAddresses(p.Addresses, MaxPool6Addresses)
			nw.IPv6Pool = &p
		}
		nw.Outside, nw.OutsideOmitted = limitAddresses(nw.Outside, MaxPool6Addresses)
	}
	return snap
}

// limitProblems returns the first MaxProblems of ps, their texts cut, and
// how many were left out. A fix too long to show whole is left out, with
// a note: cut, it would be a command that does something else.
func limitProblems(ps []DoctorResult) ([]DoctorResult, int) {
	n := min(len(ps), MaxProblems)
	out := make([]DoctorResult, n)
	for i, p := range ps[:n] {
		p.Check = cut(p.Check, MaxEventMessage)
		if len(p.Fix) > MaxEventMessage {
			note := fmt.Sprintf(" (its fix, of %d bytes, is too long to show: underlay doctor on the node prints it)", len(p.Fix))
			p.Message, p.Fix = cut(p.Message, MaxEventMessage-len(note))+note, ""
		}
		p.Message = cut(p.Message, MaxEventMessage)
		out[i] = p
	}
	return out, len(ps) - n
}

// attention ranks address states by how much they need it, as the page's
// map does (RANK in app.js): what a cut list keeps first.
var attention = map[string]int{StateDuplicate: 6, StateLeaked: 5, StateTask: 4, StateSpare: 3, StateReserved: 2}

// limitAddresses returns as, in address order, cut to at most n
// addresses, those of the states most in need of attention first, with
// holders cut at MaxEventMessage, and how many were left out.
func limitAddresses(as []PoolAddress, n int) ([]PoolAddress, int) {
	out := slices.Clone(as)
	for i := range out {
		out[i].Holder = cut(out[i].Holder, MaxEventMessage)
	}
	if len(out) <= n {
		return out, 0
	}
	byIP := func(x, y PoolAddress) int { return inventory.CompareIP(x.IP, y.IP) }
	slices.SortStableFunc(out, func(x, y PoolAddress) int {
		return cmp.Or(cmp.Compare(attention[y.State], attention[x.State]), byIP(x, y))
	})
	out = out[:n:n]
	slices.SortFunc(out, byIP)
	return out, len(as) - n
}
