package inventory

import (
	"fmt"
	"slices"
	"strings"

	"github.com/underlay/underlay/internal/termtext"
)

// groupNotes returns the note of each entry of group idx (indices of es
// holding one IP, MAC or container ID, in order; "": none), naming
// what: up to noteHolders other holders it clashes with, in the order
// of the group, each once, then how many more clashing entries hold
// none of those. Entries clash with every other entry of the group when
// sameNode, else only with those of another node (OtherNode).
//
// Comparing every pair cost the square of the group: one forged
// inventory listing one address thousands of times stalled `underlay
// ips` and the dashboard. A holder's name depends on the entry noted
// only through its node (and on its node, its swarm node ID: "(swarm
// node ID)" follows another ID's entries), so each note is put
// together from a few lists made once per group: the first holders of
// other nodes' entries, and of the entry's own node's, told apart by
// ID, with counts of each holder by node and ID.
func groupNotes(es []Entry, idx []int, what string, sameNode bool) []string {
	g := newGroup(es, idx)
	notes := make([]string, len(idx))
	for x, i := range idx {
		node, id := es[i].Node, es[i].NodeID
		lists := [][]seen{g.plain.first(node)}
		eligible := len(idx) - g.nodeSize[node]
		if sameNode {
			// Every other entry of its node: under its plain name, but
			// another ID's entries under their suffixed one.
			eligible += g.nodeSize[node] - 1
			if id == "" {
				lists = append(lists, g.byNode[node].first(x))
			} else {
				lists = append(lists, g.byNodeID[[2]string{node, ""}].first(-1), g.byNodeID[[2]string{node, id}].first(x))
			}
		} else if id != "" {
			eligible += g.nodeSize[node] - g.nodeIDSize[[2]string{node, ""}] - g.nodeIDSize[[2]string{node, id}]
		}
		if id != "" {
			if s, ok := g.suffixed[node]; ok {
				lists = append(lists, s.first(id))
			}
		}
		named := firstHolders(lists...)
		// n counts the holders named and every clashing entry whose
		// holder is none of them.
		n := len(named) + eligible
		for _, h := range named {
			n -= g.held(h.h, node, id, sameNode)
			if sameNode && h.h == g.plainOf[x] {
				n++ // the entry itself
			}
		}
		if n == 0 {
			continue
		}
		names := make([]string, len(named))
		for k, h := range named {
			names[k] = h.h
		}
		note := fmt.Sprintf("%s also on %s", what, strings.Join(names, ", "))
		if more := n - len(named); more > 0 {
			note += fmt.Sprintf(" and %d more", more)
		}
		notes[x] = note
	}
	return notes
}

// group is what groupNotes knows of a group, positions being indices
// into it.
type group struct {
	plainOf []string // holder of each position
	// plain lists holders by node; suffixed, for each node, the holders
	// of its entries giving an ID, with the ID, by ID.
	plain    exceptClass
	suffixed map[string]exceptClass
	// byNode and byNodeID list the first holders of a node's entries,
	// and of its entries of one ID ("": none given).
	byNode     map[string]*firstTwos
	byNodeID   map[[2]string]*firstTwos
	nodeSize   map[string]int
	nodeIDSize map[[2]string]int
	// Counts of holders: over the group, by node, by node and ID; of
	// suffixed holders by node, and by node and ID.
	all    map[string]int
	node   map[[2]string]int
	nodeID map[[3]string]int
	suf    map[[2]string]int
	sufID  map[[3]string]int
}

func newGroup(es []Entry, idx []int) *group {
	g := &group{
		plainOf: make([]string, len(idx)), suffixed: map[string]exceptClass{},
		byNode: map[string]*firstTwos{}, byNodeID: map[[2]string]*firstTwos{},
		nodeSize: map[string]int{}, nodeIDSize: map[[2]string]int{},
		all: map[string]int{}, node: map[[2]string]int{}, nodeID: map[[3]string]int{},
		suf: map[[2]string]int{}, sufID: map[[3]string]int{},
	}
	nodes := make([]string, len(idx))
	type idHolders struct {
		pos          []int
		ids, holders []string
	}
	withID := map[string]*idHolders{}
	for x, i := range idx {
		e := es[i]
		h := holder(e)
		g.plainOf[x], nodes[x] = h, e.Node
		g.all[h]++
		g.node[[2]string{e.Node, h}]++
		g.nodeID[[3]string{e.Node, e.NodeID, h}]++
		g.nodeSize[e.Node]++
		g.nodeIDSize[[2]string{e.Node, e.NodeID}]++
		addHolder(g.byNode, e.Node, h, x)
		addHolder(g.byNodeID, [2]string{e.Node, e.NodeID}, h, x)
		if e.NodeID == "" {
			continue
		}
		s := h + " (swarm node " + termtext.Shorten(termtext.Cell(e.NodeID), maxHolderName) + ")"
		g.suf[[2]string{e.Node, s}]++
		g.sufID[[3]string{e.Node, e.NodeID, s}]++
		w := withID[e.Node]
		if w == nil {
			w = &idHolders{}
			withID[e.Node] = w
		}
		w.pos, w.ids, w.holders = append(w.pos, x), append(w.ids, e.NodeID), append(w.holders, s)
	}
	positions := make([]int, len(idx))
	for x := range positions {
		positions[x] = x
	}
	g.plain = newExceptClass(positions, nodes, g.plainOf)
	for node, w := range withID {
		g.suffixed[node] = newExceptClass(w.pos, w.ids, w.holders)
	}
	return g
}

// held counts the entries of holder h that clash with an entry of node
// and id, its own included when sameNode.
func (g *group) held(h, node, id string, sameNode bool) int {
	n := g.all[h] - g.node[[2]string{node, h}]
	switch {
	case sameNode && id == "":
		n += g.node[[2]string{node, h}]
	case sameNode:
		n += g.nodeID[[3]string{node, "", h}] + g.nodeID[[3]string{node, id, h}]
	}
	if id != "" {
		n += g.suf[[2]string{node, h}] - g.sufID[[3]string{node, id, h}]
	}
	return n
}

// seen is a holder at the first position it is seen at.
type seen struct {
	h   string
	pos int
}

// firstHolders returns the first noteHolders holders of lists by
// position, each once (at its first).
func firstHolders(lists ...[]seen) []seen {
	var all []seen
	for _, l := range lists {
		all = append(all, l...)
	}
	slices.SortFunc(all, func(a, b seen) int { return a.pos - b.pos })
	var out []seen
	for _, s := range all {
		if len(out) == noteHolders {
			break
		}
		if !slices.ContainsFunc(out, func(o seen) bool { return o.h == s.h }) {
			out = append(out, s)
		}
	}
	return out
}

// exceptClass lists, for a sequence of holders each of a class (a node,
// or a swarm node ID), the first holders of those not of one class.
type exceptClass struct {
	// order is each holder at its first position, class the class there,
	// next the first index after each of another class than its own.
	order []seen
	class []string
	next  []int
	// elsewhere lists, by class, the holders first seen in it at their
	// first position in another class: the first noteHolders.
	elsewhere map[string][]seen
}

func newExceptClass(pos []int, classes, holders []string) exceptClass {
	e := exceptClass{elsewhere: map[string][]seen{}}
	at := map[string]int{}     // holder → index in order
	second := map[string]int{} // holder → first position in another class
	for k, h := range holders {
		t, ok := at[h]
		if !ok {
			at[h] = len(e.order)
			e.order = append(e.order, seen{h, pos[k]})
			e.class = append(e.class, classes[k])
			continue
		}
		if _, ok := second[h]; !ok && classes[k] != e.class[t] {
			second[h] = pos[k]
		}
	}
	e.next = make([]int, len(e.order))
	for t := len(e.order) - 1; t >= 0; t-- {
		switch {
		case t+1 == len(e.order) || e.class[t+1] != e.class[t]:
			e.next[t] = t + 1
		default:
			e.next[t] = e.next[t+1]
		}
	}
	for h, p := range second {
		c := e.class[at[h]]
		e.elsewhere[c] = append(e.elsewhere[c], seen{h, p})
	}
	for c, l := range e.elsewhere {
		slices.SortFunc(l, func(a, b seen) int { return a.pos - b.pos })
		e.elsewhere[c] = l[:min(len(l), noteHolders)]
	}
	return e
}

// first returns the first noteHolders holders of the positions not of
// class c, each at its first such position.
func (e exceptClass) first(c string) []seen {
	var out []seen
	for t := 0; t < len(e.order) && len(out) < noteHolders; t++ {
		if e.class[t] == c {
			// Skip c's run; the next is of another class.
			if t = e.next[t]; t == len(e.order) {
				break
			}
		}
		out = append(out, e.order[t])
	}
	return firstHolders(out, e.elsewhere[c])
}

// firstTwos are the first noteHolders+1 holders of a sequence, each at
// its first two positions, so that the first noteHolders are known with
// any one position left out.
type firstTwos []twoSeen

// twoSeen is a holder at its first two positions (second -1: none).
type twoSeen struct {
	h             string
	first, second int
}

// addHolder adds holder h at position pos to m[k].
func addHolder[K comparable](m map[K]*firstTwos, k K, h string, pos int) {
	f := m[k]
	if f == nil {
		f = &firstTwos{}
		m[k] = f
	}
	for x := range *f {
		if s := &(*f)[x]; s.h == h {
			if s.second < 0 {
				s.second = pos
			}
			return
		}
	}
	if len(*f) <= noteHolders {
		*f = append(*f, twoSeen{h, pos, -1})
	}
}

// first returns the first noteHolders holders of f but at position
// skip, each at its first position.
func (f *firstTwos) first(skip int) []seen {
	if f == nil {
		return nil
	}
	var out []seen
	for _, s := range *f {
		switch {
		case s.first != skip:
			out = append(out, seen{s.h, s.first})
		case s.second >= 0:
			out = append(out, seen{s.h, s.second})
		}
	}
	return firstHolders(out)
}
