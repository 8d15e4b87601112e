// Package lab runs a multi-node Docker Swarm + Consul cluster with a macvlan
// underlay on one machine: `underlay lab`.
//
// Nodes come from a provider (provider.go): namespace nodes of this
// machine's kernel (netns.go, described below) or QEMU virtual machines
// booting Debian's kernel (vmnodes.go, with the guest side in lab/guest
// and QEMU, the initramfs and the VLAN access port in lab/vm). Every step
// above the provider — the plan, dockerd, Consul, the swarm, images,
// agents, status, exec, down — is shared.
//
// Each namespace node is a set of namespaces held by one long-lived holder process
// (started with unshare): its own network, mount, UTS and PID namespaces.
// Everything that runs for a node — its dockerd (own data root, exec root,
// socket and pid file), its Consul agent and the underlay agent — is started
// with nsenter into those namespaces, so it is a process of the node's PID
// namespace: when the holder dies, the kernel kills every process of the
// node, containers included. The mount namespace gives the node a /run of
// its own: Docker's plugin directory, containerd's shims and the Docker
// socket at its standard path are private to the node.
//
// Each node has two links into the root namespace:
//
//   - eth0, on the bridge ul-<name>-m: the management network (a free
//     172.31.K.0/24; the root namespace holds .1, node i holds .10+i). Swarm
//     control traffic and Consul gossip use it; nodes route everything else
//     through .1, as real hosts route through their router.
//   - eth1, on the bridge ul-<name>-u: the "VLAN", with no address in the
//     node; it is the parent of macvlan networks. The root namespace owns the
//     underlay gateway (the first address of the underlay subnet) on that
//     bridge, playing the router and "the rest of the network".
//
// Consul answers HTTP on 127.0.0.1:8500 inside each node, as on a real host,
// and also on the node's management IP, which the root namespace reaches
// over ul-<name>-m: that is how tests and `lab status` talk to it.
//
// Safety: the lab bridges only ever hold the lab's own veths. iptables (and
// ip6tables) rules commented underlay-lab-<name> drop anything forwarded
// between the lab bridges and any other interface, in both directions, and
// accept traffic forwarded between the lab's own bridges, each named
// exactly (a user's ul-<name>-foo is not the lab's) (bridged traffic
// passes the FORWARD chain when br_netfilter is loaded, where Docker's DROP
// policy would stop it). IPv6 is off on the lab's links in the root
// namespace (disable_ipv6), so no IPv6 is forwarded to or from a node even
// where ip6tables, and with it the IPv6 rules, is missing. Where the
// sysctl cannot be written (a read-only /proc/sys), that is only hygiene
// with ip6tables there (a warning), and lab up fails without it.
//
// VM nodes: each VM has two NICs (taps on a bridge in the lab's own
// network namespace) bonded as bond0 (active-backup) with the management
// address untagged; the trunk carries VLANs 40 and 41, and the underlay
// is VLAN 40 (parent bond0.40). This machine's kernel has neither 802.1Q
// nor bridge VLAN filtering, so a user-space VLAN access port in the lab's
// namespace untags VLAN 40 into a tap holding the underlay gateway: the
// lab's namespace is the underlay's router, and the root namespace routes
// the underlay subnet to it over the management veth. dockerd answers on
// the management address too (tcp, port 2375) and the guest's control
// server (lab/guest) on port 9464, with a per-node token.
//
// Ownership: everything the lab creates is named after it — the state
// directory /var/lib/underlay/lab/<name>; links ul-<name>-m and ul-<name>-u
// and the veths ul-<name>-m<node> and ul-<name>-u<node>, by exact name and
// kind (ownLink), not every link of that prefix; rules commented
// underlay-lab-<name>; processes it starts with paths in the state
// directory, by their exact command lines — so Down finds and removes it
// all even after a crash. Up is idempotent and repairs what died; Down is
// idempotent and succeeds when the lab does not exist.
//
// It imports its providers (lab/guest, lab/vm), deploy (the stack file),
// app/agentflags (the agent's flags it passes) and termtext, and builds its Docker and Consul clients through dockerhost and consul;
// its I/O edges are processes, namespaces, links and firewall rules of this
// machine.
package lab
