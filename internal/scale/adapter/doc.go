// Package adapter connects the autoscaler (package scale) to its
// dependencies: Swarm adapts a Docker client of a swarm manager to
// scale.Swarm; KVHistory keeps decision records, KVAlertLog the
// Alertmanager firings that scaled, and KVTokens bearer tokens, in Consul
// KV; ConsulLeader elects one control instance through a Consul lock; and
// Prometheus evaluates metric queries through Prometheus's HTTP API.
package adapter
