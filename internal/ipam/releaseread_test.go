package ipam

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testlog"
)

// TestReleaseFallbackSaysTheReadFailed: a ReleaseAddress whose pool's
// spec could not be read from Consul falls back on the pool as this
// plugin last served it, and logged that the pool was "no longer served",
// which it may well be: what failed was the read. The log now says so,
// quoting the read's error.
func TestReleaseFallbackSaysTheReadFailed(t *testing.T) {
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
	if code != 200 {
		t.Fatalf("allocate: %d %v", code, out)
	}
	// An agent whose specs were never read, with Consul refusing to list
	// them.
	recs := testlog.NewRecords(16)
	pl.Log = slog.New(recs)
	pl.Pools = SpecPools{Store: netspec.NewStore(kv)}
	kv.Hook = func(call string, keys []string) error {
		if call == "list" && strings.HasPrefix(keys[0], netspec.KVPrefix) {
			return errors.New("connection refused")
		}
		return nil
	}
	if code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": out["Address"]}); code != 200 {
		t.Fatalf("release with the specs unreadable: %d %v, want released from the pool as served", code, out)
	}
	r := recs.Await(t, 5*time.Second, func(r slog.Record) bool { return r.Level == slog.LevelWarn })
	if err := testlog.Attr(r, "err"); !strings.Contains(r.Message, "cannot read the network specs") || strings.Contains(r.Message, "no longer served") ||
		!strings.Contains(err, "connection refused") {
		t.Errorf("release fallback logged %q err=%q, want it to say the network specs could not be read, quoting the error", r.Message, err)
	}
}
