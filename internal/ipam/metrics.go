package ipam

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the IPAM's Prometheus series, namespace underlay, subsystem
// ipam. A nil *Metrics records nothing.
type Metrics struct {
	requests  *prometheus.HistogramVec
	reclaimed *prometheus.CounterVec
	deferred  *prometheus.GaugeVec
}

// NewMetrics registers the series of a node's allocator on reg.
func NewMetrics(reg prometheus.Registerer, a *Allocator) *Metrics {
	const ns, sub = "underlay", "ipam"
	m := &Metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
			Help:    "Docker's address requests and releases, by operation (request, release) and result (ok, exhausted, refused: a release of an address another node holds, error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"op", "result"}),
		reclaimed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "reclaimed_total",
			Help: "Addresses the reclaimer set right, by reason (leak: returned, no container held it; departed_node: returned, its node left the swarm; no_node: returned by the leader, allocated to no node and held by no node's container; recorded_held: recorded again, a local container held it and the pool had lost it; held_release: returned, a release held back as it may have been Docker's resend, once no container held it).",
		}, []string{"reason"}),
		deferred: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "leaks_deferred",
			Help: "Addresses of this node that no container holds, past the leak grace, that the last sweep kept because a local container start may hold them, by pool. One that stays names a start that does not end (a hung dockerd).",
		}, []string{"pool"}),
	}
	spares := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "spares",
		Help: "Addresses this node holds claimed ahead of demand, over all pools.",
	}, func() float64 { return float64(a.spares.count()) })
	handouts := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "spare_handouts_total",
		Help: "Address requests answered from a spare, with no wait on Consul.",
	}, func() float64 { return float64(a.spares.handouts.Load()) })
	lostHeld := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "lost_held_total",
		Help: "Addresses a local container holds that Consul showed free when this node allocated in their block: Consul lost or freed a running container's address (a reclaim of the node taken for departed, a Consul server restarted empty, a stray release). Never handed out; each is recorded again at once if a fresh listing of the containers still shows it held, else by the leak sweep (reclaimed_total{reason=\"recorded_held\"}). Each counts once until recorded again. Any increase is worth an alert: another node may hand the address out meanwhile.",
	}, func() float64 { return float64(a.held.lost.Load()) })
	skipped := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "skipped_documents",
		Help: "Keys under the pools' blocks/ that this node skips, at its last listing of each pool: undecodable block documents or stray keys (`underlay ips` and `underlay doctor` name them, with the fix).",
	}, func() float64 { return float64(a.store.badCount()) })
	writes := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "block_writes_total",
		Help: "Check-and-set transactions sent to Consul for block documents, won or lost.",
	}, func() float64 { return float64(a.store.writes.Load()) })
	conflicts := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "cas_conflicts_total",
		Help: "Block writes Consul rolled back because another writer changed the block first; each is read again and retried. A rate near block_writes_total's means nodes fight over blocks.",
	}, func() float64 { return float64(a.store.conflicts.Load()) })
	if reg != nil {
		reg.MustRegister(m.requests, m.reclaimed, m.deferred, spares, handouts, lostHeld, skipped, writes, conflicts)
	}
	return m
}

func (m *Metrics) observe(op string, start time.Time, err error) {
	if m == nil {
		return
	}
	result := "ok"
	switch {
	case errors.Is(err, ErrPoolExhausted):
		result = "exhausted"
	case errors.Is(err, ErrNotHeld):
		result = "refused"
	case err != nil:
		result = "error"
	}
	m.requests.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
}

// setDeferred records a pool's deferred leaks at its last sweep; n < 0
// drops the pool (no longer swept).
func (m *Metrics) setDeferred(pool string, n int) {
	switch {
	case m == nil:
	case n < 0:
		m.deferred.DeleteLabelValues(pool)
	default:
		m.deferred.WithLabelValues(pool).Set(float64(n))
	}
}

func (m *Metrics) reclaim(reason string, n int) {
	if m != nil && n > 0 {
		m.reclaimed.WithLabelValues(reason).Add(float64(n))
	}
}
