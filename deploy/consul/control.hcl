# Consul ACL policy of `underlay control`, the autoscaler (Consul 1.8 or
# later): exactly what it reads and writes, nothing else.
#
#   consul acl policy create -name underlay-control -rules @/usr/share/underlay/consul/control.hcl
#   consul acl token create -description "underlay control" -policy-name underlay-control

# Decision history, Alertmanager alerts, the leader lock (--leader-election)
# and bearer tokens kept in Consul (--token-consul-key under this prefix).
key_prefix "underlay/scale/" {
  policy = "write"
}

# The agents' task CPU and memory reports (underlay:cpu, underlay:memory).
key_prefix "underlay/metrics/" {
  policy = "read"
}

# The leader lock's session, made on the local Consul agent's node.
session_prefix "" {
  policy = "write"
}

# The dashboard (/ui): network specs, leases and states, node facts,
# cluster-IPAM pools, the address inventory and the agents' doctor
# reports, read only.
key_prefix "underlay/networks/" {
  policy = "read"
}
key_prefix "underlay/nodes/" {
  policy = "read"
}
key_prefix "underlay/ipam/" {
  policy = "read"
}
key_prefix "underlay/inventory/" {
  policy = "read"
}
key_prefix "underlay/doctor/" {
  policy = "read"
}

# The dashboard's task cards: every service's instances and their health,
# read only.
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
