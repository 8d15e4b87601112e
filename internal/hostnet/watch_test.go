package hostnet

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/testlog"
)

// TestWatchSubscribesAgain: when the kernel ends the link subscription
// (ENOBUFS after a burst of changes), the watch says why, sends (changes
// were lost), subscribes again and goes on sending. Before, it ended in
// silence and link drift waited for the next periodic sync.
func TestWatchSubscribesAgain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subs := make(chan chan<- netlink.LinkUpdate, 2)
	var fail func(error)
	subscribe := func(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error {
		fail = onErr
		subs <- ch
		return nil
	}
	var logs testlog.Buffer
	out, err := watch(ctx, subscribe, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	recv := func(what string) {
		t.Helper()
		select {
		case <-out:
		case <-time.After(10 * time.Second):
			t.Fatalf("no send %s", what)
		}
	}
	first := <-subs
	first <- netlink.LinkUpdate{}
	recv("for a link change")

	fail(errors.New("recvfrom: no buffer space available"))
	close(first)
	recv("when the subscription ended")
	var second chan<- netlink.LinkUpdate
	select {
	case second = <-subs:
	case <-time.After(10 * time.Second):
		t.Fatal("not subscribed again")
	}
	if got := logs.String(); !strings.Contains(got, "no buffer space available") {
		t.Errorf("log %q does not say why the subscription ended", got)
	}
	recv("once subscribed again")
	second <- netlink.LinkUpdate{}
	recv("for a change after subscribing again")
}
