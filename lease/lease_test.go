package lease_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/lease"
	"cryptostream/natstest"
)

// stalled is a leases bucket that can be cut off: from then on every
// write hangs until its context ends, as a request does to a bucket whose
// stream leader was lost. The watch keeps its view.
type stalled struct {
	jetstream.KeyValue
	cut atomic.Bool
}

func (s *stalled) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if s.cut.Load() {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return s.KeyValue.Create(ctx, key, value, opts...)
}

func (s *stalled) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if s.cut.Load() {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return s.KeyValue.Update(ctx, key, value, rev)
}

func (s *stalled) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if s.cut.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.KeyValue.Delete(ctx, key, opts...)
}

// journal is what both instances did, in the order it happened.
type journal struct {
	mu     sync.Mutex
	events []string
}

func (j *journal) add(e string) {
	j.mu.Lock()
	j.events = append(j.events, e)
	j.mu.Unlock()
}

func (j *journal) has(e string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Contains(j.events, e)
}

// TestStalledHolderStopsBeforeTakeover: the active instance's lease calls
// stall, so no renewal fails back to it for as long as the call lasts. The
// standby takes over once it has seen no renewal for the TTL; the stalled
// holder's work must have ended before, on its own deadline.
func TestStalledHolderStopsBeforeTakeover(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leases", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 3 * time.Second
	j := &journal{}
	work := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			j.add(name + " works")
			<-ctx.Done()
			j.add(name + " stopped")
			return nil
		}
	}
	run := func(name string, st lease.Store) chan error {
		done := make(chan error, 1)
		rctx, cancel := context.WithCancel(ctx)
		go func() { done <- lease.Run(rctx, st, lease.Config{Key: "test.active", ID: name, TTL: ttl}, work(name)) }()
		t.Cleanup(func() {
			cancel()
			<-done
		})
		return done
	}
	a := &stalled{KeyValue: kv}
	run("a", a)
	natstest.WaitFor(t, time.Minute, "a active", func() bool { return j.has("a works") })
	run("b", kv)
	a.cut.Store(true)
	t.Cleanup(func() { a.cut.Store(false) })
	natstest.WaitFor(t, time.Minute, "b takes over", func() bool { return j.has("b works") })
	j.mu.Lock()
	events := slices.Clone(j.events)
	j.mu.Unlock()
	stopped, took := slices.Index(events, "a stopped"), slices.Index(events, "b works")
	if stopped < 0 || stopped > took {
		t.Fatalf("b started working while a still worked: %v", events)
	}
}
