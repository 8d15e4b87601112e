package dashboard

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// benchPublish publishes in's snapshot, then measures each rebuild that
// finds nothing changed (a dashboard's steady state: one every Refresh).
func benchPublish(b *testing.B, in Inputs) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	snap := Build(in)
	s.publish(snap)
	b.ReportAllocs()
	for b.Loop() {
		snap.GeneratedAt = snap.GeneratedAt.Add(time.Second)
		s.publish(snap)
	}
}

// BenchmarkPublishUnchanged: a 20-node cluster running 2,000 tasks, no
// list cut by limit.
func BenchmarkPublishUnchanged(b *testing.B) {
	benchPublish(b, synthetic(20, 2000, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nil))
}

// BenchmarkPublishUnchangedCut: hugeInputs, whose lists limit cuts.
func BenchmarkPublishUnchangedCut(b *testing.B) {
	benchPublish(b, hugeInputs())
}

// BenchmarkPublishChanged: every rebuild finds a change (the same
// cluster as BenchmarkPublishUnchanged), which is published.
func BenchmarkPublishChanged(b *testing.B) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	snap := Build(synthetic(20, 2000, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nil))
	b.ReportAllocs()
	for b.Loop() {
		snap.GeneratedAt = snap.GeneratedAt.Add(time.Second)
		snap.Control.Leading = !snap.Control.Leading
		s.publish(snap)
	}
}

// TestPublishedBody: the body pages get is the limited snapshot, with its
// version, instance and time, whether publish spliced them into the
// content's encoding (nothing cut) or encoded the limited snapshot.
func TestPublishedBody(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	noProblems := Build(synthetic(3, 10, now, nil))
	noProblems.Problems = nil // null in the content, [] on the page
	for name, snap := range map[string]Snapshot{
		"nothing cut": Build(synthetic(20, 2000, now, nil)),
		"lists cut":   Build(hugeInputs()),
		"nil list":    noProblems,
	} {
		t.Run(name, func(t *testing.T) {
			s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			if _, whole := limit(snap); whole != (name == "nothing cut") {
				t.Fatalf("limit says whole is %v", whole)
			}
			for i := range 2 {
				snap.GeneratedAt = snap.GeneratedAt.Add(time.Second)
				snap.Control.Leading = i == 0 // a change: published again
				s.publish(snap)
				want, _ := limit(snap)
				want.Version, want.Instance = uint64(i+1), s.instance
				wb, err := json.Marshal(want)
				if err != nil {
					t.Fatal(err)
				}
				if got := s.Snapshot(); !bytes.Equal(got, wb) {
					t.Fatalf("publish %d: body of %d bytes differs from the limited snapshot's %d:\n%.300s\nwant\n%.300s", i+1, len(got), len(wb), got, wb)
				}
			}
			v := s.currentVersion()
			snap.GeneratedAt = snap.GeneratedAt.Add(time.Second)
			s.publish(snap)
			if s.currentVersion() != v {
				t.Errorf("a rebuild that changed nothing but the time was published as version %d", s.currentVersion())
			}
		})
	}
}

// BenchmarkSubscribe: a page connecting to the event stream while the
// server keeps a full backlog of events (EventBacklog, messages of
// MaxEventMessage bytes).
func BenchmarkSubscribe(b *testing.B) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s.publish(Build(synthetic(3, 10, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nil)))
	msg := strings.Repeat("m", MaxEventMessage)
	for i := range EventBacklog {
		s.events = append(s.events, Event{Seq: uint64(i + 1), Kind: EventTask, Node: "node1", Service: "svc", Message: msg})
	}
	b.ReportAllocs()
	for b.Loop() {
		sub, first := s.subscribe()
		if len(first) != 2 {
			b.Fatalf("%d first frames, want the snapshot and the events", len(first))
		}
		s.unsubscribe(sub)
	}
}

// TestSubscribeBacklogFollowsEvents: the events frame a connecting page
// gets, made once and shared, is made anew when new events come.
func TestSubscribeBacklogFollowsEvents(t *testing.T) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	in := cardsInput()
	s.publish(Build(in))
	in.Nodes = in.Nodes[:1] // node1 leaves
	s.publish(Build(in))
	backlog := func() string {
		sub, first := s.subscribe()
		defer s.unsubscribe(sub)
		if len(first) != 2 {
			t.Fatalf("%d first frames, want the snapshot and the events", len(first))
		}
		return string(first[1])
	}
	if b := backlog(); !strings.Contains(b, "node1 left the swarm") {
		t.Fatalf("backlog %.300s, want node1 leaving", b)
	}
	in.Nodes = cardsInput().Nodes // node1 comes back
	s.publish(Build(in))
	if b := backlog(); !strings.Contains(b, "node1 joined the swarm") {
		t.Errorf("backlog %.300s…, want node1 joining again", b)
	}
}

// fullBacklog fills s's events with EventBacklog events of messages of
// MaxEventMessage bytes, numbered on from s's, as a busy cluster's.
func fullBacklog(s *Server) {
	msg := strings.Repeat("m", MaxEventMessage)
	s.mu.Lock()
	defer s.mu.Unlock()
	for range EventBacklog {
		s.seq++
		s.events = append(s.events, Event{Seq: s.seq, Time: t0, Kind: EventTask, Node: "node1", Service: "svc", Message: msg})
	}
	s.events, s.backlog = lastN(s.events, EventBacklog), nil
}

// TestSubscribeMakesTheBacklogOffTheLock: the first page to connect after
// the events changed encoded the backlog (EventBacklog events, half a
// megabyte) holding the lock every page's read and every stream's frame
// waits on. It now takes the events under the lock and encodes them
// after: while it encodes, the lock is free, and it gets the backlog.
func TestSubscribeMakesTheBacklogOffTheLock(t *testing.T) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.publish(Build(cardsInput()))
	fullBacklog(s)
	// The backlog's making, held until the lock is tried.
	making, release := make(chan struct{}), make(chan struct{})
	s.mu.Lock()
	frame := eventsFrame(s.events)
	s.backlog = func() []byte { close(making); <-release; return frame() }
	s.mu.Unlock()
	got := make(chan [][]byte)
	go func() {
		sub, first := s.subscribe()
		s.unsubscribe(sub)
		got <- first
	}()
	<-making
	free := s.mu.TryLock()
	if free {
		s.mu.Unlock()
	}
	close(release)
	first := <-got
	if !free {
		t.Error("the lock is held while a connecting page's backlog of events is encoded: every page's read and stream waits for it")
	}
	if len(first) != 2 {
		t.Fatalf("%d first frames, want the snapshot and the events", len(first))
	}
	var evs []Event
	if data, ok := strings.CutPrefix(string(first[1]), "event: events\ndata: "); !ok || json.Unmarshal([]byte(data), &evs) != nil || len(evs) != EventBacklog {
		t.Errorf("backlog frame %.80q… of %d events; want the %d kept", first[1], len(evs), EventBacklog)
	}
}

// TestSubscribeSeesEachEventOnce: pages connecting and leaving while
// changes are published each get the backlog, then every event published
// after it, each once, in order: the events are taken, and the stream
// opened, at one moment under the lock. Run with -race: the backlog is
// encoded without the lock while publish appends new events.
func TestSubscribeSeesEachEventOnce(t *testing.T) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	in := cardsInput()
	s.publish(Build(in))
	fullBacklog(s)
	all, one := Build(in), in
	one.Nodes = in.Nodes[:1]
	alone := Build(one) // node1 left
	done := make(chan struct{})
	var g errgroup.Group
	g.Go(func() error {
		defer close(done)
		for i := range 200 {
			snap := all
			if i%2 == 0 {
				snap = alone
			}
			s.publish(snap)
		}
		return nil
	})
	for range 4 {
		g.Go(func() error {
			for stop := false; !stop; {
				sub, first := s.subscribe()
				seqs, err := frameSeqs(first)
				if err != nil {
					return err
				}
				if len(seqs) < EventBacklog {
					return fmt.Errorf("a backlog of %d events, want %d", len(seqs), EventBacklog)
				}
				for live := 0; live < 3 && !stop; {
					select {
					case <-sub.ready:
					case <-done:
						stop = true // what is pending is all there is
					}
					frames, ok := s.pending(sub)
					if !ok {
						break // dropped, too far behind: the page reconnects
					}
					more, err := frameSeqs(frames)
					if err != nil {
						return err
					}
					seqs = append(seqs, more...)
					live += len(frames)
				}
				s.unsubscribe(sub)
				for i := 1; i < len(seqs); i++ {
					if seqs[i] != seqs[i-1]+1 {
						return fmt.Errorf("a stream's events numbered %d then %d: missed or repeated (backlog to %d)", seqs[i-1], seqs[i], seqs[EventBacklog-1])
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// frameSeqs are the sequence numbers of the events in frames' events
// frames, in order.
func frameSeqs(frames [][]byte) ([]uint64, error) {
	var seqs []uint64
	for _, f := range frames {
		data, ok := strings.CutPrefix(string(f), "event: events\ndata: ")
		if !ok {
			continue // a snapshot
		}
		var evs []Event
		if err := json.Unmarshal([]byte(data), &evs); err != nil {
			return nil, fmt.Errorf("events frame %.80q…: %w", f, err)
		}
		for _, e := range evs {
			seqs = append(seqs, e.Seq)
		}
	}
	return seqs, nil
}

// TestPublishSendsAtMostTheBacklogOfEvents: a change that makes more
// events than a page keeps (a Consul restarted empty: every registration,
// health and allocation of a 3,000-task cluster gone, 6,025 events, 1.1
// MB) was sent whole to every page, which keeps the last EventBacklog.
// A page is now sent those only, as one connecting gets them.
func TestPublishSendsAtMostTheBacklogOfEvents(t *testing.T) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	in := synthetic(20, 3000, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nil)
	s.publish(Build(in))
	sub, _ := s.subscribe()
	defer s.unsubscribe(sub)
	in.Instances, in.Networks = nil, nil // Consul restarted empty
	s.publish(Build(in))
	frames, ok := s.pending(sub)
	if !ok || len(frames) != 2 {
		t.Fatalf("%d frames pending (stream dropped: %v), want the snapshot and the events", len(frames), !ok)
	}
	data, found := strings.CutPrefix(string(frames[1]), "event: events\ndata: ")
	if !found {
		t.Fatalf("second frame %.100q is not the events", frames[1])
	}
	var evs []Event
	if err := json.Unmarshal([]byte(data), &evs); err != nil {
		t.Fatal(err)
	}
	all := s.seq
	if len(evs) > EventBacklog {
		t.Errorf("a change of %d events was sent as a frame of %d events (%d bytes), more than the %d a page keeps", all, len(evs), len(frames[1]), EventBacklog)
	}
	if len(evs) == 0 || evs[len(evs)-1].Seq != all || evs[0].Seq != all-uint64(len(evs))+1 {
		t.Errorf("the events sent are not the last of the change, ending at %d", all)
	}
}

// TestReadersSeeWholeSnapshots: while snapshots are published (encoded,
// diffed and fitted before the lock is taken), every read — the body,
// its gzip, a stream's first frames — is of one published snapshot,
// whole: the old one or the new one, never parts of both. It is a -race
// test too. The expected bytes of each version come from another server
// that published the same snapshots alone.
func TestReadersSeeWholeSnapshots(t *testing.T) {
	// cut lists more cards on its node than a column does: publish
	// encodes what pages get apart from the content.
	small, cut := Build(synthetic(3, 30, t0, nil)), Build(synthetic(1, MaxNodeCards+50, t0, nil))
	if _, whole := limit(cut); whole {
		t.Fatal("limit cuts nothing of the second snapshot")
	}
	snaps := make([]Snapshot, 6)
	for i := range snaps {
		snaps[i] = small
		if i%2 == 1 {
			snaps[i] = cut
		}
		snaps[i].GeneratedAt = t0.Add(time.Duration(i) * time.Second)
	}
	type published struct {
		body, frame []byte
		seq         uint64
	}
	newServer := func() *Server {
		s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ref := newServer()
	want := map[uint64]published{}
	for _, snap := range snaps {
		ref.publish(snap)
		want[ref.currentVersion()] = published{ref.Snapshot(), ref.frame, ref.seq}
	}
	if len(want) != len(snaps) {
		t.Fatalf("%d versions published of %d snapshots, each a change", len(want), len(snaps))
	}
	s := newServer()
	s.instance = ref.instance
	s.publish(snaps[0])

	check := func() error {
		body, gz := s.snapshotBodies()
		var head snapshotHeader
		if err := json.Unmarshal(body, &head); err != nil {
			return fmt.Errorf("body %.100q: %w", body, err)
		}
		w, ok := want[head.Version]
		if !ok || !bytes.Equal(body, w.body) {
			return fmt.Errorf("body of version %d (%d bytes) is not the one published as it", head.Version, len(body))
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			return fmt.Errorf("gzipped body of version %d: %w", head.Version, err)
		}
		if plain, err := io.ReadAll(zr); err != nil || !bytes.Equal(plain, body) {
			return fmt.Errorf("gzipped body of version %d (%v) is not its body", head.Version, err)
		}
		sub, first := s.subscribe()
		s.unsubscribe(sub)
		if len(first) == 0 {
			return errors.New("no first frame, want the snapshot")
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(string(first[0]), "event: snapshot\nid: "), "\n")
		v, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return fmt.Errorf("snapshot frame %.100q: %w", first[0], err)
		}
		if w, ok := want[v]; !ok || !bytes.Equal(first[0], w.frame) {
			return fmt.Errorf("stream's snapshot frame of version %d is not the one published as it", v)
		}
		var last uint64 // the first snapshot makes no events
		if len(first) > 1 {
			var evs []Event
			if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(string(first[1])), "event: events\ndata: ")), &evs); err != nil {
				return fmt.Errorf("events frame: %w", err)
			}
			last = evs[len(evs)-1].Seq
		}
		if last != want[v].seq {
			return fmt.Errorf("stream opened on version %d with events up to %d, want %d: the snapshot and the events are of different publishes", v, last, want[v].seq)
		}
		return nil
	}

	done := make(chan struct{})
	var g errgroup.Group
	for range 2 {
		g.Go(func() error {
			for {
				select {
				case <-done:
					return check() // once more, on the last
				default:
				}
				if err := check(); err != nil {
					return err
				}
			}
		})
	}
	for _, snap := range snaps[1:] {
		s.publish(snap)
	}
	close(done)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if v := s.currentVersion(); v != uint64(len(snaps)) {
		t.Errorf("version %d after %d publishes", v, len(snaps))
	}
}
