# Consul ACL policy of `underlay node rm` (Consul 1.8 or later), the
# operator's removal of what a node removed from the swarm left in Consul:
# exactly what it reads and writes, nothing else.
#
#   consul acl policy create -name underlay-node-rm -rules @/usr/share/underlay/consul/node-rm.hcl
#   consul acl token create -description "underlay node rm" -policy-name underlay-node-rm

# Node facts: listed to find the node and watch its agent, taken over
# while it is removed (check-and-set), deleted last.
key_prefix "underlay/nodes/" {
  policy = "write"
}

# The record of the removal, written first (with a check that the node
# has no facts when it has none, which Consul 1.8 asks write rights of),
# and the records listed, to warn of a name removed before.
key_prefix "underlay/removed-nodes/" {
  policy = "write"
}

# Cluster networks: specs read, the node's range leases and state reports
# deleted.
key_prefix "underlay/networks/" {
  policy = "write"
}

# Cluster IPAM pools: the node's addresses freed from each block, blocks
# left empty deleted, the addresses it kept deleted.
key_prefix "underlay/ipam/" {
  policy = "write"
}

# The node's address inventory, task metrics and doctor report (under its
# swarm node ID, and those an older agent kept under its name), and its
# report of the tasks it left out of Consul, deleted.
key_prefix "underlay/inventory/" {
  policy = "write"
}
key_prefix "underlay/metrics/" {
  policy = "write"
}
key_prefix "underlay/doctor/" {
  policy = "write"
}
key_prefix "underlay/unregistered/" {
  policy = "write"
}

# The catalog's services, read to find those the node's agent registered.
service_prefix "" {
  policy = "read"
}

# Which Consul agents are live members (their nodes' serfHealth), read,
# and the node's services deregistered from the catalog, which Consul
# allows with node:write on their Consul node (service:write is not
# needed). That node is the removed host's Consul agent's, unknown when
# this policy is made: write on every node. To narrow it, make the token
# of a removal with `node_prefix "" { policy = "read" }` and a
# `node "CONSUL-NODE" { policy = "write" }` rule instead; services on
# other Consul nodes are then left, and warned of.
node_prefix "" {
  policy = "write"
}
