// Package dashboard is underlay's web dashboard, served by `underlay
// control` at /ui: the cluster's network as it really is, live.
//
// The data assembly is a pure function, Build, from what the sources
// return — the swarm (nodes, services, tasks, through a manager's dockerd),
// Consul (catalog and health; underlay's KV: network specs, per-node ranges,
// cluster IPAM blocks, the agents' address inventories, doctor reports,
// reports of the tasks they leave out of Consul and node facts) and the autoscaler (policies, the decision history) — to a
// Snapshot, the JSON of GET /v1/cluster. Diff turns two snapshots into the
// events the page lists. Both are unit-tested.
//
// Server does the I/O around them: it gathers the sources (interfaces
// declared here, implemented over dockerhost, consul, inventory, ipam and
// scale in package adapter) whenever one signals a change, builds,
// diffs and publishes; the page reads GET /v1/cluster once and then follows
// one server-sent event stream (GET /v1/cluster/events) carrying every new
// snapshot and event. The HTTP handlers are thin; the page (assets/) is
// plain HTML, CSS and JavaScript embedded in the binary, with no build
// step and nothing fetched from elsewhere.
//
// It imports only the types of netspec, ipam, inventory, register,
// unregistered and scale, termtext and shellword to show names readable,
// and httpserve for its stream's reconnect time; its I/O edges are its
// sources (package adapter) and HTTP.
package dashboard
