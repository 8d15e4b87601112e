package consul

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// tlsFiles builds the TLS configuration of each new connection to Consul
// from the CA and client certificate files as they are now: Consul's
// client reads them once, so a rotated certificate or CA needed a
// restart. The files are only stat'ed per connection (connections are
// pooled); they are read again when one changed. A set that does not
// load (a certificate written before its key) keeps the last good one.
type tlsFiles struct {
	conf api.TLSConfig
	log  *slog.Logger // nil: discard

	mu     sync.Mutex // guards following fields
	stamps []fileStamp
	cur    *tls.Config
	failed []fileStamp // the stamps of the set last refused, warned of
}

// fileStamp tells a file's versions apart: a rewrite changes its time or
// size, a replacement (rename) its inode.
type fileStamp struct {
	mtime time.Time
	size  int64
	ino   uint64
}

// reloadTLS makes tr dial TLS with conf's files read again when they
// change. With no file to follow it leaves tr as it is.
func reloadTLS(tr *http.Transport, conf api.TLSConfig, log *slog.Logger) error {
	if conf.CAFile == "" && conf.CAPath == "" && conf.CertFile == "" && conf.KeyFile == "" {
		return nil
	}
	cur, err := api.SetupTLSConfig(&conf)
	if err != nil {
		return fmt.Errorf("consul TLS: %w", err)
	}
	f := &tlsFiles{conf: conf, log: log, cur: cur}
	f.stamps = f.stat()
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		cfg := f.config()
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			cfg.ServerName = host
		}
		// The protocols the transport offers (h2 with HTTP/2 on), as
		// with its own TLS dial.
		if tr.TLSClientConfig != nil {
			cfg.NextProtos = slices.Clone(tr.TLSClientConfig.NextProtos)
		}
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, cfg)
		if err := c.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		return c, nil
	}
	return nil
}

// paths are the files f follows; CAPath, a directory, changes with the
// files added to it or removed.
func (f *tlsFiles) paths() []string {
	var ps []string
	for _, p := range []string{f.conf.CAFile, f.conf.CAPath, f.conf.CertFile, f.conf.KeyFile} {
		if p != "" {
			ps = append(ps, p)
		}
	}
	return ps
}

func (f *tlsFiles) stat() []fileStamp {
	var stamps []fileStamp
	for _, p := range f.paths() {
		var s fileStamp
		if fi, err := os.Stat(p); err == nil {
			s.mtime, s.size = fi.ModTime(), fi.Size()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				s.ino = st.Ino
			}
		}
		stamps = append(stamps, s)
	}
	return stamps
}

// config is a copy of the current TLS configuration, read again first if
// a file changed.
func (f *tlsFiles) config() *tls.Config {
	stamps := f.stat()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Equal(stamps, f.stamps) && !slices.Equal(stamps, f.failed) {
		conf := f.conf
		cfg, err := api.SetupTLSConfig(&conf)
		switch {
		case err != nil:
			f.failed = stamps
			if f.log != nil {
				f.log.Warn("Consul TLS files changed but do not load; the last good ones are kept", "files", f.paths(), "err", err)
			}
		default:
			f.cur, f.stamps, f.failed = cfg, stamps, nil
			if f.log != nil {
				f.log.Info("Consul TLS files changed; new connections use them", "files", f.paths())
			}
		}
	}
	return f.cur.Clone()
}
