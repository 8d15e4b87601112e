// Package netspec describes underlay's cluster networks: a macvlan network
// wanted on every node of a swarm, its validation, how its address range is
// split into per-node ranges, and the exact docker and ip commands that
// realise it on a node. The decisions are pure.
//
// Its I/O edges are interfaces declared here: KV (Consul's KV store, under
// Store, which keeps specs, leases, node identities and node states), and
// NetworkLister and SwarmManager (the local Docker daemon, for the name
// check of `network create` and the `network rm` protocol in Store.Remove).
// internal/consul and internal/dockerhost implement them. It imports only
// kvstore, termtext (names and errors quoted so that they print as what
// they hold) and shellword (the commands it writes, quoted for a shell).
package netspec
