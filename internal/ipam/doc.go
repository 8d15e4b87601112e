// Package ipam is underlay's cluster-wide IP address management: one pool
// per network for the whole swarm, kept in Consul KV, served to every
// node's dockerd through Docker's remote IPAM plugin protocol.
//
// The pool is split into blocks. A node claims blocks with affinity, as
// Calico does, so most allocations touch only a block no other node writes
// and are fast; when its blocks are full it claims a free block, and when
// none is left it borrows from other nodes' blocks; a block emptied by its
// owner is given back. Every change to a block is one check-and-set write of
// the block's whole document, so two allocations of one address cannot both
// succeed: a duplicate is impossible, not unlikely.
//
// So that Docker never waits for Consul, a node keeps a few addresses of
// its blocks claimed ahead of demand (spares, see Allocator.KeepSpares):
// claimed exactly as allocations are, so handing one out is local and
// cannot collide. A handed-out spare is recorded as a task in a later
// write; a node short of addresses asks the others, through a pressure
// key, to give their spares back; a crashed agent's spares are adopted
// (a container holds one) or returned by the reclaimer.
package ipam
