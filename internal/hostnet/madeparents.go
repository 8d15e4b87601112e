package hostnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/regularfile"
)

// MadeParent is a VLAN parent the agent made: link, VLAN VLAN on its
// lower device Lower, made for Network.
type MadeParent struct {
	Link    string `json:"link"`
	Lower   string `json:"lower"`
	VLAN    int    `json:"vlan"`
	Network string `json:"network"`
}

// check refuses a record no VLAN parent the agent makes has: a link
// named as its lower device and VLAN say (see netspec.VLANParent), for a
// network named as netspec names them.
func (p MadeParent) check() error {
	lower, vid, ok := vlanParent(p.Link)
	switch {
	case !linkName(p.Link) || !ok:
		return fmt.Errorf("link %q is not named like a VLAN sub-interface", p.Link)
	case lower != p.Lower || vid != p.VLAN:
		return fmt.Errorf("link %q is VLAN %d on %s by its name, recorded as VLAN %d on %q", p.Link, vid, lower, p.VLAN, p.Lower)
	case !netspec.IsNetworkName(p.Network):
		return fmt.Errorf("link %q: network %q is not a network name", p.Link, p.Network)
	}
	return nil
}

// ParentRecord remembers the VLAN parents the agent made, across reboots
// (no boot ID: the record is of the link's name, lower device and VLAN,
// which a reboot keeps). At boot dockerd, restoring a container whose
// restart policy brings it back, has Docker's macvlan or ipvlan driver
// make a missing parent itself, unmarked, before the agent runs: the
// record tells the agent's own parent, made again, from an operator's,
// which is never taken (see Observed.ParentMadeFor).
type ParentRecord interface {
	// Add records p, replacing any record of its link.
	Add(p MadeParent) error
	// Get returns the record of link; ok is false when there is none. A
	// record that cannot be read is an error naming it, wrapping
	// ErrBadParentRecord when it is not one.
	Get(link string) (p MadeParent, ok bool, err error)
	// List returns every record, by link name.
	List() ([]MadeParent, error)
	// Remove forgets link; an absent record is no error.
	Remove(link string) error
	// Where names the record, for logs and errors.
	Where() string
}

// ErrBadParentRecord marks a record of the parents made that holds no
// such record (garbled, truncated, or another file): it is read as
// recording none, so that no link is taken for the agent's on its
// strength, and left as it is for the operator.
var ErrBadParentRecord = errors.New("not a record of the VLAN parents the agent made")

// ParentsFileName is the file, in the agent's state directory, of its
// ParentFile.
const ParentsFileName = "vlan-parents.json"

// maxParentsFile bounds what is read: a record is about 80 bytes, and a
// host carries at most 4094 VLANs a device.
const maxParentsFile = 1 << 20

// ParentFile is a ParentRecord in one JSON file, replaced whole (a
// temporary file synced, then renamed into place) at every change, and
// removed once it records none. Its methods may be called concurrently.
type ParentFile struct {
	Path string
	// mu orders the read-modify-write of Add and Remove, and guards
	// warned.
	mu sync.Mutex
	// warned is the error of the unreadable record last warned of (see
	// newProblem); "" since the file was last read fine.
	warned string
}

// NewParentFile is the ParentFile of the agent's state directory
// stateDir.
func NewParentFile(stateDir string) *ParentFile {
	return &ParentFile{Path: filepath.Join(stateDir, ParentsFileName)}
}

// Where is the file's path.
func (f *ParentFile) Where() string { return f.Path }

// parentsDoc is the file's content.
type parentsDoc struct {
	Parents []MadeParent `json:"parents"`
}

// read returns the records; a missing file holds none.
func (f *ParentFile) read() ([]MadeParent, error) {
	// Not a named pipe, which would hold the agent's sync waiting for a
	// writer.
	b, _, err := regularfile.Read(f.Path, maxParentsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the record of the VLAN parents the agent made: %w", err)
	}
	var doc parentsDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", f.Path, ErrBadParentRecord, err)
	}
	seen := map[string]bool{}
	for _, p := range doc.Parents {
		if err := p.check(); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", f.Path, ErrBadParentRecord, err)
		}
		if seen[p.Link] {
			return nil, fmt.Errorf("%s: %w: link %q recorded twice", f.Path, ErrBadParentRecord, p.Link)
		}
		seen[p.Link] = true
	}
	f.warned = ""
	return doc.Parents, nil
}

// newProblem reports whether err, the file's read error, is to be
// warned of: not the one last warned of while the file stayed
// unreadable. The agent reads the record at every sync, and a corrupt
// file would fill its log with one problem.
func (f *ParentFile) newProblem(err error) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.warned == err.Error() {
		return false
	}
	f.warned = err.Error()
	return true
}

// problems is a ParentRecord that remembers the read errors warned of
// (ParentFile); another is warned of at every read.
type problems interface{ newProblem(err error) bool }

// Get returns the record of link.
func (f *ParentFile) Get(link string) (MadeParent, bool, error) {
	all, err := f.List()
	if err != nil {
		return MadeParent{}, false, err
	}
	i := slices.IndexFunc(all, func(p MadeParent) bool { return p.Link == link })
	if i < 0 {
		return MadeParent{}, false, nil
	}
	return all[i], true, nil
}

// List returns every record.
func (f *ParentFile) List() ([]MadeParent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.read()
}

// Add records p. A file that holds no record is left as it is, and p is
// not recorded: an error names it.
func (f *ParentFile) Add(p MadeParent) error {
	if err := p.check(); err != nil {
		return fmt.Errorf("record VLAN parent %s as made: %w", p.Link, err)
	}
	return f.change(func(all []MadeParent) []MadeParent {
		all = slices.DeleteFunc(all, func(q MadeParent) bool { return q.Link == p.Link })
		return append(all, p)
	})
}

// Remove forgets link.
func (f *ParentFile) Remove(link string) error {
	return f.change(func(all []MadeParent) []MadeParent {
		return slices.DeleteFunc(all, func(q MadeParent) bool { return q.Link == link })
	})
}

// change replaces the records by edit's, writing them only when they
// changed; none left, the file is removed.
func (f *ParentFile) change(edit func([]MadeParent) []MadeParent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, err := f.read()
	if err != nil {
		return err
	}
	all := edit(slices.Clone(old))
	slices.SortFunc(all, func(a, b MadeParent) int { return strings.Compare(a.Link, b.Link) })
	if slices.Equal(all, old) {
		return nil
	}
	if len(all) == 0 {
		if err := os.Remove(f.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove the record of the VLAN parents the agent made: %w", err)
		}
		return syncDir(filepath.Dir(f.Path))
	}
	return f.write(all)
}

// write replaces the file by one of all, whole or not at all: a record
// lost to a power cut would leave a parent dockerd makes again at the
// next boot unmarked for good, so it is on disk before it is renamed
// into place, and the rename before write returns.
func (f *ParentFile) write(all []MadeParent) error {
	b, err := json.MarshalIndent(parentsDoc{Parents: all}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the record of the VLAN parents the agent made: %w", err)
	}
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("record the VLAN parents the agent made: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(f.Path)+".*")
	if err != nil {
		return fmt.Errorf("record the VLAN parents the agent made: %w", err)
	}
	defer os.Remove(tmp.Name()) // once renamed, there is nothing to remove
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record the VLAN parents the agent made in %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("record the VLAN parents the agent made: %w", err)
	}
	return syncDir(dir)
}

// syncDir puts dir's entries (a rename, a removal) on disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// log is h.Log, or a logger of nothing.
func (h Host) log() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return h.Log
}

// badRecord logs err, the record's that could not be read: no unmarked
// parent is taken for the agent's while it stays. It warns once per
// distinct error while the record stays unreadable (see
// ParentFile.newProblem); the same again is logged at debug level.
func (h Host) badRecord(err error) {
	if p, ok := h.Parents.(problems); ok && !p.newProblem(err) {
		h.log().Debug("the record of the VLAN parents the agent made still cannot be read", "record", h.Parents.Where(), "err", err)
		return
	}
	h.log().Warn("the record of the VLAN parents the agent made cannot be read: taken as recording none, so a parent dockerd made again unmarked at boot stays unmarked, and is left by agent cleanup; fix or delete the file",
		"record", h.Parents.Where(), "err", err)
}

// parentRecord compares the VLAN parent name, the VLAN its name says,
// with alias, with h.Parents: made for network, when it is unmarked and
// recorded so (Observed.ParentMadeFor); unrecorded, the network its mark
// names, when it is marked as h's Owner's (adopt: or adopted now) and not
// recorded so (Observed.ParentUnrecorded).
func (h Host) parentRecord(name, alias string, adopt bool) (madeFor, unrecorded string) {
	if h.Parents == nil {
		return "", ""
	}
	network, owner, marked := parseMark(alias, ownedPrefix)
	if alias != "" && (!marked || owner != h.Owner && !adopt) {
		return "", "" // someone else's
	}
	rec, ok, err := h.Parents.Get(name)
	if err != nil {
		h.badRecord(err)
		return "", ""
	}
	ok = ok && recordMatches(rec, name)
	switch {
	case alias == "" && ok:
		return rec.Network, ""
	case alias == "" || ok && rec.Network == network:
		return "", ""
	}
	return "", network
}

// recordMatches reports whether rec records name, of the lower device and
// VLAN id its name says.
func recordMatches(rec MadeParent, name string) bool {
	lower, vid, ok := vlanParent(name)
	return ok && rec.Link == name && rec.Lower == lower && rec.VLAN == vid
}

// recordedFor is the network h.Parents records parent as made for, when
// it is an unmarked VLAN, the one its name says (see
// Observed.ParentMadeFor); "" otherwise.
func (h Host) recordedFor(k kernel, parent string) string {
	if h.Parents == nil {
		return ""
	}
	l, err := k.LinkByName(parent)
	if err != nil || l.Type() != "vlan" || l.Attrs().Alias != "" {
		return ""
	}
	if other, err := otherVLAN(k, l, parent); err != nil || other != "" {
		return ""
	}
	madeFor, _ := h.parentRecord(parent, "", false)
	return madeFor
}

// remember records parent, the VLAN its name says, as made for network.
// A record that cannot be written is logged, not the network's failure:
// the parent is marked, and only a reboot in which dockerd makes it
// again would lose it.
func (h Host) remember(parent, network string) {
	if h.Parents == nil {
		return
	}
	lower, vid, _ := vlanParent(parent)
	if err := h.Parents.Add(MadeParent{Link: parent, Lower: lower, VLAN: vid, Network: network}); err != nil {
		h.log().Warn("the VLAN parent the agent made is not recorded: if dockerd makes it again at boot before the agent runs, it stays unmarked, and agent cleanup leaves it",
			"parent", parent, "network", network, "record", h.Parents.Where(), "err", err)
		return
	}
	h.log().Debug("VLAN parent recorded as made by the agent", "parent", parent, "network", network, "record", h.Parents.Where())
}

// reclaim marks parent, unmarked and recorded as made for network, as
// h's Owner's, and says why.
func (h Host) reclaim(k kernel, parent netlink.Link, network string) error {
	if err := k.LinkSetAlias(parent, withOwner(OwnerAlias(network), h.Owner)); err != nil {
		return err
	}
	h.log().Info("VLAN parent marked as the agent's again: the agent made it, as its record says, and it came back unmarked (dockerd makes a missing parent itself when it restores a container at boot, before the agent runs)",
		"parent", parent.Attrs().Name, "network", network, "record", h.Parents.Where())
	return nil
}

// forget removes the record of parent made for network once the link is
// gone. One that cannot be removed is logged: a link of that name made
// later, unmarked, would be taken for the agent's.
func (h Host) forget(k kernel, parent, network string) {
	if h.Parents == nil {
		return
	}
	rec, ok, err := h.Parents.Get(parent)
	if err != nil || !ok || rec.Network != network {
		return
	}
	if _, err := k.LinkByName(parent); !errors.As(err, new(netlink.LinkNotFoundError)) {
		return
	}
	if err := h.Parents.Remove(parent); err != nil {
		h.log().Warn("the record of a VLAN parent the agent made, now gone, cannot be removed: an unmarked VLAN of its name would be taken for the agent's",
			"parent", parent, "network", network, "record", h.Parents.Where(), "err", err)
		return
	}
	h.log().Debug("record of the VLAN parent removed", "parent", parent, "network", network, "record", h.Parents.Where())
}
