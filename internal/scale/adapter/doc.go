// Package adapter connects the autoscaler (package scale) to its
// dependencies: Swarm adapts a Docker client of a swarm manager to
// scale.Swarm, and KVHistory keeps decision records in Consul KV.
package adapter
