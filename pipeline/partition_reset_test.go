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

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/natstest"
	"cryptostream/ops/opstest"
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
	// seen, when set, is told of each delivery passed on.
	seen func(jetstream.Msg)
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
		seen := c.d.seen
		c.d.mu.Unlock()
		h(m)
		if seen != nil {
			seen(m)
		}
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

// pinMoveStart makes the leases bucket and AAA-USD's consumer, and
// stores the first 20 inputs; it returns the consumer's name.
func pinMoveStart(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	if _, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	cons := partitionConsumer(t, js, "AAA-USD")
	inputs(t, js, []string{"1m.AAA-USD"}, 0, 20)
	return cons
}

// movePin loses the deliveries of inputs 20-29, then moves the pin and
// stores inputs 30-39.
func movePin(t *testing.T, js jetstream.JetStream, d *losing, cons string) {
	t.Helper()
	keys := []string{"1m.AAA-USD"}
	d.lose()
	inputs(t, js, keys, 20, 10)
	natstest.WaitProgress(t, 30*time.Second, "deliveries lost", func() (bool, string) {
		return d.lostCount() == 10, strconv.Itoa(d.lostCount())
	})
	// The pin moves: the runner's next pull is pinned afresh.
	if err := streams.Unpin(t.Context(), js, "IN", cons); err != nil {
		t.Fatal(err)
	}
	inputs(t, js, keys, 30, 10)
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
	const key, part = "1m.AAA-USD", "AAA-USD"
	cons := pinMoveStart(t, js)
	d := &losing{}
	l := &ledger{}
	runPartitionedWith(t, s, "a", l, partOpts{js: func(j pipeline.JetStream) pipeline.JetStream { d.JetStream = j; return d }})
	waitOutputs(t, js, 20)

	movePin(t, js, d, cons)
	waitOutputs(t, js, 40)
	check(t, outputs(t, js), want([]string{key}, 40, nil))
	checkOneOwner(t, l, []string{part})
}

// TestPartitionTakeoverKeepsWhatCameAfterItsAnswer: as in
// TestPartitionResetsWhenItsPinMoves, the pin moves and the runner resets
// its consumer; then an input is delivered after the server answered what
// it has in flight, and before the takeover goes on. That input is a
// delivery after the reset, not a copy from before it: it must be stepped,
// not dropped as one (with an AckWait of an hour it would never come
// again, and the partition would stop one output short, as the flake of
// this test's sibling did under load).
func TestPartitionTakeoverKeepsWhatCameAfterItsAnswer(t *testing.T) {
	s, js := setup(t)
	const key, part = "1m.AAA-USD", "AAA-USD"
	cons := pinMoveStart(t, js)
	const late = 41 // the stream sequence of the input delivered late
	arrived := make(chan struct{})
	var once sync.Once
	// The consumer sequence of the last delivery handed on.
	var lastDelivered atomic.Uint64
	d := &losing{seen: func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		lastDelivered.Store(md.Sequence.Consumer)
		if md.Sequence.Stream == late {
			once.Do(func() { close(arrived) })
		}
	}}
	var ready atomic.Bool
	var armed, reset, tricked atomic.Bool
	l := &ledger{}
	runPartitionedWith(t, s, "a", l, partOpts{
		js: func(j pipeline.JetStream) pipeline.JetStream { d.JetStream = j; return d },
		hook: func(r *pipeline.Runner) {
			pipeline.SetResetConsumer(r, func(ctx context.Context, stream, consumer string, do func(context.Context, string, string) (uint64, error)) (uint64, error) {
				seq, err := do(ctx, stream, consumer)
				if err == nil && armed.Load() {
					reset.Store(true)
				}
				return seq, err
			})
			pipeline.SetConsumerInfo(r, func(ctx context.Context, c jetstream.Consumer) (*jetstream.ConsumerInfo, error) {
				if !reset.Load() || tricked.Load() {
					return c.Info(ctx)
				}
				if !ready.Load() {
					// Once the server has redelivered everything and
					// the runner has it all, this answer fails, so
					// that the takeover counts once more: then it
					// holds everything in flight, and goes on with
					// the next answer.
					for {
						info, err := c.Info(ctx)
						if err != nil {
							return nil, err
						}
						if info.Delivered.Stream == late-1 && info.NumAckPending == late-21 && lastDelivered.Load() >= info.Delivered.Consumer {
							break
						}
						select {
						case <-ctx.Done():
							return nil, ctx.Err()
						case <-time.After(10 * time.Millisecond):
						}
					}
					ready.Store(true)
					return nil, errors.New("test: ask again")
				}
				// The takeover counted every redelivery: it goes on
				// with this answer.
				info, err := c.Info(ctx)
				if err != nil || tricked.Swap(true) {
					return info, err
				}
				// Answered; now one more input comes, before the
				// takeover reads the answer.
				if _, err := js.Publish(ctx, "in."+key, []byte(strconv.Itoa(late-1))); err != nil {
					return nil, err
				}
				select {
				case <-arrived:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return info, nil
			})
		},
	})
	waitOutputs(t, js, 20)

	armed.Store(true)
	movePin(t, js, d, cons)
	natstest.WaitProgress(t, 30*time.Second, "the late input delivered", func() (bool, string) {
		select {
		case <-arrived:
			return true, "delivered"
		default:
			return false, fmt.Sprintf("tricked %v", tricked.Load())
		}
	})
	waitOutputs(t, js, late)
	check(t, outputs(t, js), want([]string{key}, late, nil))
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
	checkPerKey(t, js, keys, 40)
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

// TestPartitionRetakenByItsOwnerKeepsItsState: an instance's lease calls
// stall (its bucket's leader lost, or a loaded machine) until every fence
// shuts, and nobody else claims the partitions meanwhile. When the bucket
// answers again the instance takes them again on the revisions it wrote
// last, which proves nobody held them in between: it goes on from the
// state it had, with no second warm-up, and every output is stored once,
// in order.
func TestPartitionRetakenByItsOwnerKeepsItsState(t *testing.T) {
	keys := []string{"1m.AAA-USD", "1m.BBB-USD"}
	_, js, a, stalled, _ := stalledOwner(t, keys)
	metric := func(name string) float64 { return opstest.Value(t, a.reg, name, nil) }
	stalled.cut.Store(true)
	natstest.WaitProgress(t, time.Minute, "every lease expired", func() (bool, string) {
		n := metric("cryptostream_pipeline_lease_expiries_total")
		return n >= float64(len(keys)), fmt.Sprint(n)
	})
	inputs(t, js, keys, 40, 20)
	stalled.cut.Store(false)
	waitOutputs(t, js, 60)
	checkPerKey(t, js, keys, 60)
	if n := metric("cryptostream_pipeline_partition_state_kept_total"); n < float64(len(keys)) {
		t.Errorf("%v partitions taken again with their state, want %d", n, len(keys))
	}
	if n := metric("cryptostream_pipeline_warmups_total"); n != float64(len(keys)) {
		t.Errorf("%v warm-ups, want %d: a partition nobody held in between was warmed again", n, len(keys))
	}
}

// TestPartitionRetakenAfterAnotherHeldItWarms: as above, but while the
// instance's bucket stalls another instance takes its partitions over and
// steps inputs; then the first takes its share back. What it held before
// is stale: it must warm again, and every output is stored once, in order,
// with the sums of an uninterrupted run.
func TestPartitionRetakenAfterAnotherHeldItWarms(t *testing.T) {
	keys := []string{"1m.AAA-USD", "1m.BBB-USD", "1m.CCC-USD", "1m.DDD-USD"}
	s, js, a, stalled, l := stalledOwner(t, keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, partitionOf("in."+k))
	}
	stalled.cut.Store(true)
	runPartitioned(t, s, "b", l, nil)
	ownedBy := func(name string) int { return l.ownedBy(name, parts) }
	natstest.WaitProgress(t, time.Minute, "b takes a's partitions over", func() (bool, string) {
		return ownedBy("b") == len(parts), strconv.Itoa(ownedBy("b"))
	})
	inputs(t, js, keys, 40, 40)
	waitOutputs(t, js, 80)
	stalled.cut.Store(false)
	natstest.WaitProgress(t, time.Minute, "a takes its share back", func() (bool, string) {
		return ownedBy("a") == len(parts)/2, strconv.Itoa(ownedBy("a"))
	})
	inputs(t, js, keys, 80, 40)
	waitOutputs(t, js, 120)
	checkPerKey(t, js, keys, 120)
	checkOneOwner(t, l, parts)
	if n := opstest.Value(t, a.reg, "cryptostream_pipeline_partition_state_kept_total", nil); n != 0 {
		t.Errorf("%v partitions taken back with a state another owner had moved past", n)
	}
}

// checkPerKey says that every key's outputs of n inputs are stored once,
// in order.
func checkPerKey(t *testing.T, js jetstream.JetStream, keys []string, n int) {
	t.Helper()
	got, all := outputs(t, js), want(keys, n, nil)
	for _, k := range keys {
		check(t, filterKey(got, k), filterKey(all, k))
	}
}

// stalledOwner starts instance a, whose leases bucket can be cut off, on
// the partitions of keys, and waits for the outputs of their first 40
// inputs.
func stalledOwner(t *testing.T, keys []string) (*server.Server, jetstream.JetStream, *partInstance, *stalledLeases, *ledger) {
	t.Helper()
	s, js := setup(t)
	if _, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		partitionConsumer(t, js, partitionOf("in."+k))
	}
	inputs(t, js, keys, 0, 40)
	l := &ledger{}
	stalled := &stalledLeases{}
	a := runPartitioned(t, s, "a", l, func(kv pipeline.Leases) pipeline.Leases {
		stalled.Leases = kv
		return stalled
	})
	waitOutputs(t, js, 40)
	return s, js, a, stalled, l
}

// keyStalled is a leases bucket whose renewals of one key hang, once
// armed, until their context ends: that key's stream, or the request to
// it, is stuck while the others answer.
type keyStalled struct {
	pipeline.Leases
	key   string
	armed atomic.Bool
	hung  atomic.Int32
}

func (k *keyStalled) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if k.armed.Load() && key == k.key {
		k.hung.Add(1)
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return k.Leases.Update(ctx, key, value, rev)
}

// TestPartitionRenewalsNotHeldByOneStalled: one partition's renewals hang
// until its fence shuts; it expires, as it must. The instance's other
// leases are renewed meanwhile and none of them expires: renewed one
// after the other, every renewal behind the stalled one waited until its
// own deadline had passed too.
func TestPartitionRenewalsNotHeldByOneStalled(t *testing.T) {
	keys := []string{"1m.AAA-USD", "1m.BBB-USD", "1m.CCC-USD", "1m.DDD-USD", "1m.EEE-USD", "1m.FFF-USD"}
	s, js := setup(t)
	if _, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, k := range keys {
		parts = append(parts, partitionOf("in."+k))
		partitionConsumer(t, js, parts[len(parts)-1])
	}
	inputs(t, js, keys, 0, 40)
	l := &ledger{}
	stalled := &keyStalled{key: "sum.owner.AAA-USD"}
	a := runPartitioned(t, s, "a", l, func(kv pipeline.Leases) pipeline.Leases {
		stalled.Leases = kv
		return stalled
	})
	waitOutputs(t, js, 40)
	// Twice: AAA-USD's renewal hangs until its fence shuts, then it is
	// taken again.
	for i := 1; i <= 2; i++ {
		stalled.armed.Store(true)
		natstest.WaitProgress(t, time.Minute, "AAA-USD's lease expired", func() (bool, string) {
			n := opstest.Value(t, a.reg, "cryptostream_pipeline_lease_expiries_total", nil)
			return n >= float64(i), fmt.Sprintf("%v expiries, %d calls hung", n, stalled.hung.Load())
		})
		stalled.armed.Store(false)
		natstest.WaitProgress(t, time.Minute, "AAA-USD taken again", func() (bool, string) {
			return l.ownedBy("a", parts) == len(parts), strconv.Itoa(l.ownedBy("a", parts))
		})
	}
	inputs(t, js, keys, 40, 40)
	waitOutputs(t, js, 80)
	checkPerKey(t, js, keys, 80)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.kind == "release" && e.partition != "AAA-USD" {
			t.Errorf("partition %s given up while only AAA-USD's renewals hung", e.partition)
		}
	}
}
