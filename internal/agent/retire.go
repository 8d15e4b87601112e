package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/decommission"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/netspec"
)

// retireNameKey deletes key, where an agent before reports were keyed by
// swarm node ID kept the report (doctor's or task metrics') of node name
// under the name, once this agent, of swarm node id, published its own
// under its ID: readers prefer that one, and nothing else would delete
// the old one while the node lives.
//
// It goes only when it is this node's for sure (decommission.NameKeyOwned):
// it names id, or names no swarm node and no other node of the name is
// live (facts refreshed within netagent.StaleAfter of now, or stamped
// ahead) with an older agent: one that publishes its own report under
// its ID (byID, the layout's prefix) writes no name key. Two nodes of
// one name shared the key, and the other's agent may be an older one
// still writing it: its report would be gone until its next period. A report naming another node, or
// one that cannot be read, stays, as does one left while unsure: `underlay
// node rm` of its node removes it. It is deleted as read (check-and-set),
// so that one another agent wrote meanwhile stays.
func retireNameKey(ctx context.Context, kv netspec.KV, key, byID, name, id string, now time.Time, log *slog.Logger) {
	log = log.With("key", key, "node", name, "node_id", id)
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: key}})
	if err != nil {
		log.Warn("the report kept under this node's name by an older agent is left: it cannot be read", "err", err)
		return
	}
	if !res.OK || len(res.Pairs) == 0 {
		return // none
	}
	p := res.Pairs[0]
	var doc struct {
		NodeID string `json:"node_id"`
	}
	if err := json.Unmarshal(p.Value, &doc); err != nil {
		log.Info("the report kept under this node's name is left: it cannot be read, so it may be another node's of the name (underlay doctor names it, with its fix)", "err", err)
		return
	}
	others := false
	if doc.NodeID == "" {
		facts, _, err := netspec.NewStore(kv).ReadNodes(ctx)
		if err != nil {
			log.Warn("the report kept under this node's name by an older agent is left: the nodes' facts cannot be read", "err", err)
			return
		}
		for _, f := range facts {
			if f.Node != name || f.ID == id || now.Sub(f.UpdatedAt) > netagent.StaleAfter {
				continue
			}
			upgraded, err := publishesByID(ctx, kv, byID, f.ID)
			if err != nil {
				log.Warn("the report kept under this node's name by an older agent is left: another node's of the name under its ID cannot be read", "err", err)
				return
			}
			if !upgraded {
				others = true
				break
			}
		}
	}
	if !decommission.NameKeyOwned(doc.NodeID, id, others) {
		log.Info("the report kept under this node's name is left: it may be another node's of the name; `underlay node rm` of that node removes it",
			"names_node_id", doc.NodeID, "other_live_node_of_the_name", others)
		return
	}
	res, err = kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.DeleteCAS, Key: key, Index: p.Index}})
	switch {
	case err != nil:
		log.Warn("the report kept under this node's name by an older agent is left: it cannot be deleted", "err", err)
	case res.OK:
		log.Info("deleted the report kept under this node's name by an older agent: it is published under the swarm node ID")
	}
}

// publishesByID says swarm node id publishes its report under its ID
// (byID+id, naming id): its agent is upgraded, and writes no name key.
func publishesByID(ctx context.Context, kv netspec.KV, byID, id string) (bool, error) {
	if id == "" || strings.Contains(id, "/") {
		return false, nil // no report of its own to tell by
	}
	key := byID + id
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: key}})
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	if !res.OK || len(res.Pairs) == 0 {
		return false, nil
	}
	var doc struct {
		NodeID string `json:"node_id"`
	}
	return json.Unmarshal(res.Pairs[0].Value, &doc) == nil && doc.NodeID == id, nil
}
