package hub

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// subShards splits a channel's subscribers so that subscribing and
// unsubscribing contend with the fan-out on one shard, not on all ten
// thousand subscribers at once.
const subShards = 32

// A shard's subscribers are a slice, not a map: the fan-out walks every
// one for every event, and a slice is walked in order, without a map's
// bucket reads (a cache miss each at ten thousand subscribers).
type subShard struct {
	mu   sync.RWMutex
	subs []*clientSub
}

// topic is one channel: one ordered consumer shared by every subscriber,
// and its fan-out. The consumer's callback only hands each message to the
// fan-out goroutine, so the reader keeps up with the stream whatever the
// number of subscribers; the fan-out encodes each event once and queues it
// to every subscriber without blocking on any of them.
type topic struct {
	h  *Hub
	sp spec

	ready chan struct{} // closed once started (or failed: err)
	err   error
	refs  int // under h.mu

	cc   jetstream.ConsumeContext
	in   chan inbound
	stop chan struct{}

	// lastSeq is the newest sequence the fan-out has taken: a subscriber
	// that joins sees every later event live, and reads the rest from the
	// stream.
	lastSeq atomic.Uint64
	shards  [subShards]subShard
}

type inbound struct {
	seq  uint64
	data []byte
	// stored is when the stream stored the event, recv when the consumer
	// handed it over (unix nanoseconds, for the stage delays).
	stored, recv int64
}

func newTopic(h *Hub, sp spec) *topic {
	t := &topic{h: h, sp: sp, ready: make(chan struct{}), stop: make(chan struct{})}
	// A conflating channel keeps only a few unsent events: when the
	// fan-out is further behind, the oldest make way for the newest.
	n := h.cfg.MaxPending
	if sp.conflate {
		n = conflateDepth
	}
	t.in = make(chan inbound, n)
	return t
}

// start opens an ordered consumer right after the stream's current last
// sequence, so that what a new subscriber reads from the stream (up to
// lastSeq) and what the topic delivers live (after it) meet without a gap.
func (t *topic) start(ctx context.Context) error {
	h, sp := t.h, t.sp
	ctx, cancel := context.WithTimeout(ctx, h.cfg.IOTimeout)
	defer cancel()
	st, err := h.d.Source.Stream(ctx, sp.stream)
	if err != nil {
		return fmt.Errorf("hub: open stream %s: %w", sp.stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("hub: stream %s info: %w", sp.stream, err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{sp.filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    info.State.LastSeq + 1,
	})
	if err != nil {
		return fmt.Errorf("hub: consumer on %s: %w", sp.filter, err)
	}
	t.lastSeq.Store(info.State.LastSeq)
	go t.fanout()
	cc, err := cons.Consume(t.receive, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		h.log.Debug("channel consumer", "channel", sp.name, "err", err)
	}))
	if err != nil {
		close(t.stop)
		return fmt.Errorf("hub: consume %s: %w", sp.filter, err)
	}
	t.cc = cc
	return nil
}

func (t *topic) close() {
	if t.cc != nil {
		t.cc.Stop()
	}
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
}

// receive runs on the consumer's goroutine. A conflating channel never
// waits: a full inbox drops its oldest event. Any other channel waits for
// the fan-out, which never waits on a client, so the wait is short.
func (t *topic) receive(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	t.h.m.events.Inc()
	// The stage delays are measured on the wall clock whatever the hub's
	// clock: they are compared with the stream's store time.
	in := inbound{seq: meta.Sequence.Stream, data: msg.Data(), stored: meta.Timestamp.UnixNano(), recv: time.Now().UnixNano()}
	if !t.sp.conflate {
		select {
		case t.in <- in:
		case <-t.stop:
		}
		return
	}
	for {
		select {
		case t.in <- in:
			return
		default:
		}
		select {
		case <-t.in:
			t.h.m.conflated.Inc()
		default:
		}
	}
}

func (t *topic) fanout() {
	for {
		var in inbound
		select {
		case in = <-t.in:
		case <-t.stop:
			return
		}
		start := time.Now()
		m := &t.h.m
		if in.stored > 0 {
			m.stRead.Observe(float64(in.recv-in.stored) / 1e9)
		}
		m.stInbox.Observe(float64(start.UnixNano()-in.recv) / 1e9)
		t.dispatch(in, t.h.d.Now())
		m.stFanout.Observe(time.Since(start).Seconds())
	}
}

type event struct {
	seq   uint64
	frame []byte // the whole websocket frame, shared by every subscriber
	// owned: an alert, for its owner's eyes only (see streams.AlertVisible).
	owned bool
	owner string
}

func (t *topic) dispatch(in inbound, now time.Time) {
	ev := event{seq: in.seq, frame: wsFrame(opText, appendEvent(make([]byte, maxHeader, maxHeader+len(in.data)+len(t.sp.name)+64), t.sp.name, in.seq, false, in.data))}
	if t.sp.stream == streams.StreamAlerts {
		owner, err := streams.AlertOwner(in.data)
		if err != nil {
			owner = streams.AlertAudienceAdmins // unreadable: nobody's but the admins'
		}
		ev.owned, ev.owner = true, owner
	}
	t.lastSeq.Store(in.seq)
	t.h.fanoutStart()
	defer t.h.fanoutDone()
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, cs := range sh.subs {
			if cs.c.deliver(cs, ev, now) {
				n++
			}
		}
		sh.mu.RUnlock()
	}
	t.h.m.delivered.Add(float64(n))
}

// join adds a subscription and returns the newest sequence the fan-out had
// taken: everything after it reaches cs live. The order matters: cs is in
// its shard before lastSeq is read, and the fan-out stores lastSeq before
// it walks the shards, so an event is either at most the returned sequence
// or delivered to cs (both, at worst; cs drops the duplicate).
func (t *topic) join(cs *clientSub) uint64 {
	sh := &t.shards[cs.c.id%subShards]
	sh.mu.Lock()
	sh.subs = append(sh.subs, cs)
	cs.spos = len(sh.subs)
	sh.mu.Unlock()
	return t.lastSeq.Load()
}

func (t *topic) leave(cs *clientSub) {
	sh := &t.shards[cs.c.id%subShards]
	sh.mu.Lock()
	if i := cs.spos - 1; i >= 0 {
		last := len(sh.subs) - 1
		sh.subs[i] = sh.subs[last]
		sh.subs[i].spos = i + 1
		sh.subs[last] = nil
		sh.subs = sh.subs[:last]
		cs.spos = 0
	}
	sh.mu.Unlock()
}
