package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// sum is the test stage's output: the running sum of a key's inputs up to
// and including the input at Seq.
type sum struct {
	streams.Schema
	Key string `json:"key"`
	Seq uint64 `json:"seq"`
	Sum int    `json:"sum"`
}

func (s *sum) Subject() string { return "out." + s.Key }
func (s *sum) MsgID() string   { return "sum:" + s.Key + ":" + strconv.FormatUint(s.Seq, 10) }
func (s *sum) Validate() error {
	if s.Key == "" {
		return streams.Permanent(errors.New("sum: no key"))
	}
	return nil
}

// summer keeps a running sum per key of integer inputs on in.<key>: state
// that is wrong if an input is lost, doubled or reordered, and that a
// warm-up must rebuild from the stream.
type summer struct {
	mu   sync.Mutex
	sums map[string]int
	// fail, when set, is asked before each step whether to fail it with
	// an error worth retrying.
	fail func(pipeline.Msg) bool
}

func newSummer() *summer { return &summer{sums: map[string]int{}} }

func (s *summer) Key(m pipeline.Msg) string { return strings.TrimPrefix(m.Subject, "in.") }

func (s *summer) Warm(ctx context.Context, h pipeline.History, key string, first pipeline.Msg) error {
	prev, err := h.Tail(ctx, "IN", first.Subject, 1<<20, first.Seq)
	if err != nil {
		return err
	}
	total := 0
	for _, m := range prev {
		if n, err := strconv.Atoi(string(m.Data)); err == nil {
			total += n
		}
	}
	s.mu.Lock()
	s.sums[key] = total
	s.mu.Unlock()
	return nil
}

func (s *summer) Step(_ context.Context, m pipeline.Msg) ([]streams.Event, error) {
	if s.fail != nil && s.fail(m) {
		return nil, errors.New("summer: transient failure")
	}
	n, err := strconv.Atoi(string(m.Data))
	if err != nil {
		return nil, streams.Permanent(fmt.Errorf("summer: %w", err))
	}
	key := s.Key(m)
	s.mu.Lock()
	s.sums[key] += n
	total := s.sums[key]
	s.mu.Unlock()
	return []streams.Event{&sum{Key: key, Seq: m.Seq, Sum: total}}, nil
}

func (s *summer) Reset(key string) {
	s.mu.Lock()
	delete(s.sums, key)
	s.mu.Unlock()
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

const batch = 64

// setup declares IN, OUT and the pinned durable "sum" with one batch in
// flight, with AckWait and PinnedTTL short enough for a test to see a
// killed instance's batch come back.
func setup(t *testing.T) (*server.Server, jetstream.JetStream) {
	t.Helper()
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	// OUT holds the fence subjects of a partitioned stage's owners.
	for name, subj := range map[string][]string{"IN": {"in.>"}, "OUT": {"out.>", streams.FenceFilter("OUT")}} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: subj, Duplicates: time.Hour, AllowBatchPublish: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, "IN", jetstream.ConsumerConfig{
		Durable: "sum", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: -1,
		MaxAckPending: batch, PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{streams.PriorityGroup}, PinnedTTL: time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	return s, js
}

// inputs publishes n inputs round-robin over keys; input i carries i.
func inputs(t *testing.T, js jetstream.JetStream, keys []string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := js.Publish(t.Context(), "in."+keys[i%len(keys)], []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// instance is a runner on its own connection, so that closing the
// connection kills it the way a crashed process dies.
type instance struct {
	nc     *nats.Conn
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func run(t *testing.T, s *server.Server, stage pipeline.Stage, wrap func(*nats.Conn, pipeline.JetStream) pipeline.JetStream) *instance {
	t.Helper()
	return runWith(t, s, stage, wrap, nil)
}

// runWith is run with a hook on the runner before it starts.
func runWith(t *testing.T, s *server.Server, stage pipeline.Stage, wrap func(*nats.Conn, pipeline.JetStream) pipeline.JetStream, hook func(*pipeline.Runner)) *instance {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var pjs pipeline.JetStream = js
	if wrap != nil {
		pjs = wrap(nc, js)
	}
	in := &instance{nc: nc, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	r, err := pipeline.New(pipeline.Config{Name: "sum", Stream: "IN", Consumer: "sum", Batch: batch, Pinned: true, PublishTimeout: time.Second},
		stage, pipeline.Deps{JS: pjs, Log: discard, Registry: in.reg})
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := pjs.(sender); ok {
		pipeline.SetSend(r, s.Send)
	}
	if hook != nil {
		hook(r)
	}
	in.start(t, r)
	return in
}

// sender is a test's bus wrapper that also stands between the runner and
// its connection for the messages of its fast batches.
type sender interface {
	Send(m *nats.Msg, send func(*nats.Msg) error) error
}

// start runs r until the instance is stopped or the test ends.
func (in *instance) start(t *testing.T, r *pipeline.Runner) {
	ctx, cancel := context.WithCancel(t.Context())
	in.cancel = cancel
	go func() { in.done <- r.Run(ctx) }()
	t.Cleanup(in.stop)
}

func (in *instance) stop() {
	if in.cancel == nil {
		return
	}
	in.cancel()
	<-in.done
	in.cancel = nil
}

func outputs(t *testing.T, js jetstream.JetStream) []sum {
	t.Helper()
	n := count(t, js, "OUT")
	out := make([]sum, 0, n)
	if n == 0 {
		return out
	}
	c, err := js.OrderedConsumer(t.Context(), "OUT", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"out.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for uint64(len(out)) < n {
		m, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		var s sum
		if err := json.Unmarshal(m.Data(), &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func count(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	n, err := streams.DataMsgs(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// want is the outputs of one uninterrupted pass: inputs 0..n-1 published
// in order (stream sequence i+1) round-robin over keys, minus the skipped.
func want(keys []string, n int, skip map[int]bool) []sum {
	sums := map[string]int{}
	var out []sum
	for i := range n {
		k := keys[i%len(keys)]
		if skip[i] {
			continue
		}
		sums[k] += i
		out = append(out, sum{Key: k, Seq: uint64(i + 1), Sum: sums[k]})
	}
	return out
}

// check says that got is want: every output once, in the stream in input
// order.
func check(t *testing.T, got, want []sum) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d outputs stored, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Key != w.Key || g.Seq != w.Seq || g.Sum != w.Sum {
			t.Fatalf("output %d: %+v, want %+v", i, g, w)
		}
	}
}

// TestRunnerInOrder: a backlog and then live inputs over several keys, one
// output each, stored in input order with the right running sums; a
// malformed input is rejected without stopping the stream.
func TestRunnerInOrder(t *testing.T) {
	s, js := setup(t)
	keys := []string{"a", "b", "c"}
	inputs(t, js, keys, 0, 300)
	if _, err := js.Publish(t.Context(), "in.a", []byte("not a number")); err != nil {
		t.Fatal(err)
	}
	in := run(t, s, newSummer(), nil)
	natstest.WaitAtLeast(t, 30*time.Second, "the backlog's outputs", uint64(300), func() uint64 { return count(t, js, "OUT") })
	// Live: one at a time, each handled on its own.
	for i := 301; i < 320; i++ {
		inputs(t, js, keys, i, 1)
	}
	natstest.WaitAtLeast(t, 30*time.Second, "the live outputs", uint64(319), func() uint64 { return count(t, js, "OUT") })
	in.stop()
	check(t, outputs(t, js), want(keys, 320, map[int]bool{300: true}))
	if got := opstest.Value(t, in.reg, "cryptostream_pipeline_inputs_total", map[string]string{"outcome": "term"}); got != 1 {
		t.Fatalf("%v inputs rejected, want 1", got)
	}
	if got := opstest.Value(t, in.reg, "cryptostream_pipeline_inputs_total", map[string]string{"outcome": "ack"}); got != 319 {
		t.Fatalf("%v inputs acked, want 319", got)
	}
	// The backlog went in batches, not one at a time.
	if got := opstest.Value(t, in.reg, "cryptostream_pipeline_batch_size_messages", nil); got >= 300 {
		t.Fatalf("%v batches for 320 inputs", got)
	}
}

// TestRunnerRestart: stopped halfway and started again, the runner warms
// every key from the stream and goes on where it stopped.
func TestRunnerRestart(t *testing.T) {
	s, js := setup(t)
	keys := []string{"a", "b"}
	inputs(t, js, keys, 0, 200)
	in := run(t, s, newSummer(), nil)
	natstest.WaitAtLeast(t, 30*time.Second, "the first outputs", uint64(200), func() uint64 { return count(t, js, "OUT") })
	in.stop()
	inputs(t, js, keys, 200, 200)
	in = run(t, s, newSummer(), nil)
	natstest.WaitAtLeast(t, 30*time.Second, "the rest", uint64(400), func() uint64 { return count(t, js, "OUT") })
	in.stop()
	check(t, outputs(t, js), want(keys, 400, nil))
	// One warm-up per key, and again after each reset: a busy machine can
	// leave the pin unpulled past its PinnedTTL, and the server then pins
	// the runner anew, which warms every series again (4 warm-ups at load
	// 16, with stress-ng beside the test).
	resets := opstest.Value(t, in.reg, "cryptostream_pipeline_owner_changes_total", nil) +
		opstest.Value(t, in.reg, "cryptostream_pipeline_batch_retries_total", nil)
	if got := opstest.Value(t, in.reg, "cryptostream_pipeline_warmups_total", nil); got < float64(len(keys)) || got > float64(len(keys))*resets {
		t.Fatalf("%v warm-ups after the restart over %v pins and retries, want one per key and reset", got, resets)
	}
	// Each warm-up is timed, for the failover's breakdown of a resume.
	if got, want := opstest.Value(t, in.reg, "cryptostream_pipeline_warmup_seconds", nil), opstest.Value(t, in.reg, "cryptostream_pipeline_warmups_total", nil); got != want {
		t.Fatalf("%v warm-ups timed, %v made", got, want)
	}
	// Each pin's takeover is timed once it holds what was in flight (the
	// last may be cut short by the stop, and is not).
	if got, pins := opstest.Value(t, in.reg, "cryptostream_pipeline_takeover_seconds", nil), opstest.Value(t, in.reg, "cryptostream_pipeline_owner_changes_total", nil); got < 1 || got > pins {
		t.Fatalf("%v takeovers timed over %v pins", got, pins)
	}
}

// killAfter stands between a runner and its connection so that sending
// its n-th output kills the connection, once the earlier ones reached the
// server: the process dies in the middle of a batch, after some of its
// outputs are published and before the batch is acked.
type killAfter struct {
	pipeline.JetStream
	nc     *nats.Conn
	n      int64
	count  atomic.Int64
	killed chan struct{}
}

func (k *killAfter) Send(m *nats.Msg, send func(*nats.Msg) error) error {
	if m.Header.Get(jetstream.MsgIDHeader) != "" && k.count.Add(1) == k.n {
		_ = k.nc.Flush()
		k.nc.Close()
		close(k.killed)
	}
	return send(m)
}

// TestRunnerKillMidBatch: a runner killed after publishing part of a batch
// and before acking it; its successor gets the batch back before anything
// newer, and every output is stored once, in order, with the sums of an
// uninterrupted run.
func TestRunnerKillMidBatch(t *testing.T) {
	s, js := setup(t)
	keys := []string{"a", "b", "c"}
	inputs(t, js, keys, 0, 3*batch)
	const at = batch + batch/2 // the middle of the second batch
	k := &killAfter{n: at, killed: make(chan struct{})}
	victim := run(t, s, newSummer(), func(nc *nats.Conn, js pipeline.JetStream) pipeline.JetStream {
		k.nc, k.JetStream = nc, js
		return k
	})
	<-k.killed
	victim.stop()
	// What the victim sent before the kill is on the server, which may
	// still be storing it.
	natstest.WaitAtLeast(t, 30*time.Second, "the outputs sent before the kill", uint64(at-1), func() uint64 { return count(t, js, "OUT") })
	if got := count(t, js, "OUT"); got != at-1 {
		t.Fatalf("%d outputs stored before the kill, want %d: the kill did not land mid-batch", got, at-1)
	}
	inputs(t, js, keys, 3*batch, batch)
	run(t, s, newSummer(), nil)
	natstest.WaitAtLeast(t, 60*time.Second, "every output", uint64(4*batch), func() uint64 { return count(t, js, "OUT") })
	check(t, outputs(t, js), want(keys, 4*batch, nil))
}

// TestRunnerKillLive: killed while inputs arrive one at a time, so that
// it holds a small batch and the server has room to deliver newer inputs:
// its successor still gets the held batch back first, and every output is
// stored once, in order.
func TestRunnerKillLive(t *testing.T) {
	s, js := setup(t)
	keys := []string{"a", "b"}
	k := &killAfter{n: 100, killed: make(chan struct{})}
	victim := run(t, s, newSummer(), func(nc *nats.Conn, js pipeline.JetStream) pipeline.JetStream {
		k.nc, k.JetStream = nc, js
		return k
	})
	const n = 300
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range n {
			if _, err := js.Publish(t.Context(), "in."+keys[i%len(keys)], []byte(strconv.Itoa(i))); err != nil {
				t.Error(err)
				return
			}
			if i == 150 {
				<-k.killed
			}
		}
	}()
	<-k.killed
	victim.stop()
	run(t, s, newSummer(), nil)
	<-published
	natstest.WaitAtLeast(t, 60*time.Second, "every output", uint64(n), func() uint64 { return count(t, js, "OUT") })
	check(t, outputs(t, js), want(keys, n, nil))
}

// TestRunnerRetryInPlace: a step that fails is retried in place, with its
// key warmed again, and the stream keeps its order.
func TestRunnerRetryInPlace(t *testing.T) {
	s, js := setup(t)
	keys := []string{"a", "b"}
	inputs(t, js, keys, 0, 100)
	var fails atomic.Int32
	st := newSummer()
	st.fail = func(m pipeline.Msg) bool { return m.Seq == 50 && fails.Add(1) <= 2 }
	in := run(t, s, st, nil)
	natstest.WaitAtLeast(t, 30*time.Second, "every output", uint64(100), func() uint64 { return count(t, js, "OUT") })
	in.stop()
	check(t, outputs(t, js), want(keys, 100, nil))
	if got := opstest.Value(t, in.reg, "cryptostream_pipeline_batch_retries_total", nil); got != 2 {
		t.Fatalf("%v retries, want 2", got)
	}
	if got := opstest.Value(t, in.reg, "cryptostream_pipeline_inputs_total", map[string]string{"outcome": "nak"}); got != 0 {
		t.Fatalf("%v inputs handed back", got)
	}
}

// failOutput stands between a runner and its connection so that one
// output's message in a fast batch fails and its publish one at a time
// fails `times` times: the batch stops short in the middle. refuse: the
// send is refused; otherwise the message is lost on its way (the send
// says nothing) while the messages after it reach the server.
type failOutput struct {
	pipeline.JetStream
	id     string
	refuse bool
	times  atomic.Int32
}

func (f *failOutput) Send(m *nats.Msg, send func(*nats.Msg) error) error {
	if m.Header.Get(jetstream.MsgIDHeader) != f.id {
		return send(m)
	}
	if f.refuse {
		return errors.New("test: send refused")
	}
	return nil
}

func (f *failOutput) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if m.Header.Get(jetstream.MsgIDHeader) == f.id && f.times.Add(-1) >= 0 {
		return nil, errors.New("test: publish failed")
	}
	return f.JetStream.PublishMsg(ctx, m, opts...)
}

// TestRunnerRetryPublishInOrder: an output that cannot be confirmed for a
// while stops its batch in the middle of a backlog, where the runner steps
// and publishes the next batch while the first lands; it retries from
// that output, the batch behind it included, and every output is stored
// once, in order.
func TestRunnerRetryPublishInOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refuse  bool
		retries float64
	}{
		// Two failures one at a time: the first stops the batch, the
		// second its first retry.
		{"refused", true, 2},
		{"lost", false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, js := setup(t)
			keys := []string{"a", "b"}
			inputs(t, js, keys, 0, 6*batch)
			// Input 2*batch+10 (seq 2*batch+11, key a): past the first
			// batch, which a new owner handles on its own.
			const seq = 2*batch + 11
			f := &failOutput{id: fmt.Sprintf("sum:a:%d", seq), refuse: tc.refuse}
			f.times.Store(2)
			in := run(t, s, newSummer(), func(_ *nats.Conn, js pipeline.JetStream) pipeline.JetStream {
				f.JetStream = js
				return f
			})
			natstest.WaitAtLeast(t, 60*time.Second, "every output", uint64(6*batch), func() uint64 { return count(t, js, "OUT") })
			in.stop()
			check(t, outputs(t, js), want(keys, 6*batch, nil))
			if got := opstest.Value(t, in.reg, "cryptostream_pipeline_batch_retries_total", nil); got != tc.retries {
				t.Fatalf("%v retries, want %v", got, tc.retries)
			}
			if got := opstest.Value(t, in.reg, "cryptostream_pipeline_inputs_total", map[string]string{"outcome": "nak"}); got != 0 {
				t.Fatalf("%v inputs handed back", got)
			}
		})
	}
}

// TestRunnerStreamWithoutBatches: an output stream that takes no fast
// batches (a server before 2.14, or allow_batched off) gets the outputs
// published one by one asynchronously, all stored once, in order.
func TestRunnerStreamWithoutBatches(t *testing.T) {
	s, js := setup(t)
	st, err := js.Stream(t.Context(), "OUT")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowBatchPublish = false
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	keys := []string{"a", "b", "c"}
	inputs(t, js, keys, 0, 300)
	in := run(t, s, newSummer(), nil)
	natstest.WaitAtLeast(t, 30*time.Second, "every output", uint64(300), func() uint64 { return count(t, js, "OUT") })
	in.stop()
	check(t, outputs(t, js), want(keys, 300, nil))
	if got := opstest.Value(t, in.reg, "cryptostream_pipeline_batches_cut_total", nil); got != 0 {
		t.Fatalf("%v batches cut on a stream that takes none", got)
	}
}
