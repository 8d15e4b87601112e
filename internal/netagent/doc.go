// Package netagent realises underlay's cluster networks on one node: for
// each network spec in Consul it leases the node's range, prepares the host
// (parent, shim, route), creates the node's config-only Docker network and
// reports the result; on the swarm leader it creates the swarm network once
// every ready node reports ready. Networks whose spec is marked for removal
// are taken apart again, found through their ownership labels.
//
// It imports netspec, hostnet and kvstore, and backoff, regularfile and
// termtext (what Docker names, quoted in its errors).
// Its I/O edges are interfaces declared
// here: Docker and Swarm (dockerhost.Networks), Host (hostnet), IPAM
// (ipam.NodeIPAM), and the spec store (netspec.Store over consul.KV).
// Package agent composes it.
package netagent
