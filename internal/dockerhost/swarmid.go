package dockerhost

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// DefaultDataRoot is dockerd's default --data-root.
const DefaultDataRoot = "/var/lib/docker"

// swarmNodeIDRE is a swarm node ID: 25 base-36 digits.
var swarmNodeIDRE = regexp.MustCompile(`^[a-z0-9]{25}$`)

// SwarmNodeIDFromCert reads this node's swarm node ID from the node
// certificate swarm keeps under dockerd's data root (its subject's common
// name). It answers while dockerd does not — at boot, dockerd's API waits
// until it restored the containers on swarm networks, which with cluster
// IPAM need the agent's plugin, which needs the node's identity.
func SwarmNodeIDFromCert(dataRoot string) (string, error) {
	path := filepath.Join(dataRoot, "swarm", "certificates", "swarm-node.crt")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("swarm node certificate: %w", err)
	}
	return swarmNodeIDOf(b, path)
}

// swarmNodeIDOf is the node ID in the first certificate of PEM data b
// (read from path, for errors).
func swarmNodeIDOf(b []byte, path string) (string, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("swarm node certificate %s: no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("swarm node certificate %s: %w", path, err)
	}
	id := cert.Subject.CommonName
	if !swarmNodeIDRE.MatchString(id) {
		return "", fmt.Errorf("swarm node certificate %s: common name %q is not a swarm node ID", path, id)
	}
	return id, nil
}
