// Package guest is the inside of a lab VM node: the program that runs as
// PID 1 of the VM and the control server the lab talks to, plus the
// client the lab uses on the host.
//
// The VM shares the host's file system read-only (9p, under a tmpfs
// overlay made by the initramfs), so the guest runs the host's own
// underlay binary, copied into the lab's state directory. Init (PID 1)
// mounts what a Docker host needs (tmpfs on /run, /tmp, /var/lib/docker,
// /var/lib/containerd; cgroup2; the node's state directory read-write over
// 9p at the same path as on the host, so logs written there are read on
// the host), loads modules, makes bond0 of the two NICs with the
// management address, starts the control server and reaps orphans.
//
// The control server (Serve) listens on the node's management address and
// answers requests carrying the lab's token: run a command (exec, with
// stdin and framed stdout/stderr), start a daemon detached with its output
// in a log file, report whether one runs, kill one. Daemons are found by
// an environment marker, so a restarted server still knows them.
//
// Nothing here decides what the node runs: the lab sends every command
// line, so new daemons need no change here.
//
// It imports netlink only; its I/O edges are the VM's kernel and its TCP
// control port.
package guest
