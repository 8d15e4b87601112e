package scalebench

import (
	"fmt"
	"strconv"

	"github.com/hashicorp/consul/api"
)

// RaftCommitIndex is the raft commit index of the Consul server c talks
// to (its agent/self stats): every write Consul makes — KV sets and
// transactions, rolled back or not, catalog registrations, check status
// changes, sessions — is one raft entry, so its growth over a window is
// the servers' write count.
func RaftCommitIndex(c *api.Client) (uint64, error) {
	self, err := c.Agent().Self()
	if err != nil {
		return 0, fmt.Errorf("read consul agent/self: %w", err)
	}
	stats, _ := self["Stats"]["raft"].(map[string]any)
	s, _ := stats["commit_index"].(string)
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("consul agent/self: raft commit_index %q (is the agent a server?): %w", s, err)
	}
	return n, nil
}
