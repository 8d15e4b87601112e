// Package hostnet prepares a host for macvlan and ipvlan networks: the
// parent interface made when it is a missing VLAN sub-interface (bond0.40
// on bond0, marked with an alias naming the network, so that only those
// are removed again, and recorded in the agent's state directory,
// ParentFile, so that one dockerd made again unmarked at boot, restoring
// a container before the agent ran, is marked as the agent's again; an
// unmarked VLAN not recorded so is an operator's, and never taken), up,
// promiscuous for macvlan, and a "shim" of the network's kind (a
// bridge-mode macvlan, or an ipvlan) with its own address and a route to
// the node's container range, so that the host (and its Consul agent's
// health checks) reach the host's own containers, which macvlan and
// ipvlan otherwise hide from it. Promiscuous mode it
// turns on is recorded (PromiscRecord) and turned off again once no
// macvlan uses the parent (Host.ReleasePromisc). InspectParent describes
// a parent, its lower device and its bond for the doctor.
//
// State is observed, compared with what is wanted by a pure function
// (Repairs), and only the differences are applied, so every call is
// idempotent and drift (a deleted shim, promiscuous mode switched off) is
// repaired and reported.
//
// It imports netspec, backoff, regularfile and termtext (Docker's names
// quoted in what it says uses a link); its I/O edge is the kernel,
// through netlink, behind the Host type the agent and the doctor use.
package hostnet
