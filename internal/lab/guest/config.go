package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path"
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
	if err := WriteNodeFile(dir, ConfigFile, b, 0o644); err != nil {
		return fmt.Errorf("write guest config: %w", err)
	}
	if err := WriteNodeFile(dir, TokenFile, []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("write guest token: %w", err)
	}
	return nil
}

// ReadConfig reads the config and token of the node whose state directory
// is dir. A symbolic link out of dir is refused (ReadNodeFile).
func ReadConfig(dir string) (Config, string, error) {
	var c Config
	b, err := ReadNodeFile(dir, ConfigFile)
	if err != nil {
		return c, "", fmt.Errorf("read guest config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, "", fmt.Errorf("read guest config: %w", err)
	}
	tok, err := ReadNodeFile(dir, TokenFile)
	if err != nil {
		return c, "", fmt.Errorf("read guest token: %w", err)
	}
	return c, strings.TrimSpace(string(tok)), nil
}

// A VM node's directory is shared read-write with the guest, which is root
// there: any name in it may be a symbolic link the guest made. The host
// reads and writes in it through these, which never leave it: a token
// read through a link to /etc/shadow would be sent to the guest with every
// request, a config written through one to /etc/passwd would replace it.

// ReadNodeFile reads file name (slash-separated, under dir), refusing a
// path that leaves dir through a symbolic link.
func ReadNodeFile(dir, name string) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.ReadFile(name)
}

// WriteNodeFile writes file name (slash-separated, under dir) afresh with
// perm: what is there, a symbolic link included, is replaced, never
// written through; its directories are made, never followed out of dir.
func WriteNodeFile(dir, name string, data []byte, perm os.FileMode) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// KernelArgs are the kernel command line arguments that tell the
// initramfs what to run as init: the underlay binary (a path on the
// host's file system) and the node's state directory.
func KernelArgs(bin, nodeDir string) []string {
	return []string{"ul.init=" + bin, "ul.dir=" + nodeDir}
}
