// Package ipam is underlay's cluster-wide IP address management: one pool
// per network for the whole swarm, kept in Consul KV, served to every
// node's dockerd through Docker's remote IPAM plugin protocol.
//
// The pool is split into blocks. A node claims blocks with affinity, as
// Calico does, so most allocations touch only a block no other node writes
// and are fast; when its blocks are full it claims a block no node has
// affinity for (one whose node was removed, then a free one), and when
// none is left it borrows from other nodes' blocks; a block emptied is
// given back. Such a miss reads the pool's keys alone, no document: a
// free block is one with no key, claimed with a create that fails when
// another node made it first, and a removed node's block is known from
// the node's copies of the pool; every document is read only when the
// keys show no block to claim, or the create was lost (see
// Allocator.claimListed). Every change to a block is one check-and-set write of the
// block's whole document, so two allocations of one address cannot both
// succeed: a duplicate is impossible, not unlikely. A block of a pool
// served from its network's spec is claimed (written where there was no
// document) only in a transaction that checks the spec unchanged since
// it was read, so no block of a network `network rm` deleted is written
// after; so is the pool's pressure key (see spares.go). Nodes are known by their identity, the swarm node ID, never by
// name.
//
// The parts, each small enough to read at once:
//   - store (store.go) alone owns this node's copies of block documents
//     and every write of them, through one update(block, func(BlockDoc)
//     (BlockDoc, changed)); it lists a pool whole (scan: at first use,
//     for a shim address it has no copy of, in the leak sweep, when a
//     miss falls back) or by its keys (listed: a miss), and skips
//     unreadable documents and stray keys, logging each once (see
//     BadDoc). A scan reads the documents only when the pool's keys and
//     Consul's index for them changed since its last listing of them
//     (listPool): a sweep of a pool at rest reads its keys alone.
//   - decide.go holds every decision as a pure function over values:
//     which blocks to try, what to fill, what a release may free, what a
//     sweep reclaims, which nodes have departed, what a spare sync writes.
//   - Allocator (allocator.go) serves requests, batching concurrent ones
//     into shared writes; Release frees only this node's addresses. What
//     it freed lately it remembers (freed.go; across restarts in a file of
//     the agent's state directory, freedfile.go), and hands out again only
//     when nothing else is free, or asked for (then forgotten: its release
//     speaks no more for the container that holds it now): a release
//     names no container, so a late or repeated one must find its address
//     free (one Consul no longer recorded is remembered as freed too).
//     Docker repeats a release only when its connection failed: the agent
//     that served it was killed before answering. So the release of an
//     address an earlier agent freed lately is held back
//     (Allocator.Release): whether this agent handed it out again, or the
//     earlier one did (each handout of an address freed lately is saved
//     in the file as handed out again before its request is answered: the
//     only handouts that write it; the earlier agent may have been
//     killed after it, before it answered the release), or none is known
//     (that save failed). It is answered, the address still recorded and
//     passed over, until a listing of the containers begun after it
//     shows no container holds it, nor may a start under way (the sweep
//     then does it: Reclaimer.settleReleases), or until it is asked for
//     by name and a listing of the containers taken then shows none holds
//     it, nor may a start under way since before it was handed out (a
//     container restarted with its address: its exit released it, its
//     start began after, a restart policy's dated by its die event, as
//     dockerd answers no inspect of it; the release is done, then the
//     request served), or handed out (free in Consul after all: the
//     release is dropped). Asked for by name otherwise (another
//     container's --ip of it while the one it was handed to runs or
//     starts), or when that listing fails or takes over seconds (dockerd
//     restoring containers at boot lists none), or a restart policy's
//     start whose die event was missed, the request is refused, never
//     given it: which container asks, Docker's request does not say
//     (Allocator.unheldNow).
//     Nor does it (or its keeper) ever hand out an address the
//     node's containers held at the last sweep (held.go), nor one it
//     handed out since and Docker has not released (until a listing of
//     the containers shows what became of it; after an agent's restart,
//     its task addresses Consul records in any block, read as the
//     reclaimer starts, before its first listing), nor hand out on
//     request an address a local container holds, all of which Consul
//     shows free only when it lost a running container's address: passed
//     over, logged and counted, and recorded again at once by the
//     reclaimer if a fresh listing of the containers still shows it held
//     (else by the sweep). One window is left: an address Consul loses
//     before a restarted agent has read its handouts, while the start an
//     earlier agent answered with it is under way, is known to no part of
//     the node (no record, and no listing shows a start's address), so
//     the node itself may hand it out again; only the sweep catches it,
//     listing the container once its start is done. A node's shim
//     address is found, or allocated, one call at a time per pool: the
//     node has one per pool.
//   - keeper (spares.go), with its own lock, keeps a few addresses of the
//     node's blocks claimed ahead of demand (spares), so that Docker never
//     waits for Consul; it changes blocks only through the store's update.
//     It hands out no spare, and keeps none, of a network the newest
//     listing of the specs shows marked by `network rm` (WithSpecs): a
//     request that read its pool before the mark is then refused by its
//     write, bound to the spec as read. Writes a network's removal
//     refuses are retried with growing delays.
//   - Reclaimer (reclaim.go) returns leaks, records again what Consul
//     lost (at the sweep's second sighting, or at once when the node's
//     allocations find it: recordLost), and on the swarm leader reclaims
//     departed nodes' addresses and those allocated to no node, once
//     every node that may hold one has reported it does not (nodeless.go):
//     the only path that frees another node's addresses. A lost address
//     no allocation of the node meets (in a block it does not allocate
//     from: another node's, when its own have room) is recorded again
//     only by the sweep, up to two periods later, in which another node
//     allocating there may take it. No block watch shortens that: the
//     node watches no block, a blocking read of a pool's blocks wakes
//     every node at every allocation anywhere, one per block its
//     containers' addresses are in wakes it at every write of those,
//     other nodes' busy blocks included; and the second sighting spares
//     the leak a first one makes when the container is being removed
//     (still listed a moment after its release, which freed nothing).
//   - Plugin (plugin.go) speaks Docker's protocol on a private socket;
//     Gate (gate.go) serves it from the agent's start, answering dockerd's
//     activation at once and holding pool and address requests until the
//     node's identity is claimed and the reclaimer's first listing of the
//     node's containers is taken in (Reclaimer.Listed, Gate.OpenWhenListed):
//     before it, the node knows of no address they hold. The agent bounds
//     that wait (its ListingWait): at boot dockerd serves no listing
//     before the containers it restores, which ask the plugin, started.
//     The pool ID it gives Docker names the
//     network's generation (Pool.PluginID: NAME/v4@GEN, GEN the spec's
//     CreateIndex), so that a network made again under the name is never
//     served, nor freed into, under the old one's ID; KV and everything
//     else name a pool by Pool.ID (NAME/v4). An older agent's pool ID,
//     naming no generation (NAME/v4), is served from the spec under the
//     name; once the plugin served it, under the generation it served it
//     under only (Plugin.remadeSinceLocked). One window is left there: a
//     plugin started after the network was made again (its keys deleted
//     while an older agent's Docker network of it lived) takes the ID for
//     the new network's, so that network's late release frees the address
//     in the new one.
//
// Unit tests run on kvtest's in-memory KV; a seeded model test
// (model_test.go) drives several simulated nodes through crashes, long
// and failed container starts, stray releases, races, departures and
// Consul losing running containers' addresses, hunting duplicates.
//
// It imports netspec, kvstore and backoff, and httpserve (the plugin's
// server), regularfile (the freed file), termtext and shellword (names
// shown readable). Its I/O edges: Consul KV behind
// KV (consul.KV), the local containers behind Held and the swarm behind
// Cluster (dockerhost), the plugin's Unix socket, and the file of what the
// node freed lately behind FreedStore.
package ipam
