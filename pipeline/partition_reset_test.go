package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/natstest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// losing stands between a partition's runner and its consumer and, once
// armed, loses every delivery that carries the pin of the moment: what a
// consumer leader lost with its node had delivered and the runner never
// got.
type losing struct {
	pipeline.JetStream
	mu   sync.Mutex
	arm  bool
	pin  string // the pin whose deliveries are lost, once armed
	last string // the pin of the last delivery
	lost int
}

func (d *losing) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c, err := d.JetStream.Consumer(ctx, stream, name)
	if err != nil {
		return nil, err
	}
	return &losingConsumer{Consumer: c, d: d}, nil
}

func (d *losing) lose() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.arm, d.pin = true, d.last
}

func (d *losing) lostCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lost
}

type losingConsumer struct {
	jetstream.Consumer
	d *losing
}

func (c *losingConsumer) Consume(h jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	return c.Consumer.Consume(func(m jetstream.Msg) {
		pin := m.Headers().Get("Nats-Pin-Id")
		c.d.mu.Lock()
		if c.d.arm && pin == c.d.pin {
			c.d.lost++
			c.d.mu.Unlock()
			return
		}
		c.d.last = pin
		c.d.mu.Unlock()
		h(m)
	}, opts...)
}

// partitionConsumer makes a partition's consumer before any instance does,
// with an AckWait no test outlasts: an input in flight comes back through
// a reset to the ack floor, or never.
func partitionConsumer(t *testing.T, js jetstream.JetStream, part string) string {
	t.Helper()
	spec := sumPartitions.Consumer(part)
	spec.Config.AckWait = time.Hour
	if _, err := js.CreateConsumer(t.Context(), "IN", spec.Config); err != nil {
		t.Fatal(err)
	}
	return spec.Config.Durable
}

func waitOutputs(t *testing.T, js jetstream.JetStream, n uint64) {
	t.Helper()
	natstest.WaitProgress(t, 30*time.Second, fmt.Sprintf("%d outputs", n), func() (bool, string) {
		c := count(t, js, "OUT")
		return c >= n, strconv.FormatUint(c, 10)
	})
}

// TestPartitionResetsWhenItsPinMoves: the owner of a partition keeps its
// lease while the consumer's pin moves to it again (after a node loss, the
// consumer's new leader pins its next pull), and what the old leader had
// delivered never reached it. Those inputs are in flight for the server
// and held by nobody; the runner waits for them before it goes on, so as
// not to step out of order. Without a reset to the ack floor they come
// back after AckWait (30 s in TestClusterFailover; never here), with one
// they come back at once, and every output is stored in order.
func TestPartitionResetsWhenItsPinMoves(t *testing.T) {
	s, js := setup(t)
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	const key, part = "1m.AAA-USD", "AAA-USD"
	cons := partitionConsumer(t, js, part)
	inputs(t, js, []string{key}, 0, 20)
	d := &losing{}
	l := &ledger{}
	runPartitionedWith(t, s, "a", l, partOpts{js: func(j pipeline.JetStream) pipeline.JetStream { d.JetStream = j; return d }})
	waitOutputs(t, js, 20)

	d.lose()
	inputs(t, js, []string{key}, 20, 10)
	natstest.WaitProgress(t, 30*time.Second, "deliveries lost", func() (bool, string) {
		return d.lostCount() == 10, strconv.Itoa(d.lostCount())
	})
	// The pin moves: the runner's next pull is pinned afresh.
	if err := streams.Unpin(ctx, js, "IN", cons); err != nil {
		t.Fatal(err)
	}
	inputs(t, js, []string{key}, 30, 10)
	waitOutputs(t, js, 40)
	check(t, outputs(t, js), want([]string{key}, 40, nil))
	checkOneOwner(t, l, []string{part})
}

// TestPartitionStartsOnlyAfterItsReset: a partition's new owner rewinds the
// consumer to its ack floor before its runner starts, so that a dead
// owner's inputs come again at once. A reset the server does not answer in
// time may still be applied later, while the runner waits for the dead
// owner's inputs, holding newer ones: the server then counts nothing in
// flight, and the runner would step the newer inputs first and lose the
// dead owner's (their redelivery covered). So the runner must not start
// on a reset that was not answered: the lease goes back and is taken
// again. Here the first reset of each consumer fails and is applied late,
// just before the second; no step of a partition may come before its
// first answered reset, and every output is stored once, in order.
func TestPartitionStartsOnlyAfterItsReset(t *testing.T) {
	s, js := setup(t)
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"1m.AAA-USD", "1m.BBB-USD"}
	parts := []string{"AAA-USD", "BBB-USD"}
	for _, p := range parts {
		partitionConsumer(t, js, p)
	}
	inputs(t, js, keys, 0, 40)
	l := &ledger{}
	var mu sync.Mutex
	failed := map[string]bool{}
	answered := map[string]time.Time{}
	runPartitionedWith(t, s, "a", l, partOpts{hook: func(r *pipeline.Runner) {
		pipeline.SetResetConsumer(r, func(ctx context.Context, stream, consumer string, reset func(context.Context, string, string) (uint64, error)) (uint64, error) {
			mu.Lock()
			defer mu.Unlock()
			if !failed[consumer] {
				failed[consumer] = true
				return 0, fmt.Errorf("test: reset of %s: %w", consumer, context.DeadlineExceeded)
			}
			// The late one lands, then this one.
			if _, err := reset(ctx, stream, consumer); err != nil {
				return 0, err
			}
			seq, err := reset(ctx, stream, consumer)
			if err != nil {
				return 0, err
			}
			if answered[consumer].IsZero() {
				answered[consumer] = time.Now()
			}
			return seq, nil
		})
	}})
	waitOutputs(t, js, 40)
	got := outputs(t, js)
	all := want(keys, 40, nil)
	for _, k := range keys {
		check(t, filterKey(got, k), filterKey(all, k))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	for _, e := range l.events {
		if e.kind != "step" {
			continue
		}
		at := answered[sumPartitions.Consumer(e.partition).Config.Durable]
		if at.IsZero() || e.at.Before(at) {
			t.Fatalf("partition %s: seq %d stepped before its consumer's reset was answered", e.partition, e.seq)
		}
	}
}

// stuck is a stage whose steps of one partition hang, once armed, until
// freed.
type stuck struct {
	*recorder
	part  string
	armed atomic.Bool
	in    chan struct{} // a step is stuck
	free  chan struct{}
}

func (s *stuck) Step(ctx context.Context, m pipeline.Msg) ([]streams.Event, error) {
	if s.armed.Load() && partitionOf(m.Subject) == s.part {
		select {
		case s.in <- struct{}{}:
		default:
		}
		<-s.free
	}
	return s.recorder.Step(ctx, m)
}

// TestPartitionRoundNotHeldByAStuckPartition: one partition's step hangs
// (a stuck stage, or a publish waiting out its PubAck) and its lease is
// then lost. The round that renews every lease of the instance must go on
// renewing the others meanwhile: a round that waits for the partition's
// fence to shut, or for its runner to drain, leaves the other leases
// unrenewed, and each of them expires in turn.
func TestPartitionRoundNotHeldByAStuckPartition(t *testing.T) {
	s, js := setup(t)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"1m.AAA-USD", "1m.BBB-USD"}
	parts := []string{"AAA-USD", "BBB-USD"}
	inputs(t, js, keys, 0, 20)
	l := &ledger{}
	st := &stuck{part: "AAA-USD", in: make(chan struct{}, 1), free: make(chan struct{})}
	a := runPartitionedWith(t, s, "a", l, partOpts{ttl: time.Second, rec: func(r *recorder) pipeline.Stage {
		st.recorder = r
		return st
	}})
	waitOutputs(t, js, 20)
	natstest.WaitProgress(t, 30*time.Second, "a owns both partitions", func() (bool, string) {
		return l.ownedBy("a", parts) == 2, strconv.Itoa(l.ownedBy("a", parts))
	})

	st.armed.Store(true)
	inputs(t, js, keys[:1], 20, 1)
	<-st.in
	defer close(st.free)
	// The stuck partition's lease is lost (taken, or deleted by hand).
	if err := kv.Delete(ctx, "sum.owner.AAA-USD"); err != nil {
		t.Fatal(err)
	}
	rev := func() uint64 {
		e, err := kv.Get(ctx, "sum.owner.BBB-USD")
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return 0
			}
			t.Fatal(err)
		}
		return e.Revision()
	}
	// Ten renewals of the other lease while the partition is stuck: at
	// a TTL of 1 s, twice what its fence lasts on one renewal.
	from := rev()
	natstest.WaitProgress(t, 30*time.Second, "the other lease renewed", func() (bool, string) {
		r := rev()
		return r >= from+10, strconv.FormatUint(r, 10)
	})
	if !l.owners("BBB-USD")["a"] {
		t.Fatal("a gave up BBB-USD while AAA-USD was stuck")
	}
	if got := counterSum(t, a.reg, "cryptostream_pipeline_lease_expiries_total"); got != 0 {
		t.Fatalf("%v leases expired while one partition was stuck", got)
	}
}

// TestPartitionStuckStageLetsGo: a stage hangs in a step of one partition
// while its instance is alive and renews its leases. It must let the
// partition go (its lease no longer renewed once the step has run past a
// bound, its inputs no longer kept alive once its fence has expired), so
// that another instance takes it over and every output is stored, in
// order. Kept renewing, the partition stalls for good.
func TestPartitionStuckStageLetsGo(t *testing.T) {
	old := pipeline.SetStuckStep(time.Second)
	t.Cleanup(func() { pipeline.SetStuckStep(old) })
	s, js := setup(t)
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	const key, part = "1m.AAA-USD", "AAA-USD"
	inputs(t, js, []string{key}, 0, 20)
	l := &ledger{}
	st := &stuck{part: part, in: make(chan struct{}, 1), free: make(chan struct{})}
	runPartitionedWith(t, s, "a", l, partOpts{ttl: time.Second, rec: func(r *recorder) pipeline.Stage {
		st.recorder = r
		return st
	}})
	waitOutputs(t, js, 20)
	st.armed.Store(true)
	inputs(t, js, []string{key}, 20, 1)
	<-st.in
	defer close(st.free)

	runPartitionedWith(t, s, "b", l, partOpts{ttl: time.Second})
	inputs(t, js, []string{key}, 21, 9)
	natstest.WaitProgress(t, 90*time.Second, "b takes the stuck partition over", func() (bool, string) {
		return l.everOwned("b", []string{part}) == 1, fmt.Sprint(l.owners(part))
	})
	natstest.WaitProgress(t, 90*time.Second, "30 outputs", func() (bool, string) {
		c := count(t, js, "OUT")
		return c >= 30, strconv.FormatUint(c, 10)
	})
	check(t, outputs(t, js), want([]string{key}, 30, nil))
}

// TestPartitionTakeoverNotHeldByAnother: the reset of one partition's
// consumer does not come back (under load a call's answer, or its
// timeout, came seconds late). The instance must still take and run its
// other partition: a round that made each partition ready in turn waited
// on the hanging one, and every takeover after it waited too (in
// TestClusterFailover, a takeover a round late: detect 9.8 s).
func TestPartitionTakeoverNotHeldByAnother(t *testing.T) {
	s, js := setup(t)
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"1m.AAA-USD", "1m.BBB-USD"}
	hanging := partitionConsumer(t, js, "AAA-USD")
	free := make(chan struct{})
	defer close(free)
	partitionConsumer(t, js, "BBB-USD")
	// Both partitions stored before the instance starts, so that it
	// finds them in one round, the hanging one first.
	inputs(t, js, keys, 0, 40)
	l := &ledger{}
	runPartitionedWith(t, s, "a", l, partOpts{ttl: time.Second, hook: func(r *pipeline.Runner) {
		pipeline.SetResetConsumer(r, func(ctx context.Context, stream, consumer string, reset func(context.Context, string, string) (uint64, error)) (uint64, error) {
			if consumer == hanging {
				<-free
				return 0, errors.New("test: reset not answered")
			}
			return reset(ctx, stream, consumer)
		})
	}})
	waitOutputs(t, js, 20)
	check(t, filterKey(outputs(t, js), keys[1]), filterKey(want(keys, 40, nil), keys[1]))
}
