# Consul ACL policy of `underlay agent` (Consul 1.8 or later): exactly what
# it reads and writes, nothing else.
#
#   consul acl policy create -name underlay-agent -rules @/usr/share/underlay/consul/agent.hcl
#   consul acl token create -description "underlay agent" -policy-name underlay-agent
#
# With a token per node, `underlay agent acl-policy` on the node prints
# this policy narrowed to the node's own keys.

# Its local Consul agent's address (/v1/agent/self), registered for
# published ports and host-network containers.
agent_prefix "" {
  policy = "read"
}

# The services of this host's containers, under whatever names their
# SERVICE_* labels choose, with their checks.
service_prefix "" {
  policy = "write"
}

# Cluster networks: specs (read), per-node range leases and states (written).
key_prefix "underlay/networks/" {
  policy = "write"
}

# The names of every network, rewritten by each `network create` and `rm`:
# the IPAM plugin reads it to know that what it found of a removed pool
# still holds, instead of reading every spec at each request.
key "underlay/network-index" {
  policy = "read"
}

# This node's facts (interfaces, swarm role), read by `network create`.
key_prefix "underlay/nodes/" {
  policy = "write"
}

# The records `underlay node rm` leaves of the swarm node IDs it removed:
# an agent is refused the identity of a node removed while it was cut off
# from Consul, and none of its writes lands once the record is written.
# Without this rule an agent finds no record, and writes the removed
# node's facts again when it comes back. Read only: write would let an
# agent delete the records that refuse it (Consul 1.8 asks write rights of
# a transaction's check that a key is absent, so each write checks instead
# that the node's facts, which node rm takes over as it writes the record,
# are unchanged: a check asking read rights only).
key_prefix "underlay/removed-nodes/" {
  policy = "read"
}

# Cluster IPAM pools: blocks, allocations, spares, pressure.
key_prefix "underlay/ipam/" {
  policy = "write"
}

# The address inventory shown by `underlay ips`.
key_prefix "underlay/inventory/" {
  policy = "write"
}

# Swarm tasks' CPU and memory, read by the autoscaler: under
# underlay/metrics/id/SWARM-NODE-ID (older agents: underlay/metrics/NODE).
key_prefix "underlay/metrics/" {
  policy = "write"
}

# The Swarm tasks this node's agent leaves out of Consul on purpose, with
# why (no port, SERVICE_IGNORE, --explicit...), shown by the dashboard as
# not registered rather than as mismatches: under
# underlay/unregistered/SWARM-NODE-ID.
key_prefix "underlay/unregistered/" {
  policy = "write"
}

# This node's doctor report (--doctor-interval), shown by the dashboard: under
# underlay/doctor/id/SWARM-NODE-ID (older agents: underlay/doctor/NODE).
key_prefix "underlay/doctor/" {
  policy = "write"
}
