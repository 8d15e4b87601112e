package ipam

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/underlay/underlay/internal/regularfile"
	"github.com/underlay/underlay/internal/termtext"
)

// FreedFileName is the name of the file, in the agent's state directory,
// where node's allocator keeps what it freed lately. One per identity: a
// node that joined the swarm again is another node, whose addresses the
// old one's record does not name.
func FreedFileName(node string) string { return "ipam-freed-" + node + ".json" }

// FreedFile is a FreedStore in a small JSON file, rewritten whole
// (a temporary file renamed over it) at each save, so that a reader finds
// the last save or the one before, never a part of one.
type FreedFile struct {
	// Path is the file's path.
	Path string
}

// NewFreedFile returns the FreedFile of node in the state directory dir.
func NewFreedFile(dir, node string) (*FreedFile, error) {
	if dir == "" {
		return nil, fmt.Errorf("keep the addresses node %s freed lately: no state directory", node)
	}
	if !fileSafeNode(node) {
		return nil, fmt.Errorf("keep the addresses node %s freed lately: the identity is not letters, digits, '-' and '_' only", termtext.Q(node))
	}
	return &FreedFile{Path: filepath.Join(dir, FreedFileName(node))}, nil
}

// fileSafeNode accepts what swarm node IDs are made of, and test names.
func fileSafeNode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// maxFreedFile bounds what Load reads: far more than the addresses a node
// frees within reuseAfter in any pool it serves (about 50 bytes each).
const maxFreedFile = 256 << 20

// freedRecord is the file's content.
type freedRecord struct {
	// Freed is, by pool ID and address, when the address was freed
	// (Freed.At).
	Freed map[string]map[string]time.Time `json:"freed"`
	// Again are those handed out again since (Freed.Again), in the same
	// form; an older agent, which does not read them, passes them over
	// as in use.
	Again map[string]map[string]time.Time `json:"again,omitempty"`
}

// Load reads the file; a missing one holds nothing.
func (f *FreedFile) Load() (Freed, error) {
	// Not a named pipe, which would hold the allocator's start (the
	// plugin's answers) waiting for a writer.
	raw, _, err := regularfile.Read(f.Path, maxFreedFile)
	if os.IsNotExist(err) {
		return Freed{}, nil
	}
	if err != nil {
		return Freed{}, fmt.Errorf("read the addresses freed lately: %w", err)
	}
	return decodeFreed(f.Path, raw)
}

// decodeFreed decodes the content of the file at path.
func decodeFreed(path string, raw []byte) (Freed, error) {
	var rec freedRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return Freed{}, fmt.Errorf("decode the addresses freed lately in %s: %w", path, err)
	}
	at, err := decodeFreedAddrs(path, "", rec.Freed)
	if err != nil {
		return Freed{}, err
	}
	again, err := decodeFreedAddrs(path, "handed out again: ", rec.Again)
	if err != nil {
		return Freed{}, err
	}
	return Freed{At: at, Again: again}, nil
}

// decodeFreedAddrs decodes one map of the file at path (what: its name
// in errors, if any).
func decodeFreedAddrs(path, what string, in map[string]map[string]time.Time) (map[string]map[netip.Addr]time.Time, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]map[netip.Addr]time.Time, len(in))
	for _, id := range slices.Sorted(maps.Keys(in)) {
		m := make(map[netip.Addr]time.Time, len(in[id]))
		for _, k := range slices.Sorted(maps.Keys(in[id])) {
			a, err := netip.ParseAddr(k)
			if err != nil {
				return nil, fmt.Errorf("decode the addresses freed lately in %s: %spool %s: %s is not an address", path, what, termtext.Cell(id), termtext.Q(k))
			}
			m[a] = in[id][k]
		}
		out[id] = m
	}
	return out, nil
}

// Save replaces the file's content with freed. It is not synced to disk:
// the late release it guards against comes from a dockerd that outlived
// the agent, and a machine that crashed took its dockerd with it.
func (f *FreedFile) Save(freed Freed) error {
	rec := freedRecord{Freed: encodeFreedAddrs(freed.At), Again: encodeFreedAddrs(freed.Again)}
	if rec.Freed == nil {
		rec.Freed = map[string]map[string]time.Time{}
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode the addresses freed lately: %w", err)
	}
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save the addresses freed lately: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(f.Path)+".*")
	if err != nil {
		return fmt.Errorf("save the addresses freed lately: %w", err)
	}
	defer os.Remove(tmp.Name()) // once renamed, there is nothing to remove
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return fmt.Errorf("save the addresses freed lately to %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save the addresses freed lately to %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("save the addresses freed lately: %w", err)
	}
	return nil
}

// encodeFreedAddrs is what the file holds of by (nil: nothing).
func encodeFreedAddrs(by map[string]map[netip.Addr]time.Time) map[string]map[string]time.Time {
	if len(by) == 0 {
		return nil
	}
	out := make(map[string]map[string]time.Time, len(by))
	for id, addrs := range by {
		m := make(map[string]time.Time, len(addrs))
		for a, at := range addrs {
			m[a.String()] = at.UTC()
		}
		out[id] = m
	}
	return out
}
