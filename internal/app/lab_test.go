package app

import (
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/lab"
)

// TestCheckLabCounts: lab.Up takes a zero count as its default, so a zero
// given on the command line is refused here, naming it.
func TestCheckLabCounts(t *testing.T) {
	good := lab.Config{Nodes: 3, Managers: 1, ConsulServers: 1}
	if err := checkLabCounts(good); err != nil {
		t.Fatalf("%+v: %v", good, err)
	}
	tests := []struct {
		name    string
		change  func(*lab.Config)
		wantErr string
	}{
		{"no nodes", func(c *lab.Config) { c.Nodes = 0 }, "--nodes 0"},
		// Both were run as 1.
		{"no managers", func(c *lab.Config) { c.Managers = 0 }, "--managers 0"},
		{"no consul servers", func(c *lab.Config) { c.ConsulServers = 0 }, "--consul-servers 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			err := checkLabCounts(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
