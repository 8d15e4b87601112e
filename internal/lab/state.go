package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
)

// record is what the state directory's lab.json holds: the config the lab
// was made with and the management subnet it took.
type record struct {
	Config     Config       `json:"config"`
	Management netip.Prefix `json:"management_subnet"`
}

// labDir is the state directory of a lab.
func labDir(root, name string) string { return filepath.Join(root, name) }

// nodeDir is the state directory of one node.
func (p *plan) nodeDir(n *nodePlan) string {
	return filepath.Join(labDir(p.root, p.cfg.Name), n.Name)
}

func (p *plan) dir() string { return labDir(p.root, p.cfg.Name) }

func readRecord(root, name string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(labDir(root, name), "lab.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("lab %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab %s: %w", name, err)
	}
	var r record
	err = json.Unmarshal(b, &r)
	if err == nil {
		err = r.check(name)
	}
	if err != nil {
		// Down finds what a lab made by its name, not from this file.
		return nil, fmt.Errorf("lab %s: state file %s is damaged: %w; remove the lab with `underlay lab down --name %s`",
			name, filepath.Join(labDir(root, name), "lab.json"), err, name)
	}
	return &r, nil
}

// check checks a record read from lab name's directory: the plan made from
// it names links, addresses and nodes, so a file cut short, edited or of
// another lab must not make one (an invalid management subnet panicked in
// newPlan; another lab's name made the plan of that lab's links).
func (r *record) check(name string) error {
	if r.Config.Name != name {
		return fmt.Errorf("it names lab %q", r.Config.Name)
	}
	if err := r.Config.withDefaults().checkShape(); err != nil {
		return err
	}
	// Only prepare chooses it, among these: anything else is on no bridge
	// of the lab's, and may be the machine's own network.
	if !slices.Contains(mgmtCandidates(), r.Management) {
		return fmt.Errorf("management subnet %s: want a /24 in 172.31.0.0/16", r.Management)
	}
	return nil
}

func writeRecord(root string, r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	dir := labDir(root, r.Config.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make state directory: %w", err)
	}
	tmp := filepath.Join(dir, "lab.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write lab.json: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, "lab.json"))
}

// loadPlan reads an existing lab's plan.
func (l Labs) loadPlan(name string) (*plan, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	r, err := readRecord(l.root(), name)
	if err != nil {
		return nil, err
	}
	return newPlan(l.root(), r.Config.withDefaults(), r.Management)
}

// otherLabs lists the records of every lab under root but name.
func otherLabs(root, name string) []*record {
	entries, _ := os.ReadDir(root)
	var out []*record
	for _, e := range entries {
		if !e.IsDir() || e.Name() == name {
			continue
		}
		if r, err := readRecord(root, e.Name()); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// RecordedConfig returns the config lab name was made with; the error wraps
// ErrNotFound when it does not exist.
func (l Labs) RecordedConfig(name string) (Config, error) {
	if err := validName(name); err != nil {
		return Config{}, err
	}
	r, err := readRecord(l.root(), name)
	if err != nil {
		return Config{}, err
	}
	return r.Config.withDefaults(), nil
}
