package kvtest

import (
	"context"
	"slices"
	"testing"
)

// WaitedOn checks that a blocking loop's queries wait on the indexes want,
// in order: asked gets each query's index as a fake Consul receives it;
// what names the queries in a failure. It gives up when ctx ends.
func WaitedOn(ctx context.Context, t testing.TB, asked <-chan uint64, what string, want ...uint64) {
	t.Helper()
	var got []uint64
	for len(got) < len(want) {
		select {
		case i := <-asked:
			got = append(got, i)
			if !slices.Equal(got, want[:len(got)]) {
				t.Fatalf("%s waited on indexes %v, want %v", what, got, want[:len(got)])
			}
		case <-ctx.Done():
			t.Fatalf("%s waited on indexes %v, then no query came (want %v)", what, got, want)
		}
	}
}
