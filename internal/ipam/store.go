package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/termtext"
)

// ErrBadDocument is returned for a block whose KV document cannot be read:
// nothing is allocated from it, and it is never overwritten, until an
// operator removes it (see BadDoc).
var ErrBadDocument = errors.New("unreadable block document")

// maxAttempts bounds how often one update retries after losing a race;
// each loss means another writer made progress, so this is never reached
// in practice and only guards against a bug looping forever.
const maxAttempts = 100

// store owns this node's copies of block documents and every write of
// them. Callers change a block only through update, with a function from
// the document to the next one; the store reads, writes with check-and-set
// and retries on a lost race, so no caller handles indexes or a cache.
type store struct {
	kv  KV
	log *slog.Logger

	// writes counts the check-and-set transactions sent for block
	// documents; conflicts those Consul rolled back because another
	// writer changed the block first (each costs a read and a retry).
	writes, conflicts atomic.Uint64

	mu sync.Mutex // guards following fields
	// docs is the last document read or written of each block key, with
	// its modify index; a stale one only costs a lost check-and-set.
	docs map[string]versioned
	// scanned records pools whose blocks were listed once.
	scanned map[string]bool
	// bad is every unreadable or stray key of the last listing of each
	// pool, by pool ID; logged is the index each of those keys was logged
	// at.
	bad    map[string][]BadDoc
	logged map[string]uint64
	// shadowed is, by pool ID, the blocks a bad key of the last listing
	// overlaps, with that key (see view.shadowed).
	shadowed map[string]map[netip.Prefix]string
	// listings numbers the listings of pools (scan, listed) as they
	// start; shown is, by pool ID, the number of the listing bad and
	// shadowed hold: a listing read before it, answered after, is older
	// and leaves them (a bad key it did not see would stop shadowing).
	listings uint64
	shown    map[string]uint64
	// locks serialise this node's updates of one key, so that the node
	// never races itself (the spare keeper and requests share blocks).
	locks map[string]*sync.Mutex
	// rest is, by pool ID, the last listing of the pool's documents, for
	// the next scan to take again when the pool has not changed since
	// (see listPool).
	rest map[string]restListing
	// seen is, by pool ID, the highest Consul index an answer about the
	// pool's blocks showed (see noteIndex).
	seen map[string]uint64
}

// restListing is one listing of a pool's documents, with the index of the
// pool (KV.KeysIndex) read just before it.
type restListing struct {
	index uint64
	pairs []kvstore.Pair
	// skips is how many scans in a row took it again (see maxRestSkips).
	skips int
}

// maxRestSkips is how many scans in a row may take a pool's last listing
// again before one reads its documents anyway: 40 sweeps, 10 minutes at
// the default --ipam-sweep. Within one Consul history an unchanged index
// and key set prove the documents unchanged (see listPool); this bounds
// how long a copy could outlive a Consul whose state was replaced
// wholesale (a new cluster under the same address) that happened to
// reach the same index with the same keys.
const maxRestSkips = 39

// versioned is a document with its modify index (0: absent).
type versioned struct {
	doc   BlockDoc
	index uint64
}

func newStore(kv KV, log *slog.Logger) *store {
	return &store{kv: kv, log: log, docs: map[string]versioned{}, scanned: map[string]bool{},
		bad: map[string][]BadDoc{}, logged: map[string]uint64{}, shadowed: map[string]map[netip.Prefix]string{}, shown: map[string]uint64{}, locks: map[string]*sync.Mutex{},
		rest: map[string]restListing{}, seen: map[string]uint64{}}
}

func (s *store) lock(key string) func() {
	s.mu.Lock()
	l := s.locks[key]
	if l == nil {
		l = &sync.Mutex{}
		s.locks[key] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (s *store) cached(key string) (versioned, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.docs[key]
	return v, ok
}

func (s *store) wasScanned(p Pool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scanned[p.ID()]
}

// startListing numbers a listing of a pool about to be read (see shown).
func (s *store) startListing() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listings++
	return s.listings
}

// showsLocked says whether listing n of p, read, is newer than the one
// bad and shadowed hold, and if so records it as the one they hold; the
// caller holds s.mu.
func (s *store) showsLocked(p Pool, n uint64) bool {
	if n < s.shown[p.ID()] {
		return false
	}
	s.shown[p.ID()] = n
	return true
}

// noteIndex takes in index, from an answer about p's blocks as a whole (a
// write's index, a listing of the keys: each at least every block's
// modify index in one state; not a block's own modify index, which a
// read gives: below the pool's newest write whenever another block was
// written since). One below an earlier answer's
// means Consul's state was replaced (a dev agent restarted empty, a
// snapshot restored): the copies of p's blocks, and its last listing,
// are of the old state, and their indexes are no proof against the new
// one, whose indexes start over and soon reach theirs again. A
// check-and-set at a copy's index could then win against another
// document, written since under the same index, and replace it with one
// made of the copy (the spares and allocations written since, lost).
// They are forgotten: every block is read again before it is written.
// Within one state an index never goes below a key's, but a pool's index
// may (a tombstone reaped); taken for a replaced state, that costs reads.
// The caller holds s.mu.
func (s *store) noteIndexLocked(p Pool, index uint64) {
	id := p.ID()
	if index == 0 {
		return // a delete's, or none
	}
	if index < s.seen[id] {
		s.log.Warn("Consul's index of the pool went backwards (its state replaced, or a deleted block's tombstone reaped): reading the pool's blocks again", "pool", id, "index", index, "seen", s.seen[id])
		s.forgetLocked(p)
	}
	s.seen[id] = index
}

// forgetCopies drops the copies of p's blocks and its last listing: Consul's
// state was replaced (a watch saw an index go backwards), and a copy's
// index is no proof against the new one's, which may have passed every
// index this store saw before it next answers about p (noteIndexLocked
// would not see it go backwards then).
func (s *store) forgetCopies(p Pool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked(p)
	delete(s.seen, p.ID())
}

func (s *store) forgetLocked(p Pool) {
	delete(s.rest, p.ID())
	delete(s.scanned, p.ID())
	prefix := poolPrefix(p)
	maps.DeleteFunc(s.docs, func(key string, _ versioned) bool { return strings.HasPrefix(key, prefix) })
}

func (s *store) remember(key string, v versioned) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs[key] = v
}

// update changes block b of p to what fn makes of its current document
// (empty when the block is free), with one check-and-set write, and
// returns the document stored. fn may run several times, on fresher
// documents after a lost race: only its last run counts. When fn changes
// nothing on a cached copy, it is asked again on a fresh read, so "nothing
// to do" is never decided on stale data. A document left without
// allocations is deleted: the block is free again.
func (s *store) update(ctx context.Context, p Pool, b netip.Prefix, fn func(BlockDoc) (BlockDoc, bool)) (BlockDoc, error) {
	key := blockPath(p, b)
	defer s.lock(key)()
	cur, fromCache := s.cached(key)
	if !fromCache && s.wasScanned(p) {
		// A listing of the pool copied every block it had: one it lacked
		// was free then. Taken as a copy, checked by the write.
		cur, fromCache = versioned{doc: BlockDoc{Allocs: map[string]Alloc{}}}, true
	}
	// bindAt: writes into the block are bound to p's spec at this modify
	// index, as read (0: unbound; see boundRefusal).
	var bindAt uint64
	if p.fromSpec {
		bindAt = p.specIndex
	}
	for range maxAttempts {
		if !fromCache {
			var err error
			if cur, err = s.read(ctx, p, b); err != nil {
				return BlockDoc{}, err
			}
		}
		next, changed := fn(cur.doc.clone())
		if !changed {
			if fromCache {
				fromCache = false
				continue
			}
			return cur.doc, nil
		}
		var check []kvstore.Op
		bound := false
		switch {
		case cur.index == 0 && len(next.Allocs) > 0:
			var err error
			if check, err = specChecks(ctx, s.kv, p); err != nil {
				return BlockDoc{}, fmt.Errorf("claim %s: %w", key, err)
			}
		case cur.index != 0 && bindAt != 0:
			// A write into a block that exists (a release, a reclaim, a
			// record of spares) is bound to the spec as p was read, with
			// no read of it: the block key of a network removed and made
			// again under the name and subnet is the new network's, and
			// its check-and-set alone would free there an address this
			// node holds for a running container. Only a lost
			// transaction reads the spec, to tell why (see boundRefusal).
			bound = true
			check = []kvstore.Op{{Verb: kvstore.CheckIndex, Key: netspec.SpecKey(p.Network), Index: bindAt}}
		}
		won, index, err := s.write(ctx, key, next, cur.index, check...)
		if err != nil {
			return BlockDoc{}, err
		}
		if won {
			s.mu.Lock()
			s.noteIndexLocked(p, index)
			s.docs[key] = versioned{doc: next, index: index}
			s.mu.Unlock()
			return next, nil
		}
		if bound {
			var err error
			if bindAt, err = boundRefusal(ctx, s.kv, p); err != nil {
				return BlockDoc{}, fmt.Errorf("write %s, left as it is: %w", key, err)
			}
		}
		fromCache = false // someone else wrote it: read it again
	}
	return BlockDoc{}, fmt.Errorf("update %s: too much contention", key)
}

// errNotServed refuses a claim of a block of a pool its spec no longer
// gives; errSpecGone, one whose spec is gone (see specCheck).
var (
	errNotServed = errors.New("nothing more is handed out of it")
	errSpecGone  = fmt.Errorf("network removed: %w", errNotServed)
)

// notServed says err refuses a claim because the pool's network is being
// removed, gone, or no longer gives the pool.
func notServed(err error) bool {
	var rm *RemovingError
	return errors.Is(err, errNotServed) || errors.As(err, &rm)
}

// specCheck is the check that p's network spec stands as read now, to go
// in the transaction that claims a block of p (writes its document where
// there was none): it exists, is not being removed, and still gives p.
// A request that read the spec just before `underlay network rm` deleted
// it with the pool's tree would otherwise write a block of a deleted
// network, whose allocations a network made again with the name and
// subnet would take as held. A write into a block that exists is a
// check-and-set on the block's modify index, which the removal's delete
// makes fail; but the block key of a network made again is the new
// network's, whose writes the node's copy then has: such a write of a
// pool read from a spec carries a check of the spec's index as read
// instead, with no read of it (see update, boundRefusal). The spec key is written only by `network create`, by the mark
// of `network rm` and by its delete (leases, reports and the network
// index are other keys), so the check fails no claim but of a network
// made, being removed or removed since, or a spec rewritten by hand;
// the claim, retried on a fresh read of the block, reads the spec again.
// Every other write that may create a key under p's tree (the pressure
// key, a sweep's reports) carries the same check, for the same reason.
func specCheck(ctx context.Context, kv KV, p Pool) (kvstore.Op, error) {
	key := netspec.SpecKey(p.Network)
	pair, ok, err := kv.Get(ctx, key)
	if err != nil {
		return kvstore.Op{}, fmt.Errorf("read the spec of network %s: %w", termtext.Q(p.Network), err)
	}
	if !ok {
		return kvstore.Op{}, fmt.Errorf("network %s was removed (its spec %s is gone): %w", termtext.Q(p.Network), termtext.Cell(key), errSpecGone)
	}
	spec, err := netspec.DecodeSpec(p.Network, pair.Value)
	if err != nil {
		return kvstore.Op{}, fmt.Errorf("network %s: %w", termtext.Q(p.Network), err)
	}
	now, _ := SpecPools{}.pool(spec, p.Prefix.Addr().Is6())
	switch {
	case spec.Deleting:
		return kvstore.Op{}, &RemovingError{Pool: p}
	case spec.Name != p.Network || now.Prefix != p.Prefix || now.allocRange() != p.allocRange():
		return kvstore.Op{}, fmt.Errorf("network %s: its spec %s no longer gives pool %s of %s: %w", termtext.Q(p.Network), termtext.Cell(key), p.allocRange(), p.ID(), errNotServed)
	case p.specIndex != 0 && pair.Index != p.specIndex && (pair.CreateIndex == 0 || pair.CreateIndex > p.specIndex):
		// Written since p was read, and not by the mark of `network rm`
		// (above), nor in place (its CreateIndex, when known, would be
		// no later than p's reading: a rewrite by hand that still gives
		// p, bound as it is now): the network was removed and made
		// again under the name. What p was read for is the old
		// network's, whose tree went: written into the new one, an
		// address would pass for this node's there.
		return kvstore.Op{}, fmt.Errorf("network %s: its spec %s was written since pool %s was read (the network removed and made again): %w", termtext.Q(p.Network), termtext.Cell(key), p.ID(), errSpecGone)
	case p.specIndex != 0 && pair.Index != p.specIndex && !maps.Equal(now.Reserved, p.Reserved):
		// Rewritten in place since p was read (above: not made again),
		// now reserving other addresses (its gateway, its aux
		// addresses) than p does: p could hand one out. The pool is
		// read again at the next request.
		return kvstore.Op{}, fmt.Errorf("network %s: its spec %s was rewritten since pool %s was read, and reserves other addresses (gateway, aux) than the pool as read: %w", termtext.Q(p.Network), termtext.Cell(key), p.ID(), errNotServed)
	}
	return kvstore.Op{Verb: kvstore.CheckIndex, Key: key, Index: pair.Index}, nil
}

// boundRefusal says why a write into an existing block of p, bound to
// p's spec as read (its modify index), may have been rolled back, reading
// the spec, and returns the spec index to bind the next write to: p's
// when it stands as read (the block changed: read it again and write,
// bound); an error when it was created since p was read (its CreateIndex
// is later: the network removed and made again under the name, with any
// subnet; a block key of p it has is the new network's), or was written
// since and gives p with no CreateIndex known (the same, told without
// it), or was marked by `network rm` since p was read (the removal
// deletes the network's tree, what the block records with it: an address
// left recorded there is held only until then). A pool read from the
// marked spec (a *RemovingError's) is bound again to the spec as it is
// now when it is still the same network's, marked: `network rm` marks
// twice, and its releases are what the removal's containers give back.
// Any pool is bound again to the spec as it is now when it was rewritten
// in place (its CreateIndex no later than p's reading: by hand, the key
// kept) and still gives p: the same network, whose blocks are p's; but
// not when the rewrite reserves other addresses (a gateway, aux
// addresses) than p does, which p could hand out: refused, and the pool
// read again at the next request.
// Otherwise the write goes on unbound (0), as before writes were bound:
// the spec is gone (`network rm` deleted the tree with it: nothing is
// left to free; or it was deleted by hand, the tree left, and a late
// release frees the old network's record), unreadable, or rewritten by
// hand to another pool (its key, kept, keeps its CreateIndex), which no
// agent serves.
func boundRefusal(ctx context.Context, kv KV, p Pool) (bindAt uint64, err error) {
	key := netspec.SpecKey(p.Network)
	pair, ok, err := kv.Get(ctx, key)
	switch {
	case err != nil:
		return 0, fmt.Errorf("read the spec of network %s: %w", termtext.Q(p.Network), err)
	case !ok:
		return 0, nil
	case pair.Index == p.specIndex:
		return p.specIndex, nil
	case pair.CreateIndex > p.specIndex:
		// Created after the spec p was read from was written: not a
		// rewrite of that spec, another network under the name.
		return 0, fmt.Errorf("network %s: its spec %s was created (index %d) after pool %s was read from the spec at index %d: the network was removed and made again, and its blocks are the new network's: %w",
			termtext.Q(p.Network), termtext.Cell(key), pair.CreateIndex, p.ID(), p.specIndex, errSpecGone)
	}
	spec, err := netspec.DecodeSpec(p.Network, pair.Value)
	if err != nil {
		return 0, nil
	}
	now, _ := SpecPools{}.pool(spec, p.Prefix.Addr().Is6())
	switch {
	case spec.Deleting && p.marked:
		// Marked again, or rewritten by hand since: the same network
		// (its CreateIndex, above), still being removed.
		return pair.Index, nil
	case spec.Deleting:
		return 0, fmt.Errorf("network %s: its spec %s was marked for removal (`underlay network rm`) since pool %s was read, and the removal deletes the network's tree: %w",
			termtext.Q(p.Network), termtext.Cell(key), p.ID(), &RemovingError{Pool: p})
	case spec.Name == p.Network && now.Prefix == p.Prefix && now.allocRange() == p.allocRange() && pair.CreateIndex != 0 && !maps.Equal(now.Reserved, p.Reserved):
		// Rewritten in place, now reserving other addresses (its
		// gateway, its aux addresses) than p does: p could hand one
		// out. The pool is read again at the next request.
		return 0, fmt.Errorf("network %s: its spec %s was rewritten since pool %s was read, and reserves other addresses (gateway, aux) than the pool as read: %w",
			termtext.Q(p.Network), termtext.Cell(key), p.ID(), errNotServed)
	case spec.Name == p.Network && now.Prefix == p.Prefix && now.allocRange() == p.allocRange() && pair.CreateIndex != 0:
		// Rewritten in place (its CreateIndex, above: by hand), still
		// giving p: the same network's spec, its blocks p's.
		return pair.Index, nil
	case spec.Name == p.Network && now.Prefix == p.Prefix && now.allocRange() == p.allocRange():
		return 0, fmt.Errorf("network %s: its spec %s was written since pool %s was read (the network removed and made again): its block is the new network's: %w",
			termtext.Q(p.Network), termtext.Cell(key), p.ID(), errSpecGone)
	}
	return 0, nil
}

// specChecks is specCheck's check for a write that may create a key under
// p's tree, none for a pool not served from its spec (see PoolOf).
func specChecks(ctx context.Context, kv KV, p Pool) ([]kvstore.Op, error) {
	if !p.fromSpec {
		return nil, nil
	}
	op, err := specCheck(ctx, kv, p)
	if err != nil {
		return nil, err
	}
	return []kvstore.Op{op}, nil
}

// setUnderSpec writes value at key, a key under p's tree no other writer
// checks (the pressure key, a node's own report), with specChecks' check:
// refused once p's network is being removed, gone or no longer gives p,
// so that no key is left under a deleted network's tree. A transaction
// rolled back can only be the spec's change between its read and the
// write: it is read again.
func setUnderSpec(ctx context.Context, kv KV, p Pool, key string, value []byte) error {
	for range maxAttempts {
		check, err := specChecks(ctx, kv, p)
		if err != nil {
			return err
		}
		res, err := kv.Txn(ctx, append([]kvstore.Op{{Verb: kvstore.Set, Key: key, Value: value}}, check...))
		if err != nil || res.OK {
			return err
		}
	}
	return fmt.Errorf("write %s: the spec of network %s kept changing", termtext.Cell(key), termtext.Q(p.Network))
}

// putUnderSpec stores doc as JSON at key, with setUnderSpec's check; a
// nil doc deletes the key, which leaves nothing under a deleted tree and
// needs no check.
func putUnderSpec(ctx context.Context, kv KV, p Pool, key string, doc any) error {
	if doc == nil {
		_, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Delete, Key: key}})
		return err
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return setUnderSpec(ctx, kv, p, key, b)
}

// fresh reads block b of p, as read does, holding the block's lock: a
// write of this node's under way is read once done, never copied over by
// an older read.
func (s *store) fresh(ctx context.Context, p Pool, b netip.Prefix) (versioned, error) {
	defer s.lock(blockPath(p, b))()
	return s.read(ctx, p, b)
}

// read reads one block's document, fresh.
func (s *store) read(ctx context.Context, p Pool, b netip.Prefix) (versioned, error) {
	key := blockPath(p, b)
	pair, ok, err := s.kv.Get(ctx, key)
	if err != nil {
		return versioned{}, fmt.Errorf("read %s: %w", key, err)
	}
	if !ok {
		v := versioned{doc: BlockDoc{Allocs: map[string]Alloc{}}}
		s.remember(key, v)
		return v, nil
	}
	doc, err := decodeBlock(p, b, pair.Value)
	if err != nil {
		s.noteBad(p.ID(), BadDoc{Key: key, Index: pair.Index, Err: err})
		return versioned{}, fmt.Errorf("%s: %w: %v", key, ErrBadDocument, err)
	}
	v := versioned{doc: doc, index: pair.Index}
	// Not an answer noteIndexLocked takes: the key's own modify index,
	// below the pool's newest write whenever another block was written
	// since.
	s.remember(key, v)
	return v, nil
}

// write stores doc at key if the key's modify index is index (0: absent),
// deleting the key when doc holds no allocation, and checks pass.
func (s *store) write(ctx context.Context, key string, doc BlockDoc, index uint64, checks ...kvstore.Op) (bool, uint64, error) {
	op := kvstore.Op{Verb: kvstore.CAS, Key: key, Index: index}
	if len(doc.Allocs) == 0 {
		if index == 0 {
			return true, 0, nil // absent already
		}
		op = kvstore.Op{Verb: kvstore.DeleteCAS, Key: key, Index: index}
	} else {
		b, err := marshalBlockDoc(doc)
		if err != nil {
			return false, 0, fmt.Errorf("encode %s: %w", key, err)
		}
		op.Value = b
	}
	s.writes.Add(1)
	// The block first: a refused transaction is named by its first key.
	res, err := s.kv.Txn(ctx, append([]kvstore.Op{op}, checks...))
	if err != nil {
		return false, 0, fmt.Errorf("write %s: %w", key, err)
	}
	if !res.OK {
		s.conflicts.Add(1)
		return false, 0, nil
	}
	var next uint64
	for _, pr := range res.Pairs {
		if pr.Key == key { // a check may return its key too
			next = pr.Index
		}
	}
	return true, next, nil
}

// view is one pool's blocks as last listed.
type view struct {
	// docs are the readable blocks of the pool.
	docs map[netip.Prefix]BlockDoc
	// taken has every block of the pool with a key, readable or not: an
	// unreadable block is never claimed.
	taken map[netip.Prefix]bool
	// shadowed are the blocks of the pool overlapped by a bad key that
	// names a prefix of it other than a block (a block of another size,
	// or one spelt otherwise: another agent's or version's), with that
	// key: what it records there cannot be read, so nothing new is
	// allocated from them until it is removed. Their documents are read
	// and freed from as any.
	shadowed map[netip.Prefix]string
}

// scan lists p's blocks fresh, refreshing the copies of them. Unreadable
// documents and stray keys are left out (and noted, see badDocs); they
// never stop the rest of the pool. The documents are read only when the
// pool changed since they were last (see listPool).
func (s *store) scan(ctx context.Context, p Pool) (view, error) {
	n := s.startListing()
	pairs, err := s.listPool(ctx, p)
	if err != nil {
		return view{}, err
	}
	v, bad := decodePool(p, pairs)
	s.mu.Lock()
	prefix := poolPrefix(p)
	for key := range s.docs {
		if strings.HasPrefix(key, prefix) {
			delete(s.docs, key)
		}
	}
	for _, pr := range pairs {
		if b, err := parseBlockKey(strings.TrimPrefix(pr.Key, prefix)); err == nil {
			if doc, ok := v.docs[b]; ok {
				s.docs[pr.Key] = versioned{doc: doc, index: pr.Index}
			}
		}
	}
	s.scanned[p.ID()] = true
	if s.showsLocked(p, n) {
		s.bad[p.ID()] = bad
		s.shadowed[p.ID()] = v.shadowed
		// Only the bad keys still there are remembered: keys anyone
		// with an agent's token may write come and go, and remembering
		// every one ever seen would grow without bound.
		listed := make(map[string]bool, len(bad))
		for _, d := range bad {
			listed[d.Key] = true
		}
		for key := range s.logged {
			if strings.HasPrefix(key, prefix) && !listed[key] {
				delete(s.logged, key)
			}
		}
	} else {
		// A listing read since was taken in first: a bad key it found,
		// written since this one was read, shadows this view too.
		for b, key := range s.shadowed[p.ID()] {
			if v.shadowed[b] == "" {
				v.shadowed[b] = key
			}
		}
	}
	s.mu.Unlock()
	for _, d := range bad {
		s.noteBad(p.ID(), d)
	}
	return v, nil
}

// listPool returns every pair under p's blocks/ as a listing of them
// (KV.List) would now: the last listing again when the pool has not
// changed since, else a new listing. Each sweep of every node scans every
// pool, and a listing of its documents at each was the main read load of
// Consul's servers; a listing of keys alone tells whether they changed.
//
// Consul answers a listing of keys with the pool's index (X-Consul-Index,
// Consul 1.8.7's state.KVSList): the highest modify index of a key under
// the prefix, unreadable ones included, or of a tombstone there (a key
// deleted), or with neither the KV store's. It is read before each listing
// of documents and kept with it. Read again equal, and with the same keys
// listed, nothing under the prefix changed since: a key listed both times
// was written last at or below that index, before the listing read it;
// one created since would list, or if deleted again leave a tombstone
// above the index; one deleted is missing from the keys, even once Consul
// reaped its tombstone (which may take the index back to one answered
// before). An index that went backwards (Consul restarted empty, a
// snapshot restored) differs, and the documents are read. A key the
// token may no longer read is missing from the keys: the documents are
// read again, as filtered as a listing now would be, so that a key left
// out is never taken for one deleted any more than before (see
// kvstore.Absence). At most maxRestSkips scans in a row take a listing
// again.
func (s *store) listPool(ctx context.Context, p Pool) ([]kvstore.Pair, error) {
	prefix := poolPrefix(p)
	keys, index, err := s.kv.KeysIndex(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("read the keys of pool %s: %w", p.ID(), err)
	}
	s.mu.Lock()
	s.noteIndexLocked(p, index)
	last, ok := s.rest[p.ID()]
	if ok && last.index == index && last.skips < maxRestSkips && slices.EqualFunc(last.pairs, keys, func(pr kvstore.Pair, key string) bool { return pr.Key == key }) {
		last.skips++
		s.rest[p.ID()] = last
		s.mu.Unlock()
		return last.pairs, nil
	}
	s.mu.Unlock()
	pairs, err := s.kv.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("read pool %s: %w", p.ID(), err)
	}
	s.mu.Lock()
	s.rest[p.ID()] = restListing{index: index, pairs: pairs}
	s.mu.Unlock()
	return pairs, nil
}

// listed is p's blocks as the store's copies have them, limited to the
// keys the pool has now, read without a document (KV.Keys): every block
// with a key is taken, a block whose key is gone is free, a bad key's
// name shadows the blocks it overlaps (see view.shadowed), and the copy
// of a block still listed is its document, as last read or written (a
// block created since has none: taken, never claimed from here). What a
// node that needs a new block reads, in place of every document of the
// pool (scan): a claim of a free block is a create, which fails when
// another node made it first, and a copy, stale, costs a lost
// check-and-set, never a duplicate. The shadows replace the last
// listing's, being as fresh: they come of key names alone; but not those
// of a listing read after this one and taken in first (see shown). Of the bad
// keys a scan found, those no longer listed are forgotten (removed:
// badCount drops at once); new ones are found by scans, which read their
// documents (the reclaimer's sweeps, a node's first use of the pool).
func (s *store) listed(ctx context.Context, p Pool) (view, error) {
	n := s.startListing()
	keys, err := s.kv.Keys(ctx, poolPrefix(p))
	if err != nil {
		return view{}, fmt.Errorf("read the keys of pool %s: %w", p.ID(), err)
	}
	v := view{docs: map[netip.Prefix]BlockDoc{}, taken: map[netip.Prefix]bool{}, shadowed: map[netip.Prefix]string{}}
	prefix := poolPrefix(p)
	there := make(map[string]bool, len(keys))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, key := range keys {
		there[key] = true
		b, err := p.blockOfKey(key)
		if err != nil {
			v.shade(p, strings.TrimPrefix(key, prefix), key)
			continue
		}
		v.taken[b] = true
		if c, ok := s.docs[key]; ok && c.index != 0 {
			v.docs[b] = c.doc.clone()
		}
	}
	if !s.showsLocked(p, n) {
		// A listing read since was taken in first: what it found of bad
		// keys stands, and shadows this view too (a bad key written
		// since this listing was read).
		for b, key := range s.shadowed[p.ID()] {
			if v.shadowed[b] == "" {
				v.shadowed[b] = key
			}
		}
		return v, nil
	}
	s.shadowed[p.ID()] = v.shadowed
	if bad, ok := s.bad[p.ID()]; ok {
		s.bad[p.ID()] = slices.DeleteFunc(slices.Clone(bad), func(d BadDoc) bool { return !there[d.Key] })
	}
	for key := range s.logged {
		if strings.HasPrefix(key, prefix) && !there[key] {
			delete(s.logged, key)
		}
	}
	return v, nil
}

// own returns p's blocks this node holds, from its copies (listing the
// pool the first time), in address order.
func (s *store) own(ctx context.Context, p Pool, node string) (map[netip.Prefix]BlockDoc, error) {
	return s.copies(ctx, p, func(doc BlockDoc) bool { return doc.Node == node && len(doc.Allocs) > 0 })
}

// copies returns the copies of p's blocks that keep says to, first
// listing the pool whole if it never was; blocks a bad key shadows are
// left out.
func (s *store) copies(ctx context.Context, p Pool, keep func(BlockDoc) bool) (map[netip.Prefix]BlockDoc, error) {
	s.mu.Lock()
	scanned := s.scanned[p.ID()]
	s.mu.Unlock()
	if !scanned {
		if _, err := s.scan(ctx, p); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[netip.Prefix]BlockDoc{}
	prefix := poolPrefix(p)
	for key, v := range s.docs {
		if !strings.HasPrefix(key, prefix) || !keep(v.doc) {
			continue
		}
		if b, err := parseBlockKey(strings.TrimPrefix(key, prefix)); err == nil && s.shadowed[p.ID()][b] == "" {
			out[b] = v.doc
		}
	}
	return out, nil
}

// copiedShim returns the lowest address the copies of p's blocks record
// as node's shim, if any.
func (s *store) copiedShim(p Pool, node string) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out netip.Addr
	prefix := poolPrefix(p)
	for key, v := range s.docs {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		for _, addr := range v.doc.addrs() {
			if al := v.doc.Allocs[addr.String()]; al.Kind == KindShim && al.Node == node && (!out.IsValid() || addr.Less(out)) {
				out = addr
			}
		}
	}
	return out, out.IsValid()
}

// shadow returns the bad key overlapping block b of p at the last listing
// of p (listing it the first time), if any: nothing new is allocated in b
// while it is there (see view.shadowed).
func (s *store) shadow(ctx context.Context, p Pool, b netip.Prefix) (string, error) {
	if !s.wasScanned(p) {
		if _, err := s.scan(ctx, p); err != nil {
			return "", err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shadowed[p.ID()][b], nil
}

// noteBad logs a bad key once per version of it.
func (s *store) noteBad(pool string, d BadDoc) {
	s.mu.Lock()
	seen := s.logged[d.Key] == d.Index
	s.logged[d.Key] = d.Index
	s.mu.Unlock()
	if !seen {
		s.log.Error("skipping a bad document in the address pool: nothing is allocated from it", "pool", pool, "key", d.Key, "err", d.Err, "fix", d.removal())
	}
}

// forget drops what the store holds of the pools not in keep, by ID (their
// networks removed, or refused), so that neither its memory nor
// badCount keeps them for as long as the agent runs. A pool served again
// is read afresh. locks stay: one may be held.
func (s *store) forget(keep map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.DeleteFunc(s.scanned, func(id string, _ bool) bool { return !keep[id] })
	maps.DeleteFunc(s.bad, func(id string, _ []BadDoc) bool { return !keep[id] })
	maps.DeleteFunc(s.shadowed, func(id string, _ map[netip.Prefix]string) bool { return !keep[id] })
	maps.DeleteFunc(s.shown, func(id string, _ uint64) bool { return !keep[id] })
	maps.DeleteFunc(s.rest, func(id string, _ restListing) bool { return !keep[id] })
	maps.DeleteFunc(s.seen, func(id string, _ uint64) bool { return !keep[id] })
	maps.DeleteFunc(s.docs, func(key string, _ versioned) bool { return !keep[poolOfKey(key)] })
	maps.DeleteFunc(s.logged, func(key string, _ uint64) bool { return !keep[poolOfKey(key)] })
}

// poolOfKey is the ID of the pool a key under its blocks/ belongs to.
func poolOfKey(key string) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(key, KVPrefix), "/blocks/")
	return id
}

// badCount is how many bad keys the last listings of every pool found.
func (s *store) badCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, bad := range s.bad {
		n += len(bad)
	}
	return n
}

// BadDoc is a key of a pool that cannot be read: under blocks/, one the
// allocator skips (an undecodable document, or a key that names no block
// of the pool); under kept/ (Kept), one `underlay ips` and the dashboard
// skip.
type BadDoc struct {
	Key   string
	Index uint64
	Err   error
	Kept  bool
}

// Removal is how the key goes (shellword.KVRemoval): fix, the command
// that removes it; or, for a key Consul's HTTP paths cannot name, no
// command and why, to append to the problem. Agents then record again
// the addresses their containers hold in that block, within two leak
// sweeps; a node's agent writes its kept key again at its next sweep that
// keeps any address.
func (d BadDoc) Removal() (fix, why string) { return shellword.KVRemoval(d.Key, "") }

// removal is how the key goes, in one text: its fix, or why there is
// none and what to do instead.
func (d BadDoc) removal() string {
	fix, why := d.Removal()
	if fix == "" {
		return strings.TrimPrefix(why, "; ")
	}
	return fix
}

// RemovedBy says how the key goes, as a clause: "`FIX` removes it", or why
// no command does and what to do instead.
func (d BadDoc) RemovedBy() string {
	if fix, _ := d.Removal(); fix != "" {
		return "`" + fix + "` removes it"
	}
	return d.removal()
}

// Effect says what skipping the key does.
func (d BadDoc) Effect() string {
	if d.Kept {
		return "the addresses its node keeps for container starts under way show as leaks in underlay ips and the dashboard; the sweep does not read it"
	}
	return "nothing is allocated from it, nor from the pool's blocks it overlaps, and addresses recorded there are not listed; once it is removed, agents record again the addresses their containers hold there"
}

// decodePool turns a pool's listing into a view, setting bad keys apart.
func decodePool(p Pool, pairs []kvstore.Pair) (view, []BadDoc) {
	v := view{docs: map[netip.Prefix]BlockDoc{}, taken: map[netip.Prefix]bool{}, shadowed: map[netip.Prefix]string{}}
	var bad []BadDoc
	prefix := poolPrefix(p)
	for _, pr := range pairs {
		b, err := p.blockOfKey(pr.Key)
		if err != nil {
			bad = append(bad, BadDoc{Key: pr.Key, Index: pr.Index, Err: err})
			v.shade(p, strings.TrimPrefix(pr.Key, prefix), pr.Key)
			continue
		}
		v.taken[b] = true
		doc, err := decodeBlock(p, b, pr.Value)
		if err != nil {
			bad = append(bad, BadDoc{Key: pr.Key, Index: pr.Index, Err: err})
			continue
		}
		v.docs[b] = doc
	}
	slices.SortFunc(bad, func(x, y BadDoc) int { return strings.Compare(x.Key, y.Key) })
	return v, bad
}

// blockOfKey is the block of p that key, a key under p's blocks/, names;
// an error for a key that names none (a stray key).
func (p Pool) blockOfKey(key string) (netip.Prefix, error) {
	b, err := parseBlockKey(strings.TrimPrefix(key, poolPrefix(p)))
	if err == nil && !p.isBlock(b) {
		err = fmt.Errorf("%s is not a block of %s (%s, /%d blocks)", b, p.ID(), p.allocRange(), p.blockBits())
	}
	return b, err
}

// shade marks the blocks of p that name, a bad key's last element,
// overlaps as shadowed by key, if name reads as a prefix or an address
// however spelt.
func (v view) shade(p Pool, name, key string) {
	q, err := netip.ParsePrefix(strings.ReplaceAll(name, "_", "/"))
	if err != nil {
		a, err := netip.ParseAddr(name)
		if err != nil {
			return
		}
		q = netip.PrefixFrom(a, a.BitLen())
	}
	q = netip.PrefixFrom(q.Addr().WithZone("").Unmap(), q.Bits()-(q.Addr().BitLen()-q.Addr().Unmap().BitLen())).Masked()
	if !q.IsValid() || !q.Overlaps(p.allocRange()) {
		return
	}
	blocks := []netip.Prefix{p.Block(q.Addr())}
	if q.Bits() < p.blockBits() {
		// Wider than a block: every block of q within the range, or of
		// the whole range when q holds it.
		within := p
		if q.Bits() > p.allocRange().Bits() {
			within.Range = q
		}
		blocks = within.Blocks()
	}
	for _, b := range blocks {
		if v.shadowed[b] == "" {
			v.shadowed[b] = key
		}
	}
}

// decodeBlock decodes block b's document, which must name only addresses
// of b, and whose texts must all be graphic (see graphic).
func decodeBlock(p Pool, b netip.Prefix, raw []byte) (BlockDoc, error) {
	doc, err := unmarshalBlockDoc(raw)
	if err != nil {
		return BlockDoc{}, fmt.Errorf("decode: %w", err)
	}
	if doc.Allocs == nil {
		doc.Allocs = map[string]Alloc{}
	}
	if err := graphic("node", doc.Node); err != nil {
		return BlockDoc{}, err
	}
	for _, k := range slices.Sorted(maps.Keys(doc.Allocs)) {
		a, err := netip.ParseAddr(k)
		if err != nil || !b.Contains(a) || a.String() != k {
			return BlockDoc{}, fmt.Errorf("allocation %s is not an address of block %s", termtext.Q(k), b)
		}
		al := doc.Allocs[k]
		for _, f := range [][2]string{{"node", al.Node}, {"kind", al.Kind}, {"gen", al.Gen}} {
			if err := graphic(f[0], f[1]); err != nil {
				return BlockDoc{}, fmt.Errorf("allocation %s: %w", k, err)
			}
		}
	}
	return doc, nil
}

// graphic says whether a record's text, named what, has a character that
// is not graphic: no node identity, kind or generation the agents write
// has one, and `underlay ips` and the dashboard show these texts, where a
// newline would forge a row, an escape sequence rewrite the terminal, and
// a bidirectional override (U+202E) reorder what follows. Such a document
// is refused whole, as one that does not decode: dropping the record alone
// would free an address its node may still hold.
func graphic(what, s string) error {
	if !termtext.Graphic(s) {
		return fmt.Errorf("%s %s has a character that is not graphic", what, termtext.Q(s))
	}
	return nil
}
