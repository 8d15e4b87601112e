// Package deploy holds what underlay ships for real hosts — the swarm
// stack file, the systemd units, the default settings and the Consul ACL
// policies — embedded, so that the lab deploys itself with the very files
// users get and the tests check the policies the README documents.
//
// The image (Dockerfile) and the Debian package (debian/) are built from
// this directory by scripts/build-image.sh and scripts/build-deb.sh
// (`make image deb`).
package deploy

import "embed"

// Stack is stack.yml, for `docker stack deploy`.
//
//go:embed stack.yml
var Stack []byte

// StackName is the stack name the README and the lab deploy Stack under;
// its services are StackName_agent and StackName_control.
const StackName = "underlay"

// Secrets the stack reads, made by the operator with `docker secret create`.
const (
	SecretAgentConsulToken   = "underlay_agent_consul_token"
	SecretControlConsulToken = "underlay_control_consul_token"
	SecretControlTokens      = "underlay_control_tokens"
	SecretControlPeerSecret  = "underlay_control_peer_secret"
)

// ControlPort is the port control listens on, on the managers running it,
// unless UNDERLAY_CONTROL_PORT says otherwise.
const ControlPort = 8000

// TokensKey is the Consul key that control.hcl lets control read bearer
// tokens from (--token-consul-key), and not write.
const TokensKey = "underlay/scale/tokens"

// AgentPolicy, ControlPolicy and NodeRmPolicy are the Consul ACL
// policies (HCL) of the agent, of control and of `underlay node rm`.
var (
	//go:embed consul/agent.hcl
	AgentPolicy string
	//go:embed consul/control.hcl
	ControlPolicy string
	//go:embed consul/node-rm.hcl
	NodeRmPolicy string
)

// Units holds the systemd units, under systemd/.
//
//go:embed systemd
var Units embed.FS
