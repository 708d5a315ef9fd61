package pipeline_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
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

// noServerFence runs the fence tests with the server-side fence off, to
// see them fail: go test ./pipeline -run ServerFence -args -no-server-fence
var noServerFence = flag.Bool("no-server-fence", false, "run the partition runners without the server-side fence")

// signed is the summer's output, signed by the instance that stepped it,
// in its msg-id too: the server's dedup by msg-id then cannot hide a
// second owner's output, as it cannot for a stage whose outputs depend on
// its instance's state (a model it loaded, a clock).
type signed struct {
	sum
	By string `json:"by"`
}

func (s *signed) MsgID() string { return s.sum.MsgID() + ":" + s.By }

// signer is one instance's stage: the summer, signing its outputs.
type signer struct {
	*summer
	name string
}

func (s *signer) Step(ctx context.Context, m pipeline.Msg) ([]streams.Event, error) {
	evs, err := s.summer.Step(ctx, m)
	if err != nil {
		return nil, err
	}
	out := make([]streams.Event, len(evs))
	for i, ev := range evs {
		out[i] = &signed{sum: *ev.(*sum), By: s.name}
	}
	return out, nil
}

// stall pauses an instance between a step and its publish, as a process
// is paused (a long GC, a stopped VM): once armed, the send of the output
// whose msg-id is at stalls, and from then on its lease calls hang too,
// until resume is closed. Its local fence then shuts on its deadline and
// its consumer stops pulling, but the stalled send was already past the
// fence's check, which is made at the step.
type stall struct {
	leases *stalledLeases
	// ends counts the batches ended on the runner's side (an end of
	// batch sent when no flight follows).
	ends    atomic.Int64
	mu      sync.Mutex
	at      string
	stalled chan struct{}
	resume  chan struct{}
}

func (s *stall) arm(msgID string) {
	s.mu.Lock()
	s.at = msgID
	s.mu.Unlock()
}

func (s *stall) Send(m *nats.Msg, send func(*nats.Msg) error) error {
	if strings.HasSuffix(m.Reply, ".3.$FI") {
		defer s.ends.Add(1)
	}
	s.mu.Lock()
	hit := s.at != "" && m.Header.Get(jetstream.MsgIDHeader) == s.at
	if hit {
		s.at = ""
	}
	s.mu.Unlock()
	if hit {
		s.leases.cut.Store(true)
		close(s.stalled)
		<-s.resume
	}
	return send(m)
}

// fencedInstance is an instance of the partitioned, signing summer.
type fencedInstance struct {
	*instance
	stall *stall
}

func runSigned(t *testing.T, s *server.Server, name string, l *ledger, ttl time.Duration) *fencedInstance {
	t.Helper()
	nc, js := natstest.Connect(t, s)
	kv, err := js.KeyValue(t.Context(), streams.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	st := &stall{leases: &stalledLeases{Leases: kv}, stalled: make(chan struct{}), resume: make(chan struct{})}
	t.Cleanup(func() { st.leases.cut.Store(false) }) // it leaves cleanly at the end
	in := &instance{nc: nc, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	spec := sumPartitions
	// A pin the stalled owner's last pull request took after the new
	// owner lifted it goes soon.
	spec.Config.PinnedTTL = 2 * time.Second
	cfg := pipeline.Config{Name: "sum", Stream: "IN", Batch: batch, PublishTimeout: time.Second, Partitioned: &spec, LeaseTTL: ttl}
	r, err := pipeline.New(cfg, &signer{summer: newSummer(), name: name}, pipeline.Deps{JS: js, Log: discard, Registry: in.reg, Leases: st.leases, Instance: name,
		OnOwner: func(p string, owned bool) {
			if owned {
				l.add(name, p, "own", 0)
			} else {
				l.add(name, p, "release", 0)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	pipeline.SetSend(r, st.Send)
	in.start(t, r)
	return &fencedInstance{instance: in, stall: st}
}

// signedOutputs reads OUT's outputs in stream order.
func signedOutputs(t *testing.T, js jetstream.JetStream) []signed {
	t.Helper()
	n := count(t, js, "OUT")
	c, err := js.OrderedConsumer(t.Context(), "OUT", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"out.>"}})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]signed, 0, n)
	for uint64(len(out)) < n {
		m, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		var s signed
		if err := json.Unmarshal(m.Data(), &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestServerFenceRefusesStalledOwner: a partition's owner stalls after it
// stepped an input and before it published the outputs (its local fence
// cannot stop that publish: the step was made in time). Its lease runs
// out, another instance takes the partition over, steps the stalled input
// again and goes on. Then the stalled owner resumes and publishes what it
// held: the server must refuse it, since the new owner's marker stands on
// the partition's fence subject, and the old owner stops the partition.
// Every input's output is stored once, by the owner of the time, in input
// order. (Its outputs are signed by their instance, msg-id included, so
// that the msg-id dedup cannot stand in for the fence.)
func TestServerFenceRefusesStalledOwner(t *testing.T) {
	if *noServerFence {
		pipeline.SetServerFence(false)
		t.Cleanup(func() { pipeline.SetServerFence(true) })
	}
	s, js := setup(t)
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	const key, part = "1m.AAA-USD", "AAA-USD"
	const ttl = 2 * time.Second
	l := &ledger{}
	a := runSigned(t, s, "a", l, ttl)
	var once sync.Once
	resume := func() { once.Do(func() { close(a.stall.resume) }) }
	t.Cleanup(resume) // before a stops: cleanups run last first
	owned := func(name string) bool { return l.owners(part)[name] }

	// Inputs one at a time, each output stored and its batch ended
	// before the next input, so that each goes in a fast batch of its
	// own: the stalled output then starts a batch after the take-over.
	next := 0
	publish := func(n int, wantOut func(i int) uint64) {
		for range n {
			if _, err := js.Publish(ctx, "in."+key, []byte(strconv.Itoa(next))); err != nil {
				t.Fatal(err)
			}
			next++
			if wantOut == nil {
				continue
			}
			w := wantOut(next)
			natstest.WaitProgress(t, time.Minute, "output", func() (bool, string) {
				c := count(t, js, "OUT")
				return c >= w, strconv.FormatUint(c, 10)
			})
			natstest.WaitProgress(t, time.Minute, "a ends its batch", func() (bool, string) {
				e := a.stall.ends.Load()
				return e >= int64(next), strconv.FormatInt(e, 10)
			})
		}
	}
	const before, after = 5, 5
	// The partition exists once IN holds its subject.
	publish(before, func(i int) uint64 { return uint64(i) })
	if !owned("a") {
		t.Fatal("a's outputs stored while it does not own the partition")
	}

	// a stalls on the next input's output, stepped and not yet sent.
	stalledSeq := uint64(before + 1)
	a.stall.arm((&signed{sum: sum{Key: key, Seq: stalledSeq}, By: "a"}).MsgID())
	publish(1, nil)
	natstest.WaitFor(t, time.Minute, "a stalls", func() bool {
		select {
		case <-a.stall.stalled:
			return true
		default:
			return false
		}
	})

	b := runSigned(t, s, "b", l, ttl)
	natstest.WaitFor(t, time.Minute, "b takes the partition over", func() bool { return owned("b") })
	publish(after, nil)
	total := uint64(before + 1 + after)
	natstest.WaitProgress(t, time.Minute, "b's outputs", func() (bool, string) {
		c := count(t, js, "OUT")
		return c >= total, strconv.FormatUint(c, 10)
	})

	// a resumes and publishes what it held: wait until the server
	// answered, one way or the other.
	resume()
	labels := map[string]string{"stage": "sum"}
	natstest.WaitProgress(t, time.Minute, "a's late publish answered", func() (bool, string) {
		fenced := opstest.Value(t, a.reg, "cryptostream_pipeline_partitions_fenced_total", labels)
		stored := opstest.Value(t, a.reg, "cryptostream_pipeline_outputs_total", labels)
		return fenced > 0 || stored > before, fmt.Sprint(fenced, " ", stored)
	})

	got := signedOutputs(t, js)
	seen := map[uint64]signed{}
	for i, o := range got {
		if first, ok := seen[o.Seq]; ok {
			t.Fatalf("input at seq %d has two outputs: by %s and, %d outputs later in the stream, by %s: the stalled owner's publish was stored",
				o.Seq, first.By, i-indexOf(got, first), o.By)
		}
		seen[o.Seq] = o
		if i > 0 && o.Seq < got[i-1].Seq {
			t.Fatalf("output %d is of input %d, after input %d's", i, o.Seq, got[i-1].Seq)
		}
	}
	if uint64(len(got)) != total {
		t.Fatalf("%d outputs, want %d", len(got), total)
	}
	for _, o := range got {
		if wantBy := map[bool]string{true: "a", false: "b"}[o.Seq < stalledSeq]; o.By != wantBy {
			t.Errorf("input %d's output is by %s, want %s", o.Seq, o.By, wantBy)
		}
	}
	if f := opstest.Value(t, a.reg, "cryptostream_pipeline_partitions_fenced_total", labels); f != 1 {
		t.Errorf("a counted %v partitions fenced off, want 1", f)
	}
	_ = b
}

func indexOf(got []signed, s signed) int {
	for i, o := range got {
		if o == s {
			return i
		}
	}
	return -1
}

// BenchmarkPartitionFence: a backlog through the partitioned summing stage
// (four partitions, one instance), with the server-side fence and, in the
// same iteration on a fresh server configured alike, without it; the two
// alternate in order, and the median of the iterations' own ratios is
// reported, with the process CPU per output (the embedded server's
// included), which a loaded machine disturbs less than the rate.
func BenchmarkPartitionFence(b *testing.B) {
	const n = 20000
	fenceAB(b, n, partitionPass)
}

// fenceAB runs run fenced and unfenced in each iteration, alternating
// which goes first, and reports the medians of the rates, of the
// iterations' own ratios and of the CPU per output.
func fenceAB(b *testing.B, n int, run func(b *testing.B, n int, fence bool) pass) {
	var fenced, unfenced, ratio, cpuOn, cpuOff []float64
	for i := range b.N {
		var on, off pass
		if i%2 == 0 {
			on, off = run(b, n, true), run(b, n, false)
		} else {
			off = run(b, n, false)
			on = run(b, n, true)
		}
		fenced, unfenced, ratio = append(fenced, on.rate), append(unfenced, off.rate), append(ratio, on.rate/off.rate)
		cpuOn, cpuOff = append(cpuOn, on.cpu), append(cpuOff, off.cpu)
		b.Logf("pass %d: fenced %.0f outputs/s (%.1f µs CPU each), unfenced %.0f outputs/s (%.1f µs), ratio %.2f",
			i+1, on.rate, on.cpu, off.rate, off.cpu, on.rate/off.rate)
	}
	b.ReportMetric(middle(fenced), "fenced_outputs/s")
	b.ReportMetric(middle(unfenced), "unfenced_outputs/s")
	b.ReportMetric(middle(ratio), "ratio_fenced_to_unfenced")
	b.ReportMetric(middle(cpuOn), "fenced_cpu_µs/output")
	b.ReportMetric(middle(cpuOff), "unfenced_cpu_µs/output")
}

// fenceBenchServer is a fresh server with IN, OUT (holding the fence
// subjects) and the leases bucket.
func fenceBenchServer(b *testing.B) (*server.Server, jetstream.JetStream, jetstream.KeyValue) {
	s := natstest.Server(b)
	_, js := natstest.Connect(b, s)
	for name, subj := range map[string][]string{"IN": {"in.>"}, "OUT": {"out.>", streams.FenceFilter("OUT")}} {
		if _, err := js.CreateStream(b.Context(), jetstream.StreamConfig{Name: name, Subjects: subj, Duplicates: time.Hour, AllowBatchPublish: true}); err != nil {
			b.Fatal(err)
		}
	}
	kv, err := js.CreateKeyValue(b.Context(), jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1})
	if err != nil {
		b.Fatal(err)
	}
	return s, js, kv
}

// partitionPass stores n inputs over four symbols, then runs one instance
// of the partitioned stage until their n outputs are stored.
func partitionPass(b *testing.B, n int, fence bool) pass {
	b.Helper()
	pipeline.SetServerFence(fence)
	defer pipeline.SetServerFence(true)
	s, js, kv := fenceBenchServer(b)
	ctx := b.Context()
	keys := []string{"1m.AAA-USD", "1m.BBB-USD", "1m.CCC-USD", "1m.DDD-USD"}
	for i := range n {
		if _, err := js.PublishAsync("in."+keys[i%len(keys)], []byte(strconv.Itoa(i))); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	_, rjs := natstest.Connect(b, s)
	spec := sumPartitions
	r, err := pipeline.New(pipeline.Config{Name: "sum", Stream: "IN", Batch: batch, Partitioned: &spec},
		newSummer(), pipeline.Deps{JS: rjs, Log: discard, Registry: prometheus.NewRegistry(), Leases: kv, Instance: "a"})
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start, cpu := time.Now(), cpuNow()
	go func() { done <- r.Run(rctx) }()
	st, err := js.Stream(ctx, "OUT")
	if err != nil {
		b.Fatal(err)
	}
	for {
		got, err := streams.DataMsgs(ctx, st)
		if err != nil {
			b.Fatal(err)
		}
		if got >= uint64(n) {
			break
		}
		time.Sleep(2 * time.Millisecond) // polling the count
	}
	elapsed, used := time.Since(start), cpuNow()-cpu
	cancel()
	<-done
	return pass{float64(n) / elapsed.Seconds(), float64(used.Microseconds()) / float64(n)}
}

// BenchmarkPartitionFenceLive: live inputs through the partitioned summing
// stage, one at a time, each published once the previous output is
// stored, so that every output starts a fast batch and carries the
// fence's check; fenced and unfenced passes alternate on fresh servers,
// as in BenchmarkPartitionFence.
func BenchmarkPartitionFenceLive(b *testing.B) {
	const n = 500
	fenceAB(b, n, livePass)
}

func livePass(b *testing.B, n int, fence bool) pass {
	b.Helper()
	pipeline.SetServerFence(fence)
	defer pipeline.SetServerFence(true)
	s, js, kv := fenceBenchServer(b)
	ctx := b.Context()
	_, rjs := natstest.Connect(b, s)
	spec := sumPartitions
	r, err := pipeline.New(pipeline.Config{Name: "sum", Stream: "IN", Batch: batch, Partitioned: &spec},
		newSummer(), pipeline.Deps{JS: rjs, Log: discard, Registry: prometheus.NewRegistry(), Leases: kv, Instance: "a"})
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	st, err := js.Stream(ctx, "OUT")
	if err != nil {
		b.Fatal(err)
	}
	wait := func(want uint64) {
		for {
			got, err := streams.DataMsgs(ctx, st)
			if err != nil {
				b.Fatal(err)
			}
			if got >= want {
				return
			}
			time.Sleep(100 * time.Microsecond) // polling the count
		}
	}
	// The first input makes the partition, and its owner: not timed.
	if _, err := js.Publish(ctx, "in.1m.AAA-USD", []byte("0")); err != nil {
		b.Fatal(err)
	}
	wait(1)
	start, cpu := time.Now(), cpuNow()
	for i := 1; i <= n; i++ {
		if _, err := js.Publish(ctx, "in.1m.AAA-USD", []byte(strconv.Itoa(i))); err != nil {
			b.Fatal(err)
		}
		wait(uint64(i + 1))
	}
	elapsed, used := time.Since(start), cpuNow()-cpu
	cancel()
	<-done
	return pass{float64(n) / elapsed.Seconds(), float64(used.Microseconds()) / float64(n)}
}
