// Package unregistered publishes, for one node, the Swarm task containers
// its agent runs but deliberately leaves out of Consul, each with the
// reason (register.DesiredWhy), and reads them back for the dashboard:
// a port-less worker or a SERVICE_IGNORE task is then no mismatch
// between Swarm and Consul.
//
// Only the node's agent knows why it leaves a container out (its image's
// EXPOSE, its labels and environment, the agent's own flags), so each
// agent publishes its own node's report, under its swarm node ID, off the
// registration path: register.Agent keeps the set and signals changes,
// Publisher.Run writes it when it changes. Consul KV sits behind KV and Lister
// (consul implements them).
//
// It imports only backoff, kvstore, netspec, shellword and termtext of underlay's
// packages.
package unregistered
