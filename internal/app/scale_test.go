package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestScaleEmptyService: an empty SERVICE is refused, named, before any
// call — the call went to /v1/underlay/services//scale, and control's
// answer (a redirect) said nothing of the name. The context is already
// cancelled and control unreachable, so that a name let through fails on
// something else.
func TestScaleEmptyService(t *testing.T) {
	for _, args := range [][]string{{"scale", "", "up"}, {"scale", " ", "--to", "3"}, {"scale", "history", ""}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var out, errOut bytes.Buffer
			code := Run(ctx, append(args, "--addr", "127.0.0.1:1"), IOStreams{Out: &out, ErrOut: &errOut})
			if code == 0 || !strings.Contains(errOut.String(), "service name is empty") {
				t.Errorf("exit %d, stderr %q; want failure saying the service name is empty", code, errOut.String())
			}
		})
	}
}
