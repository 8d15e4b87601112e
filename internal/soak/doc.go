// Package soak is underlay's chaos run: a lab whose services scale at
// random while faults are injected at random (agents killed, dockerd and
// Consul restarted, nodes frozen and cut off, the control leader killed,
// stray IPAM releases, garbage in KV), with the invariants underlay
// promises checked all along — never two running containers with one IP
// on a network — and after every fault has cleared: Consul's catalog equals
// the running tasks, IPAM allocations equal tasks + shims + spares, every
// shim and route is in place, no service outside its bounds.
//
// The pure parts (the fault schedule, the checks over plain observations,
// the report) are here and unit-tested; the driver that observes a real lab
// through Docker, Consul and the nodes' links, and injects the faults, is
// the integration test TestIntegrationSoak (`make soak`; CI runs a short
// one). Everything random comes from one seed, printed with every report.
//
// The pure parts import only the standard library.
package soak
