package ingest_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/ingest"
	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// recordingSink is one instance's sink, noting when it published which
// candle.
type recordingSink struct {
	ingest.Sink
	mu        sync.Mutex
	published map[string]time.Time
}

func (r *recordingSink) PublishCandle(ctx context.Context, c streams.Candle) error {
	if err := r.Sink.PublishCandle(ctx, c); err != nil {
		return err
	}
	r.mu.Lock()
	if _, ok := r.published[c.MsgID()]; !ok {
		r.published[c.MsgID()] = time.Now()
	}
	r.mu.Unlock()
	return nil
}

func (r *recordingSink) before(t time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, at := range r.published {
		if at.Before(t) {
			n++
		}
	}
	return n
}

func (r *recordingSink) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.published)
}

// standbyInstance is an ingester with its own NATS connection, so that
// closing it kills the instance as a crash does: its lease is not handed
// over, it just stops being renewed.
type standbyInstance struct {
	nc     *nats.Conn
	sink   *recordingSink
	active chan bool
	cancel context.CancelFunc
	done   chan struct{}
}

func (h *harness) startStandby(t *testing.T, name string, cfg ingest.Config) *standbyInstance {
	t.Helper()
	nc, js := natstest.Connect(t, h.srv)
	ctx := t.Context()
	leases, err := js.KeyValue(ctx, streams.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	assets, err := js.KeyValue(ctx, streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	in := &standbyInstance{nc: nc, sink: &recordingSink{Sink: &ingest.JetStreamSink{JS: js}, published: map[string]time.Time{}},
		active: make(chan bool, 16), done: make(chan struct{})}
	cfg.WSURL, cfg.RESTURL = h.wsURL, h.rest
	w, err := ingest.New(cfg, ingest.Deps{Sink: in.sink, Assets: &ingest.KVAssets{KV: assets}, Log: testLog(t).With("instance", name),
		Registry: prometheus.NewRegistry(), Leases: leases, OnActive: func(a bool) { in.active <- a }})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go func() {
		defer close(in.done)
		if err := w.Run(wctx); err != nil && wctx.Err() == nil {
			t.Errorf("%s: %v", name, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-in.done })
	return in
}

func (in *standbyInstance) kill() {
	in.nc.Close()
	in.cancel()
	<-in.done
}

// TestActiveStandby: two ingesters against krakensim. One is active and
// publishes; the other stands by and publishes nothing. When the active one
// is killed, the standby takes over after the lease TTL and heals the gap
// from REST: MARKET holds every minute of the replay once, with no gap.
func TestActiveStandby(t *testing.T) {
	feed, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	// 600 market seconds a second: the lease TTL (5 s) is nearly an hour
	// of candles for the heal to fill.
	h := newHarness(t, krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: 600, MaxUpdatesPerCandle: 2, Heartbeat: 100 * time.Millisecond})
	h.addAsset(t, "BTC/USD")
	cfg := ingest.Config{Grace: 2 * time.Second, SubscribePace: 10 * time.Millisecond, RESTInterval: time.Millisecond,
		HealRetry: 50 * time.Millisecond, BackoffMin: 20 * time.Millisecond, MaxHealAttempts: 20}
	a := h.startStandby(t, "a", cfg)
	if !<-a.active {
		t.Fatal("a: told inactive first")
	}
	b := h.startStandby(t, "b", cfg)
	natstest.WaitProgress(t, time.Minute, "a publishes", func() (bool, string) {
		n := a.sink.count()
		return n > 60, strconv.Itoa(n)
	})
	killedAt := time.Now()
	a.kill()
	select {
	case on := <-b.active:
		if !on {
			t.Fatal("b: told inactive before it was active")
		}
	case <-t.Context().Done():
		t.Fatal(t.Context().Err())
	}
	t.Logf("b active %.2fs after a was killed", time.Since(killedAt).Seconds())
	if n := b.sink.before(killedAt); n != 0 {
		t.Fatalf("the standby published %d candles while the active instance ran", n)
	}
	// Well past the failover, so that the gap it left must have been healed.
	after := h.sim.Start().Add(3 * time.Hour)
	natstest.WaitProgress(t, time.Minute, "candles after the failover", func() (bool, string) {
		last, _ := h.lastStored(t, streams.Interval1m, "BTC/USD")
		return last.Start.After(after), last.Start.String()
	})
	b.kill()

	want := expectedGrid(t, feed)
	got := h.stored(t, streams.Interval1m, "BTC/USD")
	for i, c := range got {
		if i > 0 && !c.Start.Equal(got[i-1].Start.Add(time.Minute)) {
			t.Fatalf("candle %d at %s follows %s: a gap or a duplicate", i, c.Start, got[i-1].Start)
		}
		if w, ok := want[c.Start]; !ok || !sameValues(c, w) {
			t.Fatalf("candle %s = %+v, recording has %+v", c.Start, c, w)
		}
	}
	both := 0
	for id := range b.sink.published {
		if _, ok := a.sink.published[id]; ok {
			both++
		}
	}
	t.Logf("%d candles stored, %d published by a, %d by b, %d by both",
		len(got), a.sink.count(), b.sink.count(), both)
}
