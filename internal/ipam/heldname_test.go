package ipam

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// heldBackByName has an earlier agent of n free x (container 1's, the
// release's answer lost), container 2 ask for x by address and get it,
// and Docker resend container 1's release, held back; x is returned. The
// node lists its containers for a request by name (see WithHeld).
func heldBackByName(t *testing.T, kv *kvtest.KV) (*repeatNode, netip.Addr) {
	t.Helper()
	n := newRepeatNode(t, kv)
	n.listing = true
	x := n.freedByAnEarlierAgent(t)
	n.heldBack(t, x)
	return n, x
}

// TestRequestByNameOfAnAddressARunningContainerHolds: the release of x
// held back was Docker's resend of container 1's, and container 2, given
// x since, runs; no sweep has listed it yet. Container 3's request for x
// by name (a --ip of an address in use) was taken for container 2
// restarted with its address: the release was done, freeing x under
// container 2, and x handed to container 3:
//
//	container 3's request for 10.2.0.2, which running container 2 holds (its release held back a resend), given it
//
// The allocator now lists the containers for such a request: x is shown
// held, and the request refused.
func TestRequestByNameOfAnAddressARunningContainerHolds(t *testing.T) {
	n, x := heldBackByName(t, kvtest.New())
	n.held[x] = true // container 2 runs
	if got, err := n.a.Allocate(context.Background(), n.p, x, KindTask); err == nil {
		t.Fatalf("container 3's request for %s, which running container 2 holds (its release held back a resend), given it: %s", x, got)
	}
	if !n.recorded(t, n.kv, x) {
		t.Errorf("%s, container 2's, freed by container 3's refused request", x)
	}
}

// TestRequestByNameOfAnAddressAStartingContainerHolds: as above, with
// container 2's start still under way, begun before x was handed to it:
// no listing shows its address, so the start is taken as holding it.
func TestRequestByNameOfAnAddressAStartingContainerHolds(t *testing.T) {
	kv := kvtest.New()
	n := newRepeatNode(t, kv)
	n.listing = true
	x := n.freedByAnEarlierAgent(t)
	n.starts = []Start{{Since: *n.clock}} // container 2, created
	n.heldBack(t, x)
	if got, err := n.a.Allocate(context.Background(), n.p, x, KindTask); err == nil {
		t.Fatalf("container 3's request for %s, which starting container 2 was given (its release held back a resend), given it: %s", x, got)
	}
	if !n.recorded(t, kv, x) {
		t.Errorf("%s, container 2's, freed by container 3's refused request", x)
	}
}

// TestRequestByNameOfAnAddressItsContainerRestarting: container 2 itself
// restarts with its address: it released x at its exit (held back) and
// its start, begun after, asks for it again. The listing shows x in no
// container, and the only start under way began after x was handed out:
// x is given at once, without waiting for a sweep.
func TestRequestByNameOfAnAddressItsContainerRestarting(t *testing.T) {
	n, x := heldBackByName(t, kvtest.New())
	*n.clock = n.clock.Add(startSkew + time.Second)
	n.starts = []Start{{Since: *n.clock}} // container 2 exited, restarting
	if got, err := n.a.Allocate(context.Background(), n.p, x, KindTask); err != nil || got != x {
		t.Fatalf("container 2 restarted with its address %s: %s, %v", x, got, err)
	}
	if !n.recorded(t, n.kv, x) {
		t.Errorf("%s, handed out again to restarted container 2, not recorded", x)
	}
}

// failingHeld is a listing of the containers that fails.
type failingHeld struct{}

func (failingHeld) HeldAddresses(context.Context) (Local, error) {
	return Local{}, errors.New("dockerd not answering")
}

// TestRequestByNameOfAnAddressHeldBackUnlisted: a request by name for x,
// its release held back, when the containers cannot be listed (dockerd
// restoring containers at boot) is refused, x left recorded: which
// container asks cannot be told.
func TestRequestByNameOfAnAddressHeldBackUnlisted(t *testing.T) {
	n, x := heldBackByName(t, kvtest.New())
	n.a.lister = failingHeld{}
	if got, err := n.a.Allocate(context.Background(), n.p, x, KindTask); err == nil {
		t.Fatalf("request for %s, its release held back, given with no listing of the containers: %s", x, got)
	}
	if !n.recorded(t, n.kv, x) {
		t.Errorf("%s freed by a request refused", x)
	}
}
