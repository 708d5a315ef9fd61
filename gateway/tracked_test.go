package gateway_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/gateway"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// laggingReplica is an assets bucket whose direct gets are answered by a
// replica that never applied a put: every key is "not found", while its
// watch (one ordered stream of the bucket's changes) carries them.
type laggingReplica struct{ jetstream.KeyValue }

func (laggingReplica) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}

// TestTrackedFromTheWatch: the hub answers whether an asset is tracked
// from the gateway's watched copy of the assets bucket, so a direct get
// that a lagging replica answers "not found" does not refuse a subscribe,
// and an asset untracked behind the gateway's back is refused once the
// watch has the delete.
func TestTrackedFromTheWatch(t *testing.T) {
	s := newStack(t, func(_ *gateway.Config, d *gateway.Deps) { d.Assets = laggingReplica{d.Assets.(jetstream.KeyValue)} })
	natstest.WaitFor(t, time.Minute, "the assets watch's first pass", s.gw.AssetsSynced)
	tok := s.signup("alice", "alice-password")
	c, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"op": "subscribe", "channel": "candles:ETH-USD:1m"})
	if f := c.next(); f.Type != "error" || f.Code != "not_tracked" {
		t.Fatalf("before tracking: got %+v, want not_tracked", f)
	}

	s.track("ETH/USD") // waits until the watch has it
	c.send(map[string]any{"op": "subscribe", "channel": "candles:ETH-USD:1m"})
	if f := c.next(); f.Type != "subscribed" {
		t.Fatalf("tracked: got %+v, want subscribed", f)
	}
	c.send(map[string]any{"op": "unsubscribe", "channel": "candles:ETH-USD:1m"})
	c.expect("unsubscribed", "candles:ETH-USD:1m")

	kv, err := s.js.KeyValue(t.Context(), streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(t.Context(), streams.AssetKey("ETH/USD")); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, time.Minute, "the watch to have the delete", func() bool { return !s.gw.Tracks("ETH/USD") })
	c.send(map[string]any{"op": "subscribe", "channel": "candles:ETH-USD:1m"})
	if f := c.next(); f.Type != "error" || f.Code != "not_tracked" {
		t.Fatalf("untracked: got %+v, want not_tracked", f)
	}
}

// TestTrackedAnswersOwnWrites: an asset tracked or untracked through this
// gateway's REST routes is answered at once, without waiting for the
// watch to bring the change back, and a watch delivery older than the
// gateway's own write does not undo it.
func TestTrackedAnswersOwnWrites(t *testing.T) {
	s := newStack(t)
	natstest.WaitFor(t, time.Minute, "the assets watch's first pass", s.gw.AssetsSynced)
	admin := s.login(adminName, adminPass)
	s.trackVia(admin, "BTC/USD")
	if !s.gw.Tracks("BTC/USD") {
		t.Fatal("an asset this gateway tracked is not known at once")
	}
	tok := s.signup("alice", "alice-password")
	c, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"op": "subscribe", "channel": "candles:BTC-USD:1m"})
	if f := c.next(); f.Type != "subscribed" {
		t.Fatalf("got %+v, want subscribed", f)
	}
	s.expect(s.call("DELETE", "/crypto/assets/BTC-USD", admin, nil), 204)
	if s.gw.Tracks("BTC/USD") {
		t.Fatal("an asset this gateway untracked is still known as tracked")
	}
	b, _ := json.Marshal(streams.Asset{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: "BTC/USD", AddedAt: time.Now()})
	kv, err := s.js.KeyValue(t.Context(), streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), streams.AssetKey("BTC/USD"), b); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, time.Minute, "the watch to have the put", func() bool { return s.gw.Tracks("BTC/USD") })
}
