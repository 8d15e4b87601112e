// Package register keeps a Consul agent's services in step with the
// containers running on one Docker host.
//
// The desired set of services is computed from containers by pure functions
// (Desired, Plan) that import no client library; DesiredWhy says, of a
// container that has none, why, from the same decision; the Agent drives them from
// Docker events and periodic resyncs and writes only the difference to Consul
// through the small Docker and Catalog interfaces declared here.
//
// A new container's start is registered from what was read before it (its
// configuration at the create event, its endpoints from the networks at the
// connect events), not from a read at the start, which dockerd holds until
// the start is over; Docker's container listing checks it after the start
// (prepared.go).
//
// Every service the agent writes carries MetaNode in its Meta; the agent only
// ever changes or removes services that carry its own node's marker.
//
// It imports only backoff and termtext (of underlay's packages), and
// Prometheus's client, errgroup and Docker's stringid; Docker is behind Docker
// (dockerhost.Source implements it) and Consul behind Catalog
// (consul.Catalog).
package register
