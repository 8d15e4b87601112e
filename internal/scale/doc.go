// Package scale is underlay's autoscaler for Docker Swarm services, behind
// `underlay control`: an Orbiter-compatible HTTP API with the safety of
// Kubernetes' HorizontalPodAutoscaler.
//
// The decisions are pure functions that import no client library:
// ParsePolicy reads a service's policy from its labels, Decide turns a
// request (current replicas, direction, policy, last scale times, now) into
// a Decision, and DesiredReplicas is HPA-style target tracking. The
// Controller drives them: it keeps the list of autoscaled services current
// from Docker events (subscribe, then list; list again after every
// reconnect), serialises the decisions of each service, writes replicas with
// the service's version (retrying on conflict), evaluates metric queries
// every interval while it leads, acts once per Alertmanager firing, and
// hands every decision to History (Consul KV, see package adapter) and to a
// Broadcaster that feeds the server-sent events endpoint. API maps it all
// to HTTP.
//
// Docker, Consul and Prometheus sit behind the Swarm, History, AlertLog,
// Leadership, TokenSet and MetricSource interfaces declared here; package
// adapter implements them.
//
// It imports only backoff, secretfile, regularfile, httpserve and termtext
// (which quotes what requests, webhooks and labels name into its errors),
// besides Prometheus's client and a YAML parser; package client (scale/client) is the API's client, used by
// `underlay scale`.
package scale
