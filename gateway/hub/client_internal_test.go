package hub

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"cryptostream/gateway/auth"
)

type noSource struct{}

func (noSource) Stream(context.Context, string) (jetstream.Stream, error) {
	return nil, errors.New("no streams in this test")
}

// testClient is a client with no socket: what the writer would write is
// what drain takes from its queue.
func testClient(t testing.TB, cfg Config) *client {
	t.Helper()
	h, err := New(cfg, Deps{Source: noSource{}, Verify: func(string) (auth.Claims, error) { return auth.Claims{}, errors.New("no") }})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{h: h, id: 1, wake: make(chan struct{}, 1), done: make(chan struct{}), subs: map[string]*clientSub{}}
	c.room = sync.NewCond(&c.qmu)
	return c
}

// drain takes every queued frame, as the writer does.
func (c *client) drain() []qitem {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	q := c.q
	c.q, c.nlive = nil, 0
	for _, it := range q {
		if it.sub != nil {
			it.sub.nq = 0
		}
	}
	c.roomLocked()
	return q
}

// flushDrained runs flushPending with the writer's part played by drain,
// and returns every frame it queued (without conflation the flush waits for
// room in a small queue while all its frames go through).
func (c *client) flushDrained(cs *clientSub) []qitem {
	var sent []qitem
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.flushPending(cs)
	}()
	for flushing := true; flushing; {
		select {
		case <-done:
			flushing = false
		case <-c.wake:
		}
		sent = append(sent, c.drain()...)
	}
	return sent
}

func liveEvent(seq uint64) event {
	return event{seq: seq, frame: []byte{byte(seq)}}
}

// A ticks subscription whose snapshot took long enough for more live ticks
// than its queue holds to pile up sends the newest of them, not every one,
// and its next live tick finds room: the client is behind, not slow.
func TestFlushPendingConflates(t *testing.T) {
	c := testClient(t, Config{QueueSize: 16})
	cs := &clientSub{c: c, conflate: true}
	now := time.Now()
	for seq := uint64(1); seq <= 100; seq++ {
		c.deliver(cs, liveEvent(seq), now)
	}
	if len(cs.pending) != 100 {
		t.Fatalf("%d pending, want 100", len(cs.pending))
	}
	sent := c.flushDrained(cs)
	if len(sent) != 1 || sent[0].b[0] != 100 {
		t.Fatalf("flushed %d frames, want the newest (100) alone", len(sent))
	}
	if !cs.ready || cs.lastSeq != 100 {
		t.Fatalf("ready %v, last seq %d", cs.ready, cs.lastSeq)
	}
	if !c.deliver(cs, liveEvent(101), now) || c.closing {
		t.Fatal("the next live tick was not queued")
	}
}

// A channel that does not conflate sends every pending event, in order.
func TestFlushPendingKeepsEveryCandle(t *testing.T) {
	c := testClient(t, Config{QueueSize: 16})
	cs := &clientSub{c: c}
	now := time.Now()
	for seq := uint64(1); seq <= 100; seq++ {
		c.deliver(cs, liveEvent(seq), now)
	}
	sent := c.flushDrained(cs)
	if len(sent) != 100 {
		t.Fatalf("flushed %d frames, want 100", len(sent))
	}
	for i, it := range sent {
		if it.b[0] != byte(i+1) {
			t.Fatalf("frame %d is event %d", i, it.b[0])
		}
	}
}

// With WriteDelay the writer of a client it wrote less than WriteDelay ago
// gathers what is queued while it waits into one write; without it, each
// wake-up is a write of its own.
func TestWriteDelayCoalesces(t *testing.T) {
	for _, tc := range []struct {
		delay          time.Duration
		writes, frames float64
	}{
		{0, 3, 3},
		// The first frame finds the client idle and goes at once; the
		// next two wait for the delay and go together.
		{20 * time.Millisecond, 2, 3},
	} {
		t.Run(tc.delay.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := testClient(t, Config{WriteDelay: tc.delay})
				srv, cli := net.Pipe()
				c.nc = srv
				read := make(chan struct{})
				go func() {
					defer close(read)
					_, _ = io.Copy(io.Discard, cli)
				}()
				writerDone := make(chan struct{})
				go func() {
					defer close(writerDone)
					c.writer()
				}()
				cs := &clientSub{c: c, ready: true}
				now := time.Now()
				for seq := uint64(1); seq <= 3; seq++ {
					if !c.deliver(cs, liveEvent(seq), now) {
						t.Fatalf("event %d not queued", seq)
					}
					// The writer is asleep: in its delay, or waiting
					// for the next wake-up once it wrote.
					synctest.Wait()
				}
				time.Sleep(tc.delay)
				synctest.Wait()
				if w, f := testutil.ToFloat64(c.h.m.writes), testutil.ToFloat64(c.h.m.frames); w != tc.writes || f != tc.frames {
					t.Fatalf("%v writes carrying %v frames, want %v carrying %v", w, f, tc.writes, tc.frames)
				}
				c.kill(websocket.CloseGoingAway, "")
				<-writerDone
				c.stopTimers()
				<-read
			})
		})
	}
}

// A catch-up (here the live events held during a resume's backlog) leaves
// room for live frames: one of the client's other channels while it waits
// for the socket, and the first live event after the seam. It used to fill
// the queue to the brim, so that either closed a healthy client with 4008
// (seen as a resume of ~300 candles closed on the gateway's defaults).
func TestCatchUpLeavesRoomForLive(t *testing.T) {
	for _, withOther := range []bool{true, false} {
		name := "seam"
		if withOther {
			name = "another channel meanwhile"
		}
		t.Run(name, func(t *testing.T) { synctest.Test(t, func(t *testing.T) { catchUpLeavesRoom(t, withOther) }) })
	}
}

// catchingUp is a client with a queue of size whose resuming subscription
// flushes 100 pending events (done once it is through), and another
// subscription that is live.
func catchingUp(t *testing.T, size int) (c *client, resuming, other *clientSub, done chan struct{}) {
	c = testClient(t, Config{QueueSize: size})
	srv, cli := net.Pipe() // a slow close sets a write deadline
	t.Cleanup(func() { cli.Close() })
	c.nc = srv
	resuming = &clientSub{c: c}
	other = &clientSub{c: c, ready: true}
	now := time.Now()
	for seq := uint64(1); seq <= 100; seq++ {
		c.deliver(resuming, liveEvent(seq), now)
	}
	done = make(chan struct{})
	go func() {
		defer close(done)
		c.flushPending(resuming)
	}()
	return c, resuming, other, done
}

func catchUpLeavesRoom(t *testing.T, withOther bool) {
	// 100 pending events go out in batches of what the queue takes: the
	// last batch fills it as far as a catch-up may.
	c, resuming, other, done := catchingUp(t, 20)
	now := time.Now()
	var otherSeq uint64
	for {
		// The flush waits for room (or is done): nothing drains the
		// queue until the other channel's live frame was offered.
		synctest.Wait()
		if withOther {
			otherSeq++
			if !c.deliver(other, liveEvent(otherSeq), now) || c.closing {
				t.Fatalf("a live event of another channel during the catch-up closed the client (%d %q) with %d queued", c.closeCode, c.closeReason, len(c.q))
			}
		}
		select {
		case <-done:
		default:
			c.drain()
			continue
		}
		break
	}
	if !resuming.ready {
		t.Fatal("the resuming subscription is not live")
	}
	if !c.deliver(resuming, liveEvent(101), now) || c.closing {
		t.Fatalf("the first live event after the seam closed the client (%d %q) with %d queued", c.closeCode, c.closeReason, len(c.q))
	}
}

// A client in the middle of a catch-up has the whole queue for live frames,
// as one that is not: only live frames count against QueueSize. Counted
// together with the catch-up's half queue, half as many live frames of its
// other channels between two writes closed a healthy client with 4008.
// QueueSize + 1 still closes it.
func TestCatchUpKeepsTheWholeQueueForLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 20
		c, _, other, done := catchingUp(t, size)
		now := time.Now()
		synctest.Wait() // the catch-up waits for room, nothing drains
		if n := len(c.q); n != c.catchUpRoom() {
			t.Fatalf("the catch-up queued %d frames, want %d", n, c.catchUpRoom())
		}
		for seq := uint64(1); seq <= size; seq++ {
			if !c.deliver(other, liveEvent(seq), now) || c.closing {
				t.Fatalf("live frame %d of %d beside a catch-up closed the client (%d %q)", seq, size, c.closeCode, c.closeReason)
			}
		}
		if c.deliver(other, liveEvent(size+1), now) || !c.closing || c.closeCode != CloseSlowClient {
			t.Fatalf("live frame %d over a queue of %d: closing %v code %d", size+1, size, c.closing, c.closeCode)
		}
		<-done
	})
}

// A ticks client that is behind is sent its newest conflateDepth ticks, in
// order, and every frame of its other channels, in order: the oldest unsent
// tick makes way, so what a starved client is sent is fresh.
func TestConflationKeepsTheNewestTicks(t *testing.T) {
	c := testClient(t, Config{QueueSize: 16})
	ticks := &clientSub{c: c, conflate: true, ready: true}
	candles := &clientSub{c: c, ready: true}
	now := time.Now()
	for seq := uint64(1); seq <= 10; seq++ {
		if !c.deliver(ticks, liveEvent(seq), now) {
			t.Fatalf("tick %d not queued", seq)
		}
		if seq%3 == 0 && !c.deliver(candles, liveEvent(100+seq), now) {
			t.Fatalf("candle %d not queued", 100+seq)
		}
	}
	var gotTicks, gotCandles []byte
	q := c.drain()
	for _, it := range q {
		if it.b[0] >= 100 {
			gotCandles = append(gotCandles, it.b[0])
		} else {
			gotTicks = append(gotTicks, it.b[0])
		}
	}
	if string(gotTicks) != string([]byte{7, 8, 9, 10}) || string(gotCandles) != string([]byte{103, 106, 109}) {
		t.Fatalf("queued ticks %v and candles %v, want [7 8 9 10] and [103 106 109]", gotTicks, gotCandles)
	}
	// The next ticks start afresh once the queue is taken.
	for seq := uint64(11); seq <= 12; seq++ {
		c.deliver(ticks, liveEvent(seq), now)
	}
	if q := c.drain(); len(q) != 2 || q[0].b[0] != 11 || q[1].b[0] != 12 {
		t.Fatalf("after a drain %d frames queued, want ticks 11 and 12", len(q))
	}
}

// A client behind on ticks for long holds conflateDepth of them, the newest.
func TestConflationBounded(t *testing.T) {
	c := testClient(t, Config{QueueSize: 16})
	ticks := &clientSub{c: c, conflate: true, ready: true}
	now := time.Now()
	for seq := uint64(1); seq <= 1000; seq++ {
		if !c.deliver(ticks, liveEvent(seq), now) {
			t.Fatalf("tick %d not queued", seq)
		}
	}
	var got []byte
	for _, it := range c.drain() {
		got = append(got, it.b[0])
	}
	if want := []byte{byte(997 % 256), byte(998 % 256), byte(999 % 256), byte(1000 % 256)}; string(got) != string(want) {
		t.Fatalf("queued %v, want %v", got, want)
	}
}
