package ipam

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// savesFail is memFreed whose saves fail while fail is set: the state
// directory full, or read-only.
type savesFail struct {
	memFreed
	fail  bool
	saves int // tried
}

func (s *savesFail) Save(freed Freed) error {
	s.saves++
	if s.fail {
		return errors.New("no space left on device")
	}
	return s.memFreed.Save(freed)
}

// TestResentReleaseOfAnAddressItsOwnAgentHandedOutAgain: container 1's
// release of x is served, and before its answer is sent the same agent
// hands x to container 2 (asked for by address, or nothing else free);
// the agent is then killed, and Docker resends the release to the next
// agent. Nothing told that agent x had been handed out again since its
// free (the handout took x out of the freed file), so the resend freed x
// under container 2:
//
//	the resent release of container 1's 10.2.0.2, served by the agent that then handed it to container 2, freed it under container 2: Consul no longer records it
//
// A handout of an address freed lately is now recorded in the freed file
// before the request is answered, and the next agent holds back a
// release of it as it holds back one of an address it handed out again
// itself; so it does with one its freed file names freed lately and no
// handout (the save after the handout failed).
func TestResentReleaseOfAnAddressItsOwnAgentHandedOutAgain(t *testing.T) {
	for _, saveFails := range []bool{false, true} {
		name := map[bool]string{false: "handout saved", true: "save after the handout failed"}[saveFails]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			n := newRepeatNode(t, kv)
			store := &savesFail{}
			n.freedStore = store
			n.restart(t)
			x := taskAddr(t, n.a, n.p) // container 1
			n.held[x] = true
			n.sweep(t)
			n.release(t, x) // served; its answer not sent yet
			delete(n.held, x)
			saves := store.saves
			if y := taskAddr(t, n.a, n.p); store.saves != saves { // an ordinary request
				t.Errorf("the handout of %s, not freed lately, saved the freed file", y)
			}
			store.fail = saveFails
			if got, err := n.a.Allocate(ctx, n.p, x, KindTask); err != nil || got != x { // container 2, by address
				t.Fatalf("request for %s just after its release: %s, %v", x, got, err)
			}
			if store.saves != saves+1 {
				t.Errorf("the handout of %s, freed lately, saved the freed file %d times before its answer, want once", x, store.saves-saves)
			}
			store.fail = false
			n.tick()
			n.restart(t)    // the agent was killed before the release's answer was sent
			n.release(t, x) // Docker's resend of container 1's release
			if !n.recorded(t, kv, x) {
				t.Fatalf("the resent release of container 1's %s, served by the agent that then handed it to container 2, freed it under container 2: Consul no longer records it", x)
			}
			// Container 2 listed running: the release was a resend. x stays
			// its own.
			n.held[x] = true
			n.sweep(t)
			if !n.recorded(t, kv, x) {
				t.Fatalf("%s freed by the sweep while container 2 holds it", x)
			}
			// Container 2 stops: its release is done once a listing shows
			// no container holds x.
			n.release(t, x)
			delete(n.held, x)
			n.sweep(t)
			if n.recorded(t, kv, x) {
				t.Errorf("%s still recorded after a listing showed no container holds it", x)
			}
		})
	}
}

// TestHeldBackReleaseDroppedWhenItsAddressIsHandedOut: the resend of a
// release an earlier agent served, of an address no agent handed out
// again, is held back though Consul shows the address free. Handed out
// then to a new container (nothing else free), the release held back is
// dropped: done at the next sweep, whose listing cannot show a start
// under way's address, it would free the address under the new container.
func TestHeldBackReleaseDroppedWhenItsAddressIsHandedOut(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	n := newRepeatNode(t, kv)
	x := n.freedByAnEarlierAgent(t)
	n.release(t, x) // Docker's resend
	if _, ok := n.a.held.pendingOf(n.p, x); !ok {
		t.Fatalf("the resend of the release of %s, freed by an earlier agent, not held back", x)
	}
	for {
		got, err := n.a.Allocate(ctx, n.p, netip.Addr{}, KindTask)
		if err != nil {
			t.Fatalf("no request was given %s: %v", x, err)
		}
		n.tick()
		if got == x {
			break // a new container's, its start under way
		}
		n.held[got] = true
	}
	n.sweep(t)
	if !n.recorded(t, kv, x) {
		t.Errorf("%s, handed to a container being started, freed by the sweep: the release held back was done under it", x)
	}
}
