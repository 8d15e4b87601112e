package adapter

import (
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// TestPruneSet: entries past the retention go; what is no alert entry
// (another writer's value, a truncated write) is kept and named. Before,
// prune deleted every value it could not read.
func TestPruneSet(t *testing.T) {
	before := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	pairs := api.KVPairs{
		{Key: "p/old", Value: []byte(`{"key":"a","service":"web","time":"2026-11-30T00:00:00Z"}`)},
		{Key: "p/new", Value: []byte(`{"key":"b","service":"web","time":"2026-12-02T00:00:00Z"}`)},
		{Key: "p/garbage", Value: []byte("kept by someone else")},
		{Key: "p/truncated", Value: []byte(`{"key":"c","serv`)},
		{Key: "p/empty-object", Value: []byte(`{}`)},
	}
	expired, unreadable := pruneSet(pairs, before)
	if want := []string{"p/old"}; !slices.Equal(expired, want) {
		t.Errorf("expired = %q, want %q", expired, want)
	}
	if want := []string{"p/garbage", "p/truncated", "p/empty-object"}; !slices.Equal(unreadable, want) {
		t.Errorf("unreadable = %q, want %q", unreadable, want)
	}
}
