package ipam

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testlog"
)

// TestLongPoolIDIsCut: a pool ID comes from the plugin socket, up to a
// request body's 1 MiB, and was quoted whole into the Err Docker shows and
// into the log, twice over when the network's name read from it was
// quoted too. It is now cut to its first 120 bytes, still quoted, saying
// how long it was.
func TestLongPoolIDIsCut(t *testing.T) {
	name := strings.Repeat("a", maxBody-1000)
	const bound = 2000 // the messages' own text, with two cut IDs
	want := fmt.Sprintf(`"%s"… (%d bytes)`, strings.Repeat("a", 120), len(name)+3)
	for _, c := range []struct {
		name, method string
		req          map[string]any
		stalled      bool
	}{
		{"address", "IpamDriver.RequestAddress", map[string]any{"PoolID": name + "/v4"}, false},
		{"given address", "IpamDriver.RequestAddress", map[string]any{"PoolID": name + "/v4", "Address": "10.90.0.200"}, false},
		{"release", "IpamDriver.ReleaseAddress", map[string]any{"PoolID": name + "/v4", "Address": "10.90.0.200"}, false},
		{"bad family", "IpamDriver.RequestAddress", map[string]any{"PoolID": name + "/v5"}, false},
		{"timed out", "IpamDriver.RequestAddress", map[string]any{"PoolID": name + "/v4"}, true},
		{"release timed out", "IpamDriver.ReleaseAddress", map[string]any{"PoolID": name + "/v4", "Address": "10.90.0.200"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs testlog.Buffer
			kv := kvtest.New()
			pl, call := pluginFor(t, kv, "n1")
			pl.Log = slog.New(slog.NewTextHandler(&logs, nil))
			if c.stalled {
				pl.Pools, pl.Timeout = SpecPools{Store: netspec.NewStore(stalledKV{})}, 100*time.Millisecond
			}
			code, out := call(c.method, c.req)
			msg, _ := out["Err"].(string)
			if code != 500 || len(msg) > bound || !strings.Contains(msg, want) {
				t.Errorf("%s: %d, Err of %d bytes %.300q…, want refused in under %d bytes quoting %.40q…", c.method, code, len(msg), msg, bound, want)
			}
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if len(line) > 2*bound {
					t.Errorf("logged a line of %d bytes: %.300q…", len(line), line)
				}
			}
		})
	}
}
