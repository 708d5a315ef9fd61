package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// Fencing.
//
// A lease is the owner's only while another instance would not take it
// over, and another instance takes it over once it has seen no renewal
// for LeaseTTL. The owner cannot know whether a renewal that has not come
// back reached the bucket, and a stalled bucket (its stream leader on a
// lost node) stalls the renewal itself. So the owner counts on the last
// renewal it knows reached the bucket: from the moment it sent it, the
// lease is safe for LeaseTTL, since nobody can have seen it any earlier.
// It steps and publishes a partition's inputs only until that moment
// plus LeaseTTL less a margin (the publish's way to the server, a pause
// of the process), whatever the bucket says, and gives the partition up
// when the deadline passes. A renewal that comes back moves the deadline.

// ErrLeaseExpired refuses a step or a publish of a partition whose lease
// may have been taken over.
var ErrLeaseExpired = errors.New("pipeline: partition lease may have expired")

// leaseMargin is how long before a lease can first be taken over that its
// owner stops publishing: one renewal period, far above a publish's way
// to the server.
func leaseMargin(ttl time.Duration) time.Duration { return ttl / 5 }

// fence is one owned partition's right to step and publish.
type fence struct {
	now func() time.Time
	// mu is held shared over each step and publish, and exclusively to
	// close the fence, so that nothing is stepped or sent once close has
	// returned.
	mu sync.RWMutex
	// deadline (Unix nanoseconds) and closed are read without mu, so that
	// a renewal moves the deadline, and the round reads what is left,
	// while a step or a publish is under way: a renewal that waited for
	// mu waited for a publish's PubAck (up to PublishTimeout, 5 s) and
	// held up the round that renews every other lease.
	deadline atomic.Int64
	closed   atomic.Bool
}

func newFence(now func() time.Time, deadline time.Time) *fence {
	f := &fence{now: now}
	f.deadline.Store(deadline.UnixNano())
	return f
}

// enter takes the right to step or publish; leave gives it back.
func (f *fence) enter() bool {
	f.mu.RLock()
	if f.closed.Load() || f.now().UnixNano() >= f.deadline.Load() {
		f.mu.RUnlock()
		return false
	}
	return true
}

func (f *fence) leave() { f.mu.RUnlock() }

// extend moves the deadline after a renewal that reached the bucket. A
// closed fence stays closed, whatever its deadline says.
func (f *fence) extend(deadline time.Time) {
	d := deadline.UnixNano()
	for {
		cur := f.deadline.Load()
		if d <= cur || f.deadline.CompareAndSwap(cur, d) {
			return
		}
	}
}

// left is how long the fence stays open, from now.
func (f *fence) left() time.Duration {
	if f.closed.Load() {
		return 0
	}
	return time.Duration(f.deadline.Load() - f.now().UnixNano())
}

// close shuts the fence, once no step or publish is under way. It says
// whether it was open, so that only the first closer reports the
// partition given up.
func (f *fence) close() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.closed.Swap(true)
}

// fencedStage is a partition's view of its instance's stage: a step is
// refused once the fence is shut.
type fencedStage struct {
	Stage
	f *fence
}

func (s fencedStage) Step(ctx context.Context, m Msg) ([]streams.Event, error) {
	if !s.f.enter() {
		return nil, ErrLeaseExpired
	}
	defer s.f.leave()
	return s.Stage.Step(ctx, m)
}

// fencedJS is a partition's bus: a publish is refused once the fence is
// shut. An asynchronous publish is checked when it is handed to the
// connection, which writes it at once: one the server stores after the
// deadline left the owner within the margin.
type fencedJS struct {
	JetStream
	f *fence
}

func (j fencedJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if !j.f.enter() {
		return nil, ErrLeaseExpired
	}
	defer j.f.leave()
	return j.JetStream.PublishMsgAsync(m, opts...)
}

func (j fencedJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if !j.f.enter() {
		return nil, ErrLeaseExpired
	}
	defer j.f.leave()
	return j.JetStream.PublishMsg(ctx, m, opts...)
}
