package netagent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/underlay/underlay/internal/regularfile"
	"github.com/underlay/underlay/internal/termtext"
)

// LinkOwnerFile is the file, in the agent's state directory, naming the
// owner that the marks of the host links it makes name
// (hostnet.Host.Owner): another cluster's agent in the same network
// namespace leaves them alone. It is made once and kept: unlike the swarm
// node ID, it stays the same when the node joins the swarm again, so the
// agent still takes its links for its own.
const LinkOwnerFile = "link-owner"

// LinkOwner returns the owner recorded in dir, making and recording a
// random one first when none is. dir "" names none ("": marks naming no
// owner, as older agents made them). A record that is no owner is an
// error, and is left as it is.
func LinkOwner(dir string) (string, error) {
	owner, err := RecordedLinkOwner(dir)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return owner, err
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("make a link owner: %w", err)
	}
	owner = hex.EncodeToString(raw[:])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("record the link owner: %w", err)
	}
	tmp, err := os.CreateTemp(dir, LinkOwnerFile+".*")
	if err != nil {
		return "", fmt.Errorf("record the link owner: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(owner + "\n"); err != nil {
		tmp.Close()
		return "", fmt.Errorf("record the link owner: %w", err)
	}
	// On disk before it is linked into place: a power loss right after
	// the first start could otherwise leave the name linked to an empty
	// file (the data not written back yet), which no later start takes
	// for an owner.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("record the link owner: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("record the link owner: %w", err)
	}
	// Link, not rename: of two agents starting on one state directory,
	// the second takes the first's record rather than replacing it.
	path := filepath.Join(dir, LinkOwnerFile)
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		// Read once more, not again from the start: a record that exists
		// yet reads as missing (a symbolic link to no file) would have
		// this go round for ever.
		owner, err := RecordedLinkOwner(dir)
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("record the link owner: %s exists but reads as missing (a symbolic link to no file?); left as it is: remove it, or make the file it names: %w", path, err)
		}
		return owner, err
	} else if err != nil {
		return "", fmt.Errorf("record the link owner: %w", err)
	}
	// The link itself on disk too: lost, the next start would make and
	// record another owner, and take this one's links for another
	// cluster's.
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("record the link owner: %w", err)
	}
	return owner, nil
}

// syncDir flushes dir's entries (a file linked into it) to disk. A file
// system that cannot sync a directory (EINVAL) is taken as one that
// needs no such sync.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// RecordedLinkOwner returns the owner recorded in dir, as LinkOwner does,
// but makes none: with none recorded, an error wrapping os.ErrNotExist.
// `agent cleanup` reads it, and must not make an owner no link names.
func RecordedLinkOwner(dir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	path := filepath.Join(dir, LinkOwnerFile)
	// Not a named pipe, which would hold the agent's start, or the
	// package's prerm, waiting for a writer; an owner and its newline are
	// far shorter than the bound: a longer record is none.
	b, _, err := regularfile.Read(path, maxLinkOwnerRecord)
	if err != nil {
		return "", fmt.Errorf("read the link owner: not a link owner record: %w", err)
	}
	owner := strings.TrimSpace(string(b))
	if !validOwner(owner) {
		return "", fmt.Errorf("%s holds %s, not a link owner (letters and digits, at most 64)", path, termtext.Q(owner))
	}
	return owner, nil
}

// maxLinkOwnerRecord is the most of a link-owner record read: an owner
// (at most 64 bytes) with room for white space around it.
const maxLinkOwnerRecord = 256

// validOwner accepts what a link owner is made of: a word, as a mark
// parts network and owner by spaces; 1 to 64 letters and digits (the
// owners LinkOwner makes are 16 hex digits).
func validOwner(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
