// Package adapter connects the autoscaler (package scale) to its
// dependencies: Swarm adapts a Docker client of a swarm manager to
// scale.Swarm; KVHistory keeps decision records, KVAlertLog the
// Alertmanager firings that scaled, and KVTokens bearer tokens, in Consul
// KV; ConsulLeader elects one control instance through a Consul lock; and
// Prometheus evaluates metric queries through Prometheus's HTTP API.
//
// These are the autoscaler's adapters (the other packages' live in
// dockerhost and consul): they take clients built by dockerhost and consul
// and may import scale, taskmetrics, dockerhost and backoff.
package adapter
