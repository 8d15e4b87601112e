// Package profiling serves Go's runtime profiles (net/http/pprof) under
// /debug/pprof/ for a closer look at a running process. It is off unless
// asked for, and listens only on loopback addresses: profiles reveal the
// process's internals and a CPU profile costs CPU while it runs. For the
// same reasons it answers neither a name pointed at loopback (DNS
// rebinding) nor a request a browser says another site's page made.
//
// It imports httpserve; its I/O edge is its loopback listener.
package profiling
