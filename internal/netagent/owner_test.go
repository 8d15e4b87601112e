package netagent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testfile"
)

// TestLinkOwnerRecordedOnce: the owner the agent's host links name
// (hostnet.Host.Owner) is made once and recorded in the state
// directory: the same after a restart, and after the node joined the
// swarm again under a new swarm node ID (the node-id record changes);
// only a state directory of its own names another. No state directory
// names none (marks as older agents made them); a record that is no
// owner is an error, and is left as it is.
func TestLinkOwnerRecordedOnce(t *testing.T) {
	dir := t.TempDir()
	first, err := LinkOwner(dir)
	if err != nil || first == "" || !validOwner(first) {
		t.Fatalf("first start: owner %q, %v; want one made", first, err)
	}
	if err := recordNodeID(dir, swarmID("newswarmid1")); err != nil {
		t.Fatal(err)
	}
	if again, err := LinkOwner(dir); err != nil || again != first {
		t.Errorf("restart after a swarm rejoin: owner %q, %v; want %q", again, err, first)
	}
	if other, err := LinkOwner(t.TempDir()); err != nil || other == first {
		t.Errorf("another state directory's owner: %q, %v; want another than %q", other, err, first)
	}
	if none, err := LinkOwner(""); err != nil || none != "" {
		t.Errorf("no state directory: owner %q, %v; want none", none, err)
	}
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, LinkOwnerFile), []byte("two words\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := LinkOwner(bad); err == nil || got != "" {
		t.Errorf("a record that is no owner: %q, %v; want an error", got, err)
	}
	if b, _ := os.ReadFile(filepath.Join(bad, LinkOwnerFile)); string(b) != "two words\n" {
		t.Errorf("a record that is no owner became %q; want it left", b)
	}
}

// TestRecordedLinkOwnerMakesNone: `agent cleanup` reads the owner the
// agent recorded, and must not record one of its own (it would be no
// link's): with none recorded it gets an error wrapping os.ErrNotExist,
// and no record is made.
func TestRecordedLinkOwnerMakesNone(t *testing.T) {
	dir := t.TempDir()
	if got, err := RecordedLinkOwner(dir); !errors.Is(err, os.ErrNotExist) || got != "" {
		t.Errorf("no record: %q, %v; want an error wrapping os.ErrNotExist", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, LinkOwnerFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("reading made a record: %v", err)
	}
	made, err := LinkOwner(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := RecordedLinkOwner(dir); err != nil || got != made {
		t.Errorf("recorded: %q, %v; want %q", got, err, made)
	}
}

// TestLinkOwnerDanglingSymlink: a record that is a symbolic link to no
// file (an operator's link to a file not made yet) reads as missing, and
// the file made to replace it cannot be linked in its place: LinkOwner
// went round making and reading owners for ever. It is an error naming
// the record now, and the symbolic link is left as it is.
func TestLinkOwnerDanglingSymlink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, LinkOwnerFile)
	if err := os.Symlink(filepath.Join(dir, "missing", "owner"), path); err != nil {
		t.Fatal(err)
	}
	type result struct {
		owner string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		owner, err := LinkOwner(dir)
		done <- result{owner, err}
	}()
	var got result
	select {
	case got = <-done:
	case <-time.After(10 * time.Second):
		// Guards the hang itself: a LinkOwner that returns takes no time.
		t.Fatalf("LinkOwner of a record that is a dangling symbolic link did not return")
	}
	if got.err == nil || got.owner != "" || !strings.Contains(got.err.Error(), path) {
		t.Errorf("LinkOwner of a dangling symbolic link: %q, %v; want an error naming %s", got.owner, got.err, path)
	}
	if target, err := os.Readlink(path); err != nil || target != filepath.Join(dir, "missing", "owner") {
		t.Errorf("the symbolic link became %q, %v; want it left", target, err)
	}
}

// TestRecordedLinkOwnerHuge: a record far larger than any owner (a file
// written over by something else, a link to a log) was read whole and
// quoted whole in the error, a log line of its full size. Now at most a
// bounded prefix is read, and the error names the record and its excess.
func TestRecordedLinkOwnerHuge(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, LinkOwnerFile)
	if err := os.WriteFile(path, bytes.Repeat([]byte("a"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []func(string) (string, error){RecordedLinkOwner, LinkOwner} {
		owner, err := f(dir)
		if err == nil || owner != "" || !strings.Contains(err.Error(), path) || len(err.Error()) > 1024 {
			msg := fmt.Sprint(err)
			if len(msg) > 200 {
				msg = fmt.Sprintf("%s… (%d bytes)", msg[:200], len(msg))
			}
			t.Errorf("a record of 1 MiB: %q, %s; want an error naming %s of at most 1 KiB", owner, msg, path)
		}
	}
}

// TestRecordedLinkOwnerFIFO: a record that is a named pipe (or a link to
// one) had the agent's start, and `agent cleanup` in the package's
// prerm, wait for ever for a writer in opening it. Only a regular file
// is read now; anything else is an error naming the record.
func TestRecordedLinkOwnerFIFO(t *testing.T) {
	dir := t.TempDir()
	testfile.RefusesFIFO(t, "a link-owner record", filepath.Join(dir, LinkOwnerFile), func() error {
		_, err := RecordedLinkOwner(dir)
		return err
	})
}

// TestLinkOwnerRecordWritten: the record LinkOwner makes is synced to
// disk, then linked into place, then its directory synced (a power loss
// right after the first start left an empty link-owner; no unit test can
// cut the power). What it leaves is as before: the owner and a newline,
// readable by the agent only, and no temporary file beside it.
func TestLinkOwnerRecordWritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // made by LinkOwner
	owner, err := LinkOwner(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, LinkOwnerFile)
	if b, err := os.ReadFile(path); err != nil || string(b) != owner+"\n" {
		t.Errorf("record %q, %v; want %q", b, err, owner+"\n")
	}
	if st, err := os.Stat(path); err != nil {
		t.Error(err)
	} else if st.Mode() != 0o600 {
		t.Errorf("record's mode %v; want -rw-------", st.Mode())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != LinkOwnerFile {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("state directory holds %q; want only %s", names, LinkOwnerFile)
	}
	if err := syncDir(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("syncing a missing directory: %v; want an error wrapping os.ErrNotExist", err)
	}
}
