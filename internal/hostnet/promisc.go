package hostnet

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/regularfile"
)

// PromiscRecord remembers the parents underlay made promiscuous, so that
// only those are made not promiscuous again (Host.ReleasePromisc): one
// the operator had made promiscuous stays so. The kernel keeps no such
// mark, and an operator's parent's alias is the operator's.
type PromiscRecord interface {
	// Add records that underlay makes parent, the link of index,
	// promiscuous.
	Add(parent string, index int) error
	// Has reports whether parent, the link of index, is recorded, in
	// this boot of the host: promiscuous mode does not outlive a reboot,
	// nor a link deleted, so a record of an earlier one is none.
	Has(parent string, index int) (bool, error)
	// Remove forgets parent; an absent record is no error.
	Remove(parent string) error
	// List names the parents recorded, whatever their boot.
	List() ([]string, error)
}

// PromiscDir is the directory, in the agent's state directory, of its
// PromiscFiles.
const PromiscDir = "promisc"

// PromiscFiles is a PromiscRecord of one file per parent in Dir, named as
// the parent (a link name holds no '/', and is not . or ..), holding the
// link's index and the host's boot ID.
type PromiscFiles struct {
	Dir string
	// Boot is the host's boot ID (/proc/sys/kernel/random/boot_id).
	Boot string
}

// NewPromiscFiles is the PromiscFiles of the agent's state directory
// stateDir, in this boot.
func NewPromiscFiles(stateDir string) (PromiscFiles, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return PromiscFiles{}, fmt.Errorf("read the boot ID for the record of promiscuous parents: %w", err)
	}
	return PromiscFiles{Dir: filepath.Join(stateDir, PromiscDir), Boot: strings.TrimSpace(string(b))}, nil
}

func (p PromiscFiles) path(parent string) (string, error) {
	if err := checkLinkName("parent", parent); err != nil {
		return "", err
	}
	return filepath.Join(p.Dir, parent), nil
}

// Add writes parent's record, whole or not at all (a temporary file
// renamed into place).
func (p PromiscFiles) Add(parent string, index int) error {
	path, err := p.path(parent)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return fmt.Errorf("record parent %s as made promiscuous: %w", parent, err)
	}
	tmp, err := os.CreateTemp(p.Dir, "."+parent+".*")
	if err != nil {
		return fmt.Errorf("record parent %s as made promiscuous: %w", parent, err)
	}
	defer os.Remove(tmp.Name())
	_, err = fmt.Fprintf(tmp, "%d %s\n", index, p.Boot)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("record parent %s as made promiscuous: %w", parent, err)
	}
	return nil
}

// maxPromiscRecord is the most of a record read: an index and a boot ID
// are far shorter.
const maxPromiscRecord = 256

// Has reads parent's record.
func (p PromiscFiles) Has(parent string, index int) (bool, error) {
	path, err := p.path(parent)
	if err != nil {
		return false, err
	}
	b, _, err := regularfile.Read(path, maxPromiscRecord)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the record of parent %s made promiscuous: %w", parent, err)
	}
	ix, boot, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	return ix == strconv.Itoa(index) && boot == p.Boot && p.Boot != "", nil
}

// Remove deletes parent's record.
func (p PromiscFiles) Remove(parent string) error {
	path, err := p.path(parent)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget parent %s made promiscuous: %w", parent, err)
	}
	return nil
}

// List names the parents of the records in Dir (none when it is
// missing).
func (p PromiscFiles) List() ([]string, error) {
	entries, err := os.ReadDir(p.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the parents made promiscuous: %w", err)
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); !strings.HasPrefix(n, ".") && linkName(n) {
			names = append(names, n)
		}
	}
	return names, nil
}

// ReleasePromisc makes parent not promiscuous again when underlay made it
// so (h.Promisc records it, in this boot) and no macvlan link of this
// network namespace is left on it (a shim of another network, an
// operator's), and reports whether it did. A parent gone, or recorded at
// an earlier boot, is forgotten. Links of other namespaces (containers'
// endpoints) are not seen: the caller checks the networks that have
// them. With no record kept (h.Promisc nil) nothing is done, as before
// underlay kept one; nor for a name no link can have.
func (h Host) ReleasePromisc(parent string) (bool, error) {
	off, _, err := releasePromisc(h.nl(), h.Promisc, parent)
	return off, err
}

// releasePromisc is ReleasePromisc, also reporting whether it removed
// parent's record (forgot).
func releasePromisc(k kernel, rec PromiscRecord, parent string) (off, forgot bool, err error) {
	if rec == nil || !linkName(parent) {
		// No link is named so: none was made promiscuous, and none is
		// recorded (see PromiscFiles), so nothing is looked up.
		return false, false, nil
	}
	forget := func() (bool, bool, error) {
		if err := rec.Remove(parent); err != nil {
			return false, false, err
		}
		return false, true, nil
	}
	l, err := k.LinkByName(parent)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return forget()
		}
		return false, false, fmt.Errorf("read parent %s: %w", parent, err)
	}
	a := l.Attrs()
	// A record that cannot be read is left as it is, and so is the
	// parent: said, not guessed at.
	ours, err := rec.Has(parent, a.Index)
	if err != nil {
		return false, false, err
	}
	if !ours {
		return forget()
	}
	links, err := k.LinkList()
	if err != nil {
		return false, false, fmt.Errorf("list the links on parent %s: %w", parent, err)
	}
	// A macvlan on a macvlan parent is on that parent's lower device
	// (see Observe): the parent itself is one here.
	if slices.ContainsFunc(links, func(m netlink.Link) bool {
		return m.Type() == "macvlan" && m.Attrs().NetNsID < 0 && m.Attrs().ParentIndex == a.Index
	}) {
		return false, false, nil
	}
	if a.Promisc != 0 {
		if err := k.SetPromiscOff(l); err != nil {
			return false, false, fmt.Errorf("set parent %s not promiscuous: %w", parent, err)
		}
	}
	if err := rec.Remove(parent); err != nil {
		return a.Promisc != 0, false, err
	}
	return a.Promisc != 0, true, nil
}

// released is what releaseRecorded did: the parents made not
// promiscuous, and those whose records it removed.
type released struct{ off, forgotten []string }

// releaseRecorded is releasePromisc of every parent rec records but those
// busy reports in use (by containers' endpoints, which the host's listing
// does not see): their promiscuous mode and records stay.
func releaseRecorded(k kernel, rec PromiscRecord, busy func(parent string) bool) (released, error) {
	var r released
	if rec == nil {
		return r, nil
	}
	parents, err := rec.List()
	if err != nil {
		return r, err
	}
	var errs []error
	for _, p := range parents {
		if busy(p) {
			continue
		}
		off, forgot, err := releasePromisc(k, rec, p)
		if off {
			r.off = append(r.off, p)
		}
		if forgot {
			r.forgotten = append(r.forgotten, p)
		}
		errs = append(errs, err)
	}
	return r, errors.Join(errs...)
}
