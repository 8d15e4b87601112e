// Package secretfile reads small secrets — ACL and bearer tokens, shared
// keys — from files that may be rotated while the process runs: a change
// is picked up on the next use, at most a second later, and a file that
// anyone but its owner may read is reported. A secret's value is never
// logged.
//
// It imports only the standard library; its I/O edge is the file system.
package secretfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/underlay/underlay/internal/regularfile"
)

// CheckEvery is the least time between two reads of a file for changes.
const CheckEvery = time.Second

// maxSize bounds what is read: a secret is a few lines.
const maxSize = 1 << 20

// Option changes how a File is opened.
type Option func(*options)

type options struct {
	now        func() time.Time
	failClosed bool
}

// WithClock makes now the clock CheckEvery is measured on (time.Now
// without it): a test steps it past CheckEvery instead of sleeping.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// FailClosed makes a file that becomes unreadable, missing or empty while
// in use yield no value (Value returns nil) until it holds one again,
// instead of the last value read: for a list of what is accepted (bearer
// tokens), where emptying the file must revoke everything, and a secret
// left in use after its file is gone would be a credential nobody can
// withdraw.
func FailClosed() Option {
	return func(o *options) { o.failClosed = true }
}

func optionsOf(opts []Option) options {
	o := options{now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// ClockOf is the clock opts give (time.Now without WithClock), for the
// packages that watch files on secretfile's options (tlsfile).
func ClockOf(opts []Option) func() time.Time { return optionsOf(opts).now }

// File is one secret file, read again when it changes.
type File struct {
	path string
	what string
	log  *slog.Logger
	now  func() time.Time
	// failClosed drops the value when the file cannot be read (FailClosed).
	failClosed bool
	// check, when not nil, judges a new value: one it refuses is not
	// used (OpenChecked).
	check func([]byte) error

	mu sync.Mutex // guards following fields
	// checked is when the file was last read.
	checked time.Time
	value   []byte
	// mode is the file's permission bits as last read, owner its owner's
	// user ID.
	mode  fs.FileMode
	owner uint32
	// problem is the last read problem logged, so that it is logged once.
	problem string
}

// Open reads the secret at path; what names it in messages ("consul ACL
// token"). The file must be readable and hold something besides blanks.
// A file group or others may read is logged as a warning. log may be nil.
func Open(path, what string, log *slog.Logger, opts ...Option) (*File, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := optionsOf(opts)
	f := &File{path: path, what: what, log: log.With("file", path), now: o.now, failClosed: o.failClosed}
	v, mode, owner, err := read(path)
	if err != nil {
		return nil, fmt.Errorf("%s file: %w", what, err)
	}
	f.value, f.mode, f.owner, f.checked = v, mode, owner, f.now()
	f.warnMode(mode)
	f.warnOwner(owner)
	return f, nil
}

// OpenChecked is Open for a secret whose value check must accept (a
// shortest length, a format): a value it refuses is an error at start,
// and, read later, is not used — the last value stays, and the refusal is
// logged once. check's errors must not carry the value.
func OpenChecked(path, what string, check func([]byte) error, log *slog.Logger, opts ...Option) (*File, error) {
	f, err := Open(path, what, log, opts...)
	if err != nil {
		return nil, err
	}
	if err := check(f.value); err != nil {
		return nil, fmt.Errorf("%s file %s: %w", what, path, err)
	}
	f.check = check
	return f, nil
}

// OpenOptional is Open for a secret that may be absent by design: a file
// holding only blanks at start means no secret (the empty value), as an
// empty ACL token file means no token to Consul's own CLI. A token written
// later is picked up as a rotation; a file emptied after a value was read
// keeps that value, as with Open.
func OpenOptional(path, what string, log *slog.Logger, opts ...Option) (*File, error) {
	f, err := Open(path, what, log, opts...)
	if !errors.Is(err, errEmpty) {
		return f, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f = &File{path: path, what: what, log: log.With("file", path), now: optionsOf(opts).now}
	f.checked = f.now()
	f.log.Info(what + " file is empty: none in use")
	return f, nil
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

// Value is the file's content, blanks around it trimmed. The file is read
// again when CheckEvery has passed since the last read; a new content is
// used at once. When the file cannot be read, or is empty (a rewrite in
// progress), the last value stays — none with FailClosed —, and the
// problem is logged once.
func (f *File) Value() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Sub(f.checked) < CheckEvery && !now.Before(f.checked) {
		return f.value
	}
	f.checked = now
	v, mode, owner, err := read(f.path)
	if err != nil {
		if p := err.Error(); p != f.problem {
			f.problem = p
			if f.failClosed {
				f.log.Warn(f.what+" file unreadable or empty; none in use until it holds one again", "err", err)
			} else {
				f.log.Warn(f.what+" file unreadable; the last value read stays in use", "err", err)
			}
		}
		if f.failClosed {
			f.value = nil
		}
		return f.value
	}
	if f.check != nil && !bytes.Equal(v, f.value) {
		if err := f.check(v); err != nil {
			if p := "refused: " + err.Error(); p != f.problem {
				f.problem = p
				f.log.Warn(f.what+" file changed to a value refused; the last value read stays in use", "err", err)
			}
			return f.value
		}
	}
	if f.problem != "" {
		f.problem = ""
		f.log.Info(f.what + " file readable again")
	}
	if mode != f.mode {
		f.mode = mode
		f.warnMode(mode)
	}
	if owner != f.owner {
		f.owner = owner
		f.warnOwner(owner)
	}
	if !bytes.Equal(v, f.value) {
		f.value = v
		f.log.Info(f.what + " file changed; its new value is in use")
	}
	return f.value
}

// warnMode logs a warning when group or others may read or write the file.
func (f *File) warnMode(mode fs.FileMode) {
	if mode&0o077 != 0 {
		f.log.Warn(f.what+" file is readable or writable by group or others; make it readable by its owner only (chmod 600)",
			"mode", fmt.Sprintf("%#o", mode))
	}
}

// warnOwner logs a warning when the file belongs to a user other than
// this process's and root: that user may replace the secret, whatever
// the mode says.
func (f *File) warnOwner(owner uint32) {
	if p := OwnerProblem(owner, uint32(os.Geteuid())); p != "" {
		f.log.Warn(f.what+" file "+p+"; give it to this process's user or root (chown)", "owner_uid", owner)
	}
}

// OwnerProblem says what is wrong with a secret file owned by user owner
// for a process running as euid: "" when owner is euid or root.
func OwnerProblem(owner, euid uint32) string {
	if owner == euid || owner == 0 {
		return ""
	}
	return fmt.Sprintf("belongs to uid %d, neither this process's user (uid %d) nor root: that user may replace it", owner, euid)
}

// errEmpty is read's error for a file of blanks only.
var errEmpty = errors.New("is empty")

// read returns the trimmed content, permission bits and owner of path.
// Its errors never carry the content.
func read(path string) ([]byte, fs.FileMode, uint32, error) {
	// Not a FIFO, which would hold Value's lock waiting for a writer.
	b, st, err := regularfile.Read(path, maxSize)
	if err != nil {
		return nil, 0, 0, err
	}
	v := bytes.TrimSpace(b)
	if len(v) == 0 {
		return nil, 0, 0, fmt.Errorf("%s %w", path, errEmpty)
	}
	owner := uint32(os.Geteuid())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		owner = sys.Uid
	}
	return bytes.Clone(v), st.Mode().Perm(), owner, nil
}
