// Package adapter connects the dashboard (package dashboard) to its
// sources: Swarm reads a swarm manager's dockerd, Catalog Consul's catalog
// and health, Store underlay's own state in Consul KV (network specs,
// per-node ranges, cluster IPAM blocks, the inventory, node facts and
// doctor reports) through the netspec, inventory, ipam and doctor
// packages, and Scaling the autoscaler of the control instance. Each
// source's Changes turns Docker events or Consul blocking queries into
// change signals, reconnecting by itself.
//
// These are the dashboard's adapters (the other packages' live in
// dockerhost and consul): they take clients built by dockerhost and consul.
package adapter
