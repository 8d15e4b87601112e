package guest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Files the lab writes into a VM node's state directory before it boots.
const (
	ConfigFile = "guest.json"
	// TokenFile holds the secret every request must carry (mode 0600).
	TokenFile = "guest.token"
)

// Config is what the lab tells a VM node about itself.
type Config struct {
	Host string `json:"host"`
	// Address is the node's management address, on the bond; the control
	// server listens on it.
	Address netip.Prefix `json:"address"`
	// Gateway is the default route's next hop.
	Gateway netip.Addr `json:"gateway"`
	// Bond is made of Members (the NICs) in BondMode, with MII link
	// monitoring every Miimon milliseconds.
	Bond     string   `json:"bond"`
	BondMode string   `json:"bond_mode"`
	Members  []string `json:"members"`
	Miimon   int      `json:"miimon"`
	// TmpFS are mounted empty at boot (overlay2 and containerd cannot work
	// on the overlay over 9p).
	TmpFS []string `json:"tmpfs"`
	// Systemd makes systemd PID 1 once the node's network is up (Init
	// execs it): the lab's daemons are then systemd units, and the VM has a
	// disk, so what the node installs survives a reboot.
	Systemd bool `json:"systemd,omitempty"`
}

// Listen is the control server's address.
func (c Config) Listen() string {
	return netip.AddrPortFrom(c.Address.Addr(), Port).String()
}

// WriteConfig writes c and token into dir.
func WriteConfig(dir string, c Config, token string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), b, 0o644); err != nil {
		return fmt.Errorf("write guest config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, TokenFile), []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("write guest token: %w", err)
	}
	return nil
}

// ReadConfig reads the config and token of the node whose state directory is dir.
func ReadConfig(dir string) (Config, string, error) {
	var c Config
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return c, "", fmt.Errorf("read guest config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, "", fmt.Errorf("read guest config: %w", err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil {
		return c, "", fmt.Errorf("read guest token: %w", err)
	}
	return c, strings.TrimSpace(string(tok)), nil
}

// KernelArgs are the kernel command line arguments that tell the
// initramfs what to run as init: the underlay binary (a path on the
// host's file system) and the node's state directory.
func KernelArgs(bin, nodeDir string) []string {
	return []string{"ul.init=" + bin, "ul.dir=" + nodeDir}
}
