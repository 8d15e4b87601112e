package netagent

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testconsul"
	"github.com/underlay/underlay/internal/testlog"
)

// readsTold is a KV that tells each Get as it begins.
type readsTold struct {
	netspec.KV
	gets chan struct{}
}

func (k readsTold) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	select {
	case k.gets <- struct{}{}:
	default:
	}
	return k.KV.Get(ctx, key)
}

// TestHeartbeatGivesUpOnConsulThatDoesNotAnswer: a Consul agent that
// accepts the connection and never answers held the facts' heartbeat for
// good: no heartbeat more, the facts going stale (the node looked down
// to every other), and, as the heartbeat holds the facts' lock, the
// network sync's publish of them stuck behind it. The heartbeat now gives
// up within its period (kvstore.WriteContext) with a deadline error
// naming it, and the next one runs.
func TestHeartbeatGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := testlog.NewRecords(64)
	kv := readsTold{consul.NewKV(testconsul.Hung(t)), make(chan struct{}, 64)}
	f := &Facts{Store: netspec.NewStore(kv), ID: "id1", Node: "n1", Holder: netspec.Holder{Instance: "x"}, Log: slog.New(logs)}
	go f.Run(ctx, 20*time.Millisecond)
	testconsul.GivesUp(t, "the facts' heartbeat", "refresh facts of node n1", func() error { return logs.Err("cannot refresh this node's facts") })
	// Each heartbeat begins with a read of the facts, the one that hangs:
	// a second read is the next heartbeat.
	for range 2 {
		select {
		case <-kv.gets:
		case <-time.After(time.Minute):
			t.Fatal("no heartbeat after the one that hung, after a minute")
		}
	}
}

// hangsUnder is a KV whose writes to keys under prefix go to a Consul
// agent that never answers, each told on begun as it starts; every other
// call goes to KV.
type hangsUnder struct {
	netspec.KV
	hung   netspec.KV
	prefix string
	begun  chan struct{}
}

func (k hangsUnder) to(keys ...string) netspec.KV {
	if !slices.ContainsFunc(keys, func(key string) bool { return strings.HasPrefix(key, k.prefix) }) {
		return k.KV
	}
	select {
	case k.begun <- struct{}{}:
	default:
	}
	return k.hung
}

func (k hangsUnder) Put(ctx context.Context, key string, value []byte) error {
	return k.to(key).Put(ctx, key, value)
}

func (k hangsUnder) Txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error) {
	keys := make([]string, len(ops))
	for i, op := range ops {
		keys[i] = op.Key
	}
	return k.to(keys...).Txn(ctx, ops)
}

func (k hangsUnder) Delete(ctx context.Context, key string) error {
	return k.to(key).Delete(ctx, key)
}

// TestSyncGivesUpOnConsulThatDoesNotAnswer: a Consul agent that accepts
// the connection and never answers held the network sync for good at its
// first write, a range lease or a node's report: no sync more, no network
// made or taken apart on the node again. Each Consul call of the sync is
// now given up within the sync's period (kvstore.WriteContext), with a
// deadline error naming it, counted, and the next sync runs.
func TestSyncGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	for _, c := range []struct {
		name, hangs, msg, want string
	}{
		{name: "lease", hangs: netspec.KVPrefix + "web/ranges/", msg: "network sync incomplete", want: "of web for id1"},
		{name: "report", hangs: netspec.KVPrefix + "web/nodes/", msg: "cannot report network state", want: "report web on n1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem, _ := kvWithWeb(t)
			kv := hangsUnder{KV: mem, hung: consul.NewKV(testconsul.Hung(t)), prefix: c.hangs, begun: make(chan struct{}, 64)}
			st := netspec.NewStore(kv)
			logs := testlog.NewRecords(1024)
			reg := prometheus.NewRegistry()
			host := &fakeHost{}
			r := reconcilerOf(st, host, host, func(string, string) error { return nil })
			r.Log, r.Metrics = slog.New(logs), NewMetrics(reg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { r.Run(ctx, nil, nil, 200*time.Millisecond); close(done) }()
			defer func() {
				cancel()
				for {
					select {
					case <-done:
						return
					case <-logs.C:
					}
				}
			}()
			testconsul.GivesUp(t, "the network sync's "+c.name, c.want, func() error { return logs.Err(c.msg) })
			// The call that hung is made again by the next sync.
			for range 2 {
				select {
				case <-kv.begun:
				case <-time.After(time.Minute):
					t.Fatal("no sync after the one that hung, after a minute")
				}
			}
			if n := metricValue(t, reg, "underlay_network_consul_calls_given_up_total"); n < 1 {
				t.Errorf("underlay_network_consul_calls_given_up_total = %v, want at least 1", n)
			}
		})
	}
}

// metricValue is the value of the gauge or counter name in reg (0 when
// it has none).
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			m := f.GetMetric()[0]
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return 0
}
