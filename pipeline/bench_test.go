package pipeline_test

import (
	"context"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/pipeline"
)

// BenchmarkRunnerBacklog: a backlog of inputs through the summing stage,
// its outputs published as fast-ingest batches (OUT allows them) and, in
// the same iteration on a fresh server configured alike, one by one
// asynchronously (OUT does not: the runner's path before batches). The
// two alternate in order, so that a drift of the machine's load favours
// neither, and the median of the iterations' own ratios is reported.
func BenchmarkRunnerBacklog(b *testing.B) {
	const n = 20000
	var batched, async, ratio, cpuFast, cpuPlain []float64
	for i := range b.N {
		var fast, plain pass
		if i%2 == 0 {
			fast = backlogPass(b, n, true)
			plain = backlogPass(b, n, false)
		} else {
			plain = backlogPass(b, n, false)
			fast = backlogPass(b, n, true)
		}
		batched, async, ratio = append(batched, fast.rate), append(async, plain.rate), append(ratio, fast.rate/plain.rate)
		cpuFast, cpuPlain = append(cpuFast, fast.cpu), append(cpuPlain, plain.cpu)
		b.Logf("pass %d: batched %.0f outputs/s (%.1f µs CPU each), async %.0f outputs/s (%.1f µs), ratio %.2f",
			i+1, fast.rate, fast.cpu, plain.rate, plain.cpu, fast.rate/plain.rate)
	}
	b.ReportMetric(middle(batched), "batched_outputs/s")
	b.ReportMetric(middle(async), "async_outputs/s")
	b.ReportMetric(middle(ratio), "ratio_batched_to_async")
	b.ReportMetric(middle(cpuFast), "batched_cpu_µs/output")
	b.ReportMetric(middle(cpuPlain), "async_cpu_µs/output")
}

// pass is one backlog's outputs per second and process CPU per output
// (the embedded server's included).
type pass struct{ rate, cpu float64 }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backlogPass stores n inputs, then runs a runner until their n outputs
// are stored.
func backlogPass(b *testing.B, n int, allowBatch bool) pass {
	b.Helper()
	s := natstest.Server(b)
	_, js := natstest.Connect(b, s)
	ctx := b.Context()
	for name, subj := range map[string]string{"IN": "in.>", "OUT": "out.>"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Duplicates: time.Hour,
			AllowBatchPublish: allowBatch}); err != nil {
			b.Fatal(err)
		}
	}
	const window = 256
	if _, err := js.CreateOrUpdateConsumer(ctx, "IN", jetstream.ConsumerConfig{
		Durable: "sum", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: window,
	}); err != nil {
		b.Fatal(err)
	}
	keys := []string{"a", "b", "c", "d"}
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
	r, err := pipeline.New(pipeline.Config{Name: "sum", Stream: "IN", Consumer: "sum", Batch: window},
		newSummer(), pipeline.Deps{JS: rjs, Log: discard, Registry: prometheus.NewRegistry()})
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
		info, err := st.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if info.State.Msgs >= uint64(n) {
			break
		}
		time.Sleep(2 * time.Millisecond) // polling the count
	}
	elapsed, used := time.Since(start), cpuNow()-cpu
	cancel()
	<-done
	return pass{float64(n) / elapsed.Seconds(), float64(used.Microseconds()) / float64(n)}
}

func middle(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
