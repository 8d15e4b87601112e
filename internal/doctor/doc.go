// Package doctor checks one node of an underlay cluster and explains what
// is wrong: kernel support (macvlan, 802.1q), each network's parent, shim
// and route on this node, the bridge-netfilter/FORWARD trap, Docker and
// Swarm, the Consul agent and clock skew, and whether the host reaches its
// own containers on underlay networks.
//
// Each Check gathers facts through small interfaces (netlink, files,
// Docker, Consul, TCP) and hands them to a pure evaluation function that
// turns facts into Results: ok, warn or fail, a one-line message and, for
// failures, the command that fixes them. Checks run in parallel and are
// reported by name, in the order given.
//
// It may import netspec, ipam, hostnet, kvstore and consul. The
// implementations of its interfaces over real Docker, Consul and netlink are
// in sources.go (DockerAPI, ConsulAPI, IPAMPools), over clients built by
// dockerhost and consul.
package doctor
