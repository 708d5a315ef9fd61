package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/gateway/auth"
	"cryptostream/streams"
)

// trackedAssets is the gateway's watched copy of the assets bucket, which
// answers whether an asset is tracked (a websocket subscribe, a history
// route). A direct get is answered by whichever replica of the bucket the
// request reaches, and on a cluster one that has not applied a put yet
// says "not tracked" about an asset that is: the watch is one ordered
// stream of the bucket's changes, so once it has delivered a put the asset
// stays known. Until the first pass of the watch is in (and while it is
// being re-established) the bucket is asked directly.
type trackedAssets struct {
	kv    Bucket
	watch auth.Watcher // nil: a bucket that cannot be watched (a test double)
	log   *slog.Logger

	mu     sync.RWMutex
	synced bool
	assets map[string]trackedEntry // by asset key
}

// trackedEntry is the newest known state of one key, with the revision it
// came at: a watch delivery older than what this gateway wrote itself does
// not undo it.
type trackedEntry struct {
	rev     uint64
	tracked bool
}

func newTrackedAssets(kv Bucket, log *slog.Logger) *trackedAssets {
	w, _ := kv.(auth.Watcher)
	return &trackedAssets{kv: kv, watch: w, log: log, assets: map[string]trackedEntry{}}
}

// Tracked reports whether sym is tracked.
func (t *trackedAssets) Tracked(ctx context.Context, sym string) (bool, error) {
	key := streams.AssetKey(sym)
	t.mu.RLock()
	synced, e := t.synced, t.assets[key]
	t.mu.RUnlock()
	if synced {
		return e.tracked, nil
	}
	_, err := t.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Synced reports whether the copy holds the whole bucket.
func (t *trackedAssets) Synced() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.synced
}

// wrote records a change this gateway made (rev is the put's revision,
// or for a delete the revision deleted), so that it answers its own
// writes at once rather than when the watch brings them back.
func (t *trackedAssets) wrote(key string, rev uint64, tracked bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.set(t.assets, key, rev, tracked)
}

func (t *trackedAssets) set(m map[string]trackedEntry, key string, rev uint64, tracked bool) {
	if cur, ok := m[key]; ok && cur.rev >= rev {
		return
	}
	m[key] = trackedEntry{rev: rev, tracked: tracked}
}

// Run follows the bucket until ctx ends, watching again after the watch
// ends.
func (t *trackedAssets) Run(ctx context.Context) error {
	if t.watch == nil {
		<-ctx.Done()
		return nil
	}
	streams.Rewatch(ctx, t.log, "assets watch ended; tracked assets are read from the bucket until it resumes", nil, t.follow, func(error) {
		t.mu.Lock()
		t.synced = false
		t.mu.Unlock()
	})
	return nil
}

func (t *trackedAssets) follow(ctx context.Context) error {
	w, err := t.watch.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	// The first pass builds a fresh copy (a key purged while the watch was
	// down is not delivered again); later changes go to the live one.
	fresh := map[string]trackedEntry{}
	for e := range w.Updates() {
		if e == nil {
			t.mu.Lock()
			for k, v := range t.assets {
				t.set(fresh, k, v.rev, v.tracked)
			}
			t.assets, t.synced = fresh, true
			t.mu.Unlock()
			fresh = nil
			continue
		}
		tracked := false
		if e.Operation() == jetstream.KeyValuePut {
			var a streams.Asset
			if err := json.Unmarshal(e.Value(), &a); err != nil {
				// Not an asset this code can read: not tracked, as
				// the direct get's callers would find it unreadable.
				t.log.Error("assets watch: undecodable asset", "key", e.Key(), "err", err)
			} else {
				tracked = true
			}
		}
		if fresh != nil {
			t.set(fresh, e.Key(), e.Revision(), tracked)
			continue
		}
		t.mu.Lock()
		t.set(t.assets, e.Key(), e.Revision(), tracked)
		t.mu.Unlock()
	}
	return errors.New("gateway: assets watch closed")
}
