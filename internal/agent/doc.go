// Package agent composes `underlay agent` for one node: the registration
// (register) always; with Config.Networks the node's identity claim and
// everything that acts for the node in the cluster — the network
// reconciler (netagent over hostnet), the cluster IPAM plugin, its leak
// reclaimer and spares keeper (ipam), the address inventory (inventory),
// task metrics (taskmetrics), the Swarm tasks the registration leaves out
// of Consul (unregistered) and doctor reports (doctor); the status
// server (/healthz, /metrics) and the profiler (profiling). It decides
// which parts run, in which order and sharing what (one Docker source,
// one Prometheus registry, one KV adapter).
//
// It holds no logic of its own beyond that composition. It takes clients
// already built by dockerhost and consul (Clients) and adapts them with
// those packages; its other I/O edges are the status listener and the
// IPAM plugin's socket (httpserve). It may import any capability package;
// none imports it. internal/app builds its Config from flags.
package agent
