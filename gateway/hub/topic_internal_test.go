package hub

import (
	"testing"
	"time"
)

// BenchmarkDispatch is one event's fan-out to 10,000 subscribers of a
// ticks channel, each with a flusher (the gateway's case), their queues
// taken between events as a round would.
func BenchmarkDispatch(b *testing.B) {
	const n = 10_000
	h := testClient(b, Config{WriteDelay: time.Hour}).h
	tp := newTopic(h, spec{name: "ticks:BTC-USD", conflate: true})
	clients := make([]*client, n)
	for i := range clients {
		c := &client{h: h, id: uint64(i + 1), wake: make(chan struct{}, 1), done: make(chan struct{})}
		c.fl = h.flushers[c.id%uint64(len(h.flushers))]
		cs := &clientSub{c: c, t: tp, conflate: true, ready: true}
		tp.join(cs)
		clients[i] = c
	}
	data := []byte(`{"symbol":"BTC/USD","interval":"1m","open":1,"high":2,"low":0.5,"close":1.5,"volume":10,"trades":3}`)
	b.ResetTimer()
	for i := range b.N {
		tp.dispatch(inbound{seq: uint64(i + 1), data: data}, time.Now())
		b.StopTimer()
		for _, f := range h.flushers {
			f.mu.Lock()
			for _, c := range f.dirty {
				c.qmu.Lock()
				c.listed = false
				for _, it := range c.q {
					if it.sub != nil {
						it.sub.nq = 0
					}
				}
				c.q = c.q[:0]
				c.qmu.Unlock()
			}
			f.dirty = f.dirty[:0]
			f.mu.Unlock()
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/subscriber")
}

// Subscribers that leave, in any order, stop getting events; the others
// keep getting every one.
func TestTopicJoinLeave(t *testing.T) {
	h := testClient(t, Config{QueueSize: 1000}).h
	tp := newTopic(h, spec{name: "candles:BTC-USD:1m"})
	subs := make([]*clientSub, 200)
	for i := range subs {
		c := &client{h: h, id: uint64(i % 40), wake: make(chan struct{}, 1), done: make(chan struct{})}
		subs[i] = &clientSub{c: c, t: tp, ready: true}
		tp.join(subs[i])
	}
	left := map[int]bool{}
	// 192 is the last of shard 0 when 0 leaves: it moves into 0's place.
	for _, i := range []int{0, 192, 199, 57, 58, 120, 3, 40, 80} {
		tp.leave(subs[i])
		tp.leave(subs[i]) // a second leave is a no-op
		left[i] = true
	}
	tp.dispatch(inbound{seq: 1, data: []byte(`{}`)}, time.Now())
	for i, cs := range subs {
		cs.c.qmu.Lock()
		n := len(cs.c.q)
		cs.c.qmu.Unlock()
		if want := map[bool]int{true: 0, false: 1}[left[i]]; n != want {
			t.Fatalf("subscriber %d (left %v) got %d events, want %d", i, left[i], n, want)
		}
	}
}
