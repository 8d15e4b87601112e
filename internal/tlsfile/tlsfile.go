// Package tlsfile serves and dials TLS with a certificate, its key and CA
// certificates read from PEM files that may be rotated while the process
// runs (certbot, cert-manager, an operator's cp): a change is picked up by
// the next handshake, at most CheckEvery later, by looking at each file's
// size and modification time. A pool of CA certificates is a file or a
// directory of files (Consul's CONSUL_CAPATH). A rewrite caught half done
// — a truncated PEM, a new certificate beside the old key — keeps the
// last good pair in use until the files make a whole again, and is logged
// once. A key is never logged.
package tlsfile

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/underlay/underlay/internal/regularfile"
	"github.com/underlay/underlay/internal/secretfile"
)

// CheckEvery is the least time between two looks at the files.
const CheckEvery = time.Second

// maxFileSize bounds each file read: a certificate chain, a key, a CA
// bundle (the system's is a few hundred KiB).
const maxFileSize = 4 << 20

// Option changes how a Pair or a Pool is opened: secretfile's, so that
// one clock serves a client's token and TLS files.
type Option = secretfile.Option

// WithClock makes now the clock CheckEvery is measured on (time.Now
// without it): a test steps it past CheckEvery instead of sleeping.
func WithClock(now func() time.Time) Option { return secretfile.WithClock(now) }

// stamp is what tells that a file changed, cheaply: its size, modification
// time, inode and change time. A rotation by rename (certbot, a mounted
// Kubernetes secret) may keep the size and, copied with its times, the
// modification time; it cannot keep the inode, and no user can set ctime.
// Under a directory, path tells a file added or removed.
type stamp struct {
	path  string
	size  int64
	mod   time.Time
	ino   uint64
	ctime syscall.Timespec
}

// watch tells when a set of files may have changed since they were last
// loaded, looking at most once every CheckEvery. It is not safe for
// concurrent use: its owner's mutex guards it.
type watch struct {
	paths []string
	// dir: paths are directories, and their files are looked at too.
	dir bool
	now func() time.Time
	// checked is when the files were last looked at.
	checked time.Time
	// loaded are the stamps of the files as last loaded; nil after a
	// failed load, so that the next look loads again.
	loaded []stamp
}

func newWatch(now func() time.Time, paths ...string) *watch {
	return &watch{paths: paths, now: now, checked: now()}
}

// look stats the files; it returns their stamps and whether to load them:
// when CheckEvery has passed since the last look and a stamp differs from
// the last load (or the last load failed, or a file cannot be stat'ed).
// The files are stat'ed before they are read, so a change made during a
// load is seen at the next look.
func (w *watch) look() ([]stamp, bool) {
	now := w.now()
	if now.Sub(w.checked) < CheckEvery && !now.Before(w.checked) {
		return nil, false
	}
	w.checked = now
	stamps, err := w.stat()
	if err != nil || w.loaded == nil {
		return stamps, true
	}
	return stamps, !slices.Equal(stamps, w.loaded)
}

// stat is the files' stamps: of each path and, for a directory, of each
// of its files.
func (w *watch) stat() ([]stamp, error) {
	var stamps []stamp
	for _, p := range w.paths {
		files := []string{p}
		if w.dir {
			more, err := dirFiles(p)
			if err != nil {
				return nil, err // the load reports it
			}
			files = append(files, more...)
		}
		for _, f := range files {
			st, err := os.Stat(f)
			if err != nil {
				return nil, err
			}
			s := stamp{path: f, size: st.Size(), mod: st.ModTime()}
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				s.ino, s.ctime = sys.Ino, sys.Ctim
			}
			stamps = append(stamps, s)
		}
	}
	return stamps, nil
}

// dirFiles are the files under dir, at any depth and in lexical order, as
// Consul reads CONSUL_CAPATH. A symbolic link is followed to a file, not
// into a directory: a mounted Kubernetes secret's ..data links to the
// directory of the files its other links name.
func dirFiles(dir string) ([]string, error) {
	// A directory named through a link (swapped at a rotation) is walked:
	// WalkDir would take the link for a file.
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("list CA directory %s: %w", dir, err)
	}
	var files []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if st, err := os.Stat(path); err == nil && st.IsDir() {
				return nil
			}
		}
		files = append(files, path)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list CA directory %s: %w", dir, err)
	}
	return files, nil
}

// problems logs a load problem once, and its end.
type problems struct {
	log  *slog.Logger
	what string
	last string
}

func (p *problems) failed(err error) {
	if msg := err.Error(); msg != p.last {
		p.last = msg
		p.log.Warn(p.what+" files unusable (a rewrite half done?); the last good ones stay in use", "err", err)
	}
}

func (p *problems) ok() {
	if p.last != "" {
		p.last = ""
		p.log.Info(p.what + " files usable again")
	}
}

// Pair is a certificate and its private key, in two PEM files (the
// certificate file may hold the chain after it), read again when either
// changes.
type Pair struct {
	certFile, keyFile string
	log               *slog.Logger

	mu sync.Mutex // guards following fields
	w  *watch
	p  problems
	// cert is the pair in use: the last good one read.
	cert *tls.Certificate
}

// OpenPair reads the certificate of certFile and the key of keyFile; they
// must make a pair. A key file group or others may read is logged as a
// warning. log may be nil.
func OpenPair(certFile, keyFile string, log *slog.Logger, opts ...Option) (*Pair, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("TLS needs both a certificate and its key")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("cert_file", certFile, "key_file", keyFile)
	p := &Pair{certFile: certFile, keyFile: keyFile, log: log, p: problems{log: log, what: "TLS certificate and key"}}
	p.w = newWatch(secretfile.ClockOf(opts), certFile, keyFile)
	stamps, _ := p.w.stat()
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	p.cert, p.w.loaded = cert, stamps
	warnKeyMode(log, keyFile)
	log.Info("TLS certificate loaded", certAttrs(cert)...)
	return p, nil
}

// Certificate is the pair in use, read again first when CheckEvery has
// passed and a file changed. It never fails: a pair that does not load,
// or a certificate expired or not valid yet while the one in use is
// valid, keeps the last good one (logged once as a warning).
func (p *Pair) Certificate() *tls.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	stamps, load := p.w.look()
	if !load {
		return p.cert
	}
	cert, err := loadPair(p.certFile, p.keyFile)
	// A certificate expired, or not valid yet, would fail every new
	// handshake: while the one in use is valid, it stays (a renewal job
	// that copied an old file, or staged a renewal early; an issuer's
	// clock set back or ahead). One not valid yet is looked at again, and
	// taken once its validity begins.
	if now := p.w.now(); err == nil && validAt(p.cert.Leaf, now) {
		err = outOfValidity(p.certFile, cert.Leaf, now)
	}
	if err != nil {
		p.w.loaded = nil
		p.p.failed(err)
		return p.cert
	}
	p.w.loaded = stamps
	p.p.ok()
	if !cert.Leaf.Equal(p.cert.Leaf) {
		p.log.Info("TLS certificate changed; new handshakes present it", certAttrs(cert)...)
		warnKeyMode(p.log, p.keyFile)
	}
	p.cert = cert
	return p.cert
}

// validAt reports whether c is within its validity at now.
func validAt(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && !now.After(c.NotAfter)
}

// outOfValidity says why c, read from file, is not valid at now: expired,
// or not valid yet; nil when it is valid.
func outOfValidity(file string, c *x509.Certificate, now time.Time) error {
	serial := hex.EncodeToString(c.SerialNumber.Bytes())
	switch {
	case now.After(c.NotAfter):
		return fmt.Errorf("TLS certificate %s (%s, serial %s) expired at %s", file, c.Subject, serial, c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("TLS certificate %s (%s, serial %s) is not valid before %s; it is taken then", file, c.Subject, serial, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// NotAfter is when the certificate in use expires (read again first, as
// Certificate), for a metric to alert on before handshakes fail.
func (p *Pair) NotAfter() time.Time {
	return p.Certificate().Leaf.NotAfter
}

// loadPair loads and checks a pair. Its errors name the files, never
// their content.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := readFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	keyPEM, err := readFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse TLS certificate %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

// certAttrs are the log attributes of a certificate: who, until when, and
// its serial number.
func certAttrs(cert *tls.Certificate) []any {
	l := cert.Leaf
	attrs := []any{"subject", l.Subject.String(), "not_after", l.NotAfter.UTC().Format(time.RFC3339),
		"serial", hex.EncodeToString(l.SerialNumber.Bytes())}
	if time.Now().After(l.NotAfter) {
		attrs = append(attrs, "expired", true)
	}
	return attrs
}

func warnKeyMode(log *slog.Logger, keyFile string) {
	st, err := os.Stat(keyFile)
	if err != nil {
		return
	}
	if st.Mode().Perm()&0o077 != 0 {
		log.Warn("TLS key file is readable or writable by group or others; make it readable by its owner only (chmod 600)",
			"mode", fmt.Sprintf("%#o", st.Mode().Perm()))
	}
	// Another unprivileged user owning it may replace it, whatever the mode.
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if p := secretfile.OwnerProblem(sys.Uid, uint32(os.Geteuid())); p != "" {
			log.Warn("TLS key file "+p+"; give it to this process's user or root (chown)", "owner_uid", sys.Uid)
		}
	}
}

// Pool is a file of PEM CA certificates, or a directory of such files,
// read again when it changes.
type Pool struct {
	path string
	dir  bool // path is a directory
	log  *slog.Logger

	mu sync.Mutex // guards following fields
	w  *watch
	p  problems
	// pool is the pool in use: the last good one read.
	pool *x509.CertPool
	// raw is the content pool was made of (with the files' names, for a
	// directory).
	raw []byte
}

// OpenPool reads the CA certificates of file; what names them in messages
// ("client CA"). log may be nil.
func OpenPool(file, what string, log *slog.Logger, opts ...Option) (*Pool, error) {
	return openPool(file, false, what, log, opts)
}

// OpenPoolDir reads the CA certificates of every file under dir, at any
// depth, as Consul reads CONSUL_CAPATH: each must hold PEM certificates.
// A file added, removed or changed is a change of the pool. what names
// them in messages; log may be nil.
func OpenPoolDir(dir, what string, log *slog.Logger, opts ...Option) (*Pool, error) {
	return openPool(dir, true, what, log, opts)
}

func openPool(path string, dir bool, what string, log *slog.Logger, opts []Option) (*Pool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir {
		log = log.With("ca_path", path)
	} else {
		log = log.With("ca_file", path)
	}
	p := &Pool{path: path, dir: dir, log: log, p: problems{log: log, what: what}}
	p.w = newWatch(secretfile.ClockOf(opts), path)
	p.w.dir = dir
	stamps, _ := p.w.stat()
	pool, raw, err := p.load()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	p.pool, p.raw, p.w.loaded = pool, raw, stamps
	return p, nil
}

// Pool is the pool in use, read again first when CheckEvery has passed
// and the file changed; a file with no certificate keeps the last pool.
func (p *Pool) Pool() *x509.CertPool {
	p.mu.Lock()
	defer p.mu.Unlock()
	stamps, load := p.w.look()
	if !load {
		return p.pool
	}
	pool, raw, err := p.load()
	if err != nil {
		p.w.loaded = nil
		p.p.failed(err)
		return p.pool
	}
	p.w.loaded = stamps
	p.p.ok()
	if string(raw) != string(p.raw) {
		p.log.Info(p.p.what + " certificates changed; new handshakes check against them")
	}
	p.pool, p.raw = pool, raw
	return p.pool
}

// load reads the PEM certificates of p's file, or of each file of its
// directory, into a pool.
func (p *Pool) load() (*x509.CertPool, []byte, error) {
	files := []string{p.path}
	if p.dir {
		var err error
		if files, err = dirFiles(p.path); err != nil {
			return nil, nil, err
		}
		if len(files) == 0 {
			return nil, nil, fmt.Errorf("CA directory %s holds no file", p.path)
		}
	}
	pool := x509.NewCertPool()
	var raw []byte
	for _, f := range files {
		b, err := readFile(f)
		if err != nil {
			return nil, nil, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, nil, fmt.Errorf("%s holds no PEM certificate", f)
		}
		if p.dir {
			raw = append(append(raw, f...), 0)
		}
		raw = append(raw, b...)
	}
	return pool, raw, nil
}

// readFile is the content of path, a regular file of at most maxFileSize
// bytes. It is opened non-blocking: opening a FIFO for reading would wait
// for a writer, under the lock every handshake takes; and a device or a
// huge file is not read whole. Its errors never carry the content.
func readFile(path string) ([]byte, error) {
	b, _, err := regularfile.Read(path, maxFileSize)
	return b, err
}

// ServerConfig is a server's TLS configuration: TLS 1.2 at least, the
// certificate of pair and, when clientCAs is not nil, mutual TLS — a
// client must present a certificate of one of its CAs, or the handshake
// fails before any HTTP is read. Each handshake gets the files' current
// content. Its NextProtos offer HTTP/2 and HTTP/1.1, as net/http's own
// ServeTLS does (a configuration made per handshake does not get them
// from the server).
func ServerConfig(pair *Pair, clientCAs *Pool) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if clientCAs != nil {
		base.ClientAuth = tls.RequireAndVerifyClientCert
		// A resumed session's client certificate is checked again
		// against the ClientCAs of the handshake's configuration (by the
		// crypto/tls of the Go go.mod requires): a client of a CA removed
		// from the file does not get in on its session ticket
		// (TestResumedSessionRechecksClientCA pins it).
	}
	cfg := base.Clone()
	// What the files held at start, for who looks (a log line); each
	// handshake uses GetConfigForClient's.
	cfg.Certificates = []tls.Certificate{*pair.Certificate()}
	if clientCAs != nil {
		cfg.ClientCAs = clientCAs.Pool()
	}
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.Certificates = []tls.Certificate{*pair.Certificate()}
		if clientCAs != nil {
			c.ClientCAs = clientCAs.Pool()
		}
		return c, nil
	}
	return cfg
}

// ClientConfig is a client's TLS configuration made of the files' content
// now: TLS 1.2 at least; servers verified against the CAs of roots, or the
// system's when it is nil; the certificate of pair, when not nil,
// presented to servers that ask for one (mutual TLS), as it is at each
// handshake. A tls.Config's roots are fixed: a long-lived client asks for
// a new configuration for each connection (http.Transport's
// DialTLSContext), so that a rotated CA file is used.
func ClientConfig(pair *Pair, roots *Pool) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if pair != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return pair.Certificate(), nil
		}
	}
	if roots != nil {
		cfg.RootCAs = roots.Pool()
	}
	return cfg
}
