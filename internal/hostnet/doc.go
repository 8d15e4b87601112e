// Package hostnet prepares a host for macvlan networks: the parent
// interface up and promiscuous, and a bridge-mode macvlan "shim" with its
// own address and a route to the node's container range, so that the host
// (and its Consul agent's health checks) reach the host's own containers,
// which macvlan otherwise hides from it.
//
// State is observed, compared with what is wanted by a pure function
// (Repairs), and only the differences are applied, so every call is
// idempotent and drift (a deleted shim, promiscuous mode switched off) is
// repaired and reported.
package hostnet
