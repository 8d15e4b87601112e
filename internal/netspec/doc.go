// Package netspec describes underlay's cluster networks: a macvlan network
// wanted on every node of a swarm, its validation, how its address range is
// split into per-node ranges, and the exact docker and ip commands that
// realise it on a node. Everything here is pure; the agent and the CLI do
// the I/O.
package netspec
