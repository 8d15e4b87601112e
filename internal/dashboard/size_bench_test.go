package dashboard

import (
	"fmt"
	"testing"
)

// BenchmarkSnapshotSize reports the bytes of the snapshot pages get (GET
// /v1/cluster, each snapshot frame of the stream) for a cluster of 100
// and 1,000 services of 50 replicas each on 50 nodes (synthetic): as
// measured, not a bound (MaxSnapshotBytes is). Before the cards were
// capped (MaxCards), 2,984,156 and 26,349,232 bytes.
func BenchmarkSnapshotSize(b *testing.B) {
	for _, services := range []int{100, 1000} {
		in := synthetic(50, services*50, t0, nil)
		snap := Build(in)
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			var size int
			for b.Loop() {
				body, _, err := fit(snap, MaxSnapshotBytes)
				if err != nil {
					b.Fatal(err)
				}
				size = len(body)
			}
			b.ReportMetric(float64(size), "bytes/snapshot")
			b.ReportMetric(float64(len(in.Tasks)), "tasks")
		})
	}
}
