package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// sumPartitions declares the test stage partitioned by symbol: inputs on
// in.<interval>.<SYMBOL-TOKEN>, one consumer per symbol with a long
// AckWait, so that a lost owner's inputs come back only through the new
// owner's reset, never by a redelivery timer.
var sumPartitions = streams.Partitioned{
	Stage: "sum", Stream: "IN", Root: "in",
	Config: jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxDeliver: -1,
		MaxAckPending: batch, PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{streams.PriorityGroup}, PinnedTTL: time.Minute,
	},
	Outputs: []string{"OUT"},
}

// ledger records, from every instance, when each took and gave up each
// partition and each step it made, to check that a partition had one owner
// at a time.
type ledger struct {
	mu     sync.Mutex
	events []ledgerEvent
}

type ledgerEvent struct {
	at        time.Time
	instance  string
	partition string
	kind      string // "own", "release", "step"
	seq       uint64
}

func (l *ledger) add(instance, partition, kind string, seq uint64) {
	l.mu.Lock()
	l.events = append(l.events, ledgerEvent{time.Now(), instance, partition, kind, seq})
	l.mu.Unlock()
}

// ownedBy is how many of parts instance owns now.
func (l *ledger) ownedBy(instance string, parts []string) int {
	k := 0
	for _, p := range parts {
		if l.owners(p)[instance] {
			k++
		}
	}
	return k
}

// everOwned is how many of parts instance owned at some time.
func (l *ledger) everOwned(instance string, parts []string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := 0
	for _, p := range parts {
		for _, e := range l.events {
			if e.partition == p && e.instance == instance && e.kind == "own" {
				k++
				break
			}
		}
	}
	return k
}

func (l *ledger) owners(partition string) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	own := map[string]bool{}
	for _, e := range l.events {
		if e.partition != partition {
			continue
		}
		switch e.kind {
		case "own":
			own[e.instance] = true
		case "release":
			delete(own, e.instance)
		}
	}
	return own
}

// recorder is one instance's stage: the summer, with every step written
// to the ledger, refusing to step once its instance is killed (a crashed
// process steps nothing).
type recorder struct {
	*summer
	name string
	l    *ledger
	// mu orders a kill against a step: a step is recorded before the
	// kill's releases, or refused.
	mu     sync.Mutex
	killed bool
}

func (r *recorder) Step(ctx context.Context, m pipeline.Msg) ([]streams.Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.killed {
		return nil, errors.New("recorder: killed")
	}
	r.l.add(r.name, partitionOf(m.Subject), "step", m.Seq)
	return r.summer.Step(ctx, m)
}

func (r *recorder) isKilled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.killed
}

func partitionOf(subject string) string {
	p, _ := sumPartitions.Partition(subject)
	return p
}

type partInstance struct {
	*instance
	rec *recorder
}

// runPartitioned starts an instance named name; leases, when set, wraps
// its leases bucket.
func runPartitioned(t *testing.T, s *server.Server, name string, l *ledger, leases func(pipeline.Leases) pipeline.Leases) *partInstance {
	t.Helper()
	return runPartitionedWith(t, s, name, l, partOpts{leases: leases})
}

// partOpts are the optional parts of a partitioned test instance: wrappers
// of its leases bucket and of its bus, a hook on its runner before it
// starts, its stage (the recorder's summer) and its lease TTL.
type partOpts struct {
	leases func(pipeline.Leases) pipeline.Leases
	js     func(pipeline.JetStream) pipeline.JetStream
	hook   func(*pipeline.Runner)
	rec    func(*recorder) pipeline.Stage
	ttl    time.Duration
}

func runPartitionedWith(t *testing.T, s *server.Server, name string, l *ledger, o partOpts) *partInstance {
	t.Helper()
	nc, js := natstest.Connect(t, s)
	var kv pipeline.Leases
	kv, err := js.KeyValue(t.Context(), streams.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if o.leases != nil {
		kv = o.leases(kv)
	}
	var bus pipeline.JetStream = js
	if o.js != nil {
		bus = o.js(js)
	}
	rec := &recorder{summer: newSummer(), name: name, l: l}
	var stage pipeline.Stage = rec
	if o.rec != nil {
		stage = o.rec(rec)
	}
	in := &instance{nc: nc, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	spec := sumPartitions
	r, err := pipeline.New(pipeline.Config{Name: "sum", Stream: "IN", Batch: batch, PublishTimeout: time.Second, Partitioned: &spec, LeaseTTL: o.ttl},
		stage, pipeline.Deps{JS: bus, Log: clusterLog(name), Registry: in.reg, Leases: kv, Instance: name,
			OnOwner: func(p string, owned bool) {
				if rec.isKilled() {
					return // a crashed process tells nothing
				}
				kind := "own"
				if !owned {
					kind = "release"
				}
				l.add(name, p, kind, 0)
			}})
	if err != nil {
		t.Fatal(err)
	}
	if o.hook != nil {
		o.hook(r)
	}
	in.start(t, r)
	return &partInstance{instance: in, rec: rec}
}

// kill makes the instance die as a crashed process does: it steps
// nothing more and its connection is gone.
func (p *partInstance) kill(parts []string) {
	l := p.rec.l
	p.rec.mu.Lock()
	p.rec.killed = true
	for _, part := range parts {
		if l.owners(part)[p.rec.name] {
			l.add(p.rec.name, part, "release", 0)
		}
	}
	p.rec.mu.Unlock()
	p.nc.Close()
	p.stop()
}

// TestPartitionedOwnership: two instances share a partitioned stage by
// symbol. The first takes every symbol; the second, once started, takes
// its share from the first (a clean hand-over); when the second is killed
// its symbols go back to the first, which gets the inputs the dead one
// held and never acked at once (the consumers' AckWait is a minute).
// Every output is stored once and in per-symbol order, and no partition
// ever had two owners.
func TestPartitionedOwnership(t *testing.T) {
	s, js := setup(t)
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"1m.AAA-USD", "1m.BBB-USD", "1m.CCC-USD", "1m.DDD-USD", "5m.AAA-USD"}
	parts := []string{"AAA-USD", "BBB-USD", "CCC-USD", "DDD-USD"}

	// Inputs keep arriving all along, so that a partition without an
	// owner shows as a gap in its outputs.
	const n = 3000
	published, release := paced(t, js, keys, n)

	l := &ledger{}
	runPartitioned(t, s, "a", l, nil)
	ownedBy := func(name string) int { return l.ownedBy(name, parts) }
	natstest.WaitProgress(t, time.Minute, "a owns every partition", func() (bool, string) {
		return ownedBy("a") == len(parts), strconv.Itoa(ownedBy("a"))
	})
	natstest.WaitProgress(t, time.Minute, "outputs", func() (bool, string) {
		c := count(t, js, "OUT")
		return c > 200, strconv.FormatUint(c, 10)
	})

	b := runPartitioned(t, s, "b", l, nil)
	natstest.WaitProgress(t, time.Minute, "b takes its share", func() (bool, string) {
		return ownedBy("b") == 2 && ownedBy("a") == 2, strconv.Itoa(ownedBy("a")) + "/" + strconv.Itoa(ownedBy("b"))
	})
	var moved []string
	for _, p := range parts {
		if l.owners(p)["b"] {
			moved = append(moved, p)
		}
	}
	// Let b work its partitions before it dies.
	bSteps := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		k := 0
		for _, e := range l.events {
			if e.instance == "b" && e.kind == "step" {
				k++
			}
		}
		return k
	}
	natstest.WaitProgress(t, time.Minute, "b steps", func() (bool, string) {
		return bSteps() > 100, strconv.Itoa(bSteps())
	})
	killedAt := time.Now()
	b.kill(parts)
	natstest.WaitProgress(t, time.Minute, "a takes b's partitions back", func() (bool, string) {
		return ownedBy("a") == len(parts), strconv.Itoa(ownedBy("a"))
	})
	close(release)
	<-published
	natstest.WaitProgress(t, 2*time.Minute, "every output", func() (bool, string) {
		c := count(t, js, "OUT")
		return c >= n, strconv.FormatUint(c, 10)
	})

	// Every output once, each symbol's series in input order.
	got := outputs(t, js)
	all := want(keys, n, nil)
	for _, k := range keys {
		check(t, filterKey(got, k), filterKey(all, k))
	}
	checkOneOwner(t, l, parts)
	for _, p := range moved {
		t.Logf("partition %s: first step by its new owner %.2fs after its owner was killed (lease TTL %s)",
			p, firstStepAfter(l, "a", p, killedAt).Sub(killedAt).Seconds(), pipeline.DefaultLeaseTTL)
	}
}

// paced publishes inputs 0..n-1 round-robin over keys about one a
// millisecond, holding the second half until release is closed; published
// is closed after the last.
func paced(t *testing.T, js jetstream.JetStream, keys []string, n int) (published, release chan struct{}) {
	published, release = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(published)
		for i := range n {
			if _, err := js.Publish(t.Context(), "in."+keys[i%len(keys)], []byte(strconv.Itoa(i))); err != nil {
				t.Error(err)
				return
			}
			if i == n/2 {
				<-release // the rest once the failover is done
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return published, release
}

func filterKey(s []sum, key string) []sum {
	var out []sum
	for _, x := range s {
		if x.Key == key {
			out = append(out, x)
		}
	}
	return out
}

func firstStepAfter(l *ledger, instance, partition string, t0 time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.kind == "step" && e.instance == instance && e.partition == partition && e.at.After(t0) {
			return e.at
		}
	}
	return time.Time{}
}

// checkOneOwner replays the ledger: each partition is owned by one
// instance at a time, and every step of a partition is made by its owner.
func checkOneOwner(t *testing.T, l *ledger, parts []string) {
	t.Helper()
	l.mu.Lock()
	events := slices.Clone(l.events)
	l.mu.Unlock()
	for _, p := range parts {
		owner, handovers := "", 0
		for _, e := range events {
			if e.partition != p {
				continue
			}
			switch e.kind {
			case "own":
				if owner != "" {
					t.Errorf("partition %s: %s took it while %s owned it", p, e.instance, owner)
				}
				owner = e.instance
				handovers++
			case "release":
				if owner == e.instance {
					owner = ""
				}
			case "step":
				if e.instance != owner {
					t.Errorf("partition %s: %s stepped seq %d while %q owned it", p, e.instance, e.seq, owner)
				}
			}
		}
		if handovers == 0 {
			t.Errorf("partition %s: never owned", p)
		}
	}
}

// stalledLeases is one instance's leases bucket that can be cut off: from
// then on every call hangs until its context ends, as a request does to a
// bucket whose stream leader was lost, while the instance's publishes
// still reach the output stream. The watch keeps its view.
type stalledLeases struct {
	pipeline.Leases
	cut atomic.Bool
}

func (s *stalledLeases) stall(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

func (s *stalledLeases) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if s.cut.Load() {
		return 0, s.stall(ctx)
	}
	return s.Leases.Create(ctx, key, value, opts...)
}

func (s *stalledLeases) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if s.cut.Load() {
		return 0, s.stall(ctx)
	}
	return s.Leases.Update(ctx, key, value, rev)
}

func (s *stalledLeases) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if s.cut.Load() {
		return 0, s.stall(ctx)
	}
	return s.Leases.Put(ctx, key, value)
}

func (s *stalledLeases) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if s.cut.Load() {
		return nil, s.stall(ctx)
	}
	return s.Leases.Get(ctx, key)
}

func (s *stalledLeases) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if s.cut.Load() {
		return s.stall(ctx)
	}
	return s.Leases.Delete(ctx, key, opts...)
}

// TestPartitionFencing: an owner whose lease calls stall (its bucket's
// leader lost) while its publishes still go through. The other instance
// takes its partitions over once nobody renewed them for the TTL; the
// stalled owner must have stopped stepping and publishing them before
// that, on its own deadline, although no renewal failed back to it. The
// ledger shows one owner at a time, and every output is stored once, in
// per-symbol order.
func TestPartitionFencing(t *testing.T) {
	s, js := setup(t)
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"1m.AAA-USD", "1m.BBB-USD", "1m.CCC-USD", "1m.DDD-USD"}
	parts := []string{"AAA-USD", "BBB-USD", "CCC-USD", "DDD-USD"}
	const n = 4000
	published, release := paced(t, js, keys, n)

	l := &ledger{}
	stalled := &stalledLeases{}
	a := runPartitioned(t, s, "a", l, func(kv pipeline.Leases) pipeline.Leases {
		stalled.Leases = kv
		return stalled
	})
	t.Cleanup(func() { stalled.cut.Store(false) }) // a leaves cleanly at the end

	ownedBy := func(name string) int { return l.ownedBy(name, parts) }
	natstest.WaitProgress(t, time.Minute, "a owns every partition", func() (bool, string) {
		return ownedBy("a") == len(parts), strconv.Itoa(ownedBy("a"))
	})
	runPartitioned(t, s, "b", l, nil)
	natstest.WaitProgress(t, time.Minute, "b takes its share", func() (bool, string) {
		return ownedBy("b") == 2 && ownedBy("a") == 2, strconv.Itoa(ownedBy("a")) + "/" + strconv.Itoa(ownedBy("b"))
	})
	stalled.cut.Store(true)
	natstest.WaitProgress(t, time.Minute, "b takes a's partitions over", func() (bool, string) {
		return ownedBy("b") == len(parts), strconv.Itoa(ownedBy("b"))
	})
	close(release)
	<-published
	natstest.WaitProgress(t, 2*time.Minute, "every output", func() (bool, string) {
		c := count(t, js, "OUT")
		return c >= n, strconv.FormatUint(c, 10)
	})
	checkOneOwner(t, l, parts)
	got := outputs(t, js)
	all := want(keys, n, nil)
	for _, k := range keys {
		check(t, filterKey(got, k), filterKey(all, k))
	}
	if got := opstest.Value(t, a.reg, "cryptostream_pipeline_lease_expiries_total", map[string]string{"stage": "sum"}); got != 2 {
		t.Fatalf("a stopped %v partitions on its deadline, want its 2", got)
	}
}

// laggingLeases is a leases bucket whose watch stops delivering once
// frozen, as a KV watch does while its ordered consumer is rebuilt after
// a node loss (it came back 10 to 20 s later in TestClusterFailover).
type laggingLeases struct {
	pipeline.Leases
	frozen atomic.Bool
}

type laggingWatcher struct {
	jetstream.KeyWatcher
	updates chan jetstream.KeyValueEntry
}

func (w laggingWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

func (l *laggingLeases) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := l.Leases.Watch(ctx, keys, opts...)
	if err != nil {
		return nil, err
	}
	out := make(chan jetstream.KeyValueEntry)
	go func() {
		defer close(out)
		for e := range w.Updates() {
			if !l.frozen.Load() {
				out <- e
			}
		}
	}()
	return laggingWatcher{KeyWatcher: w, updates: out}, nil
}

// TestTakeoverWithALaggingWatch: b's watch of the leases stops while a
// goes on renewing, so that every revision b knows of a's leases is
// stale; then a is killed. b must take a's partitions over all the same,
// from the leases as the bucket has them, and not before a stopped
// renewing them (one owner at a time). With the takeover trusting the
// watch's revision, every attempt failed on "wrong last sequence" until
// the watch came back (16-19 s stalls under load in TestClusterFailover).
func TestTakeoverWithALaggingWatch(t *testing.T) {
	s, js := setup(t)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"1m.AAA-USD", "1m.BBB-USD", "1m.CCC-USD", "1m.DDD-USD"}
	parts := []string{"AAA-USD", "BBB-USD", "CCC-USD", "DDD-USD"}
	const n = 400
	published, release := paced(t, js, keys, n)
	defer func() { close(release); <-published }()

	l := &ledger{}
	a := runPartitioned(t, s, "a", l, nil)
	ownedBy := func(name string) int { return l.ownedBy(name, parts) }
	natstest.WaitProgress(t, time.Minute, "a owns every partition", func() (bool, string) {
		return ownedBy("a") == len(parts), strconv.Itoa(ownedBy("a"))
	})
	lag := &laggingLeases{}
	runPartitioned(t, s, "b", l, func(kv pipeline.Leases) pipeline.Leases { lag.Leases = kv; return lag })
	natstest.WaitProgress(t, time.Minute, "b takes its share", func() (bool, string) {
		return ownedBy("b") == 2 && ownedBy("a") == 2, strconv.Itoa(ownedBy("a")) + "/" + strconv.Itoa(ownedBy("b"))
	})

	// b's watch stops; a renews its leases past what b saw.
	lag.frozen.Store(true)
	var aPart string
	for _, p := range parts {
		if l.owners(p)["a"] {
			aPart = p
		}
	}
	key := sumPartitions.Stage + ".owner." + aPart
	rev := func() uint64 {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return 0
		}
		return e.Revision()
	}
	frozenAt := rev()
	natstest.WaitProgress(t, time.Minute, "a renews past b's view", func() (bool, string) {
		r := rev()
		return r > frozenAt+2, fmt.Sprint(frozenAt, " -> ", r)
	})

	a.kill(parts)
	natstest.WaitProgress(t, time.Minute, "b takes a's partitions while its watch lags", func() (bool, string) {
		return ownedBy("b") == len(parts), strconv.Itoa(ownedBy("b"))
	})
	if !lag.frozen.Load() {
		t.Fatal("the watch was thawed")
	}
	checkOneOwner(t, l, parts)
}
