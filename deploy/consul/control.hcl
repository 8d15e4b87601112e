# Consul ACL policy of `underlay control`, the autoscaler (Consul 1.8 or
# later): exactly what it reads and writes, nothing else.
#
#   consul acl policy create -name underlay-control -rules @/usr/share/underlay/consul/control.hcl
#   consul acl token create -description "underlay control" -policy-name underlay-control

# Decision history, Alertmanager alerts and the leader lock (--leader-election).
key_prefix "underlay/scale/" {
  policy = "write"
}

# Bearer tokens kept in Consul (--token-consul-key underlay/scale/tokens),
# read only: whoever holds control's Consul token must not be able to give
# themselves an API token. An exact key rule takes precedence over the
# prefix above. Another key for --token-consul-key needs its own read rule.
key "underlay/scale/tokens" {
  policy = "read"
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
# cluster-IPAM pools, the address inventory, the agents' doctor reports
# and their reports of the tasks they leave out of Consul, read only.
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
key_prefix "underlay/unregistered/" {
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
