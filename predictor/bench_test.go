package predictor_test

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/features"
	"cryptostream/features/featurestest"
	"cryptostream/natstest"
	"cryptostream/pipeline"
	"cryptostream/predictor"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// benchModel is a champion over every default feature, so the benchmark
// pays for a full dot product.
func benchModel() streams.ModelRecord {
	names := features.DefaultSpec().Names()
	coef := make([]float64, len(names)+1)
	for i := range coef {
		coef[i] = 1e-4 * float64(i%5-2)
	}
	return streams.ModelRecord{ID: "bench", Symbol: symbol, Interval: streams.Interval1m, Horizon: 1,
		Features: names, Coefficients: coef, ResidualStd: 0.001}
}

// BenchmarkFeaturesPredict is the pure per-candle cost: window update,
// features, forecast, scoring. incremental is the live path (features.Series
// stepping its grid one candle at a time); batch is the reference it
// replaced, in the same run: the window of candles resampled and every
// statistic recomputed on each candle (featurestest.Batch).
func BenchmarkFeaturesPredict(b *testing.B) {
	type series interface {
		Add(streams.Candle, uint64) (streams.FeatureVector, features.Outcome)
	}
	for _, bb := range []struct {
		name string
		new  func(*features.Calculator) series
	}{
		{"batch", func(c *features.Calculator) series { return featurestest.NewBatch(c) }},
		{"incremental", func(c *features.Calculator) series { return features.NewSeries(c) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			candles := meanReverting(20000, 1)
			calc, err := features.NewCalculator(features.DefaultSpec())
			if err != nil {
				b.Fatal(err)
			}
			rec := benchModel()
			m, _ := trainer.FromRecord(rec)
			bound, err := m.Bind(calc.Names())
			if err != nil {
				b.Fatal(err)
			}
			series := bb.new(calc)
			scorer := predictor.NewScorer(time.Time{}, 0, nil)
			// Warm the window so every iteration computes a vector.
			for i := range 200 {
				series.Add(candles[i], uint64(i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			shift := time.Duration(0)
			for i := 0; i < b.N; i++ {
				j := 200 + i%(len(candles)-200)
				if j == 200 && i > 0 {
					// Wrap around: move the series forward in time so
					// candles keep arriving in order.
					shift += candles[len(candles)-1].Start.Sub(candles[0].Start) + time.Minute
				}
				c := candles[j]
				c.Start = c.Start.Add(shift)
				v, o := series.Add(c, uint64(i))
				if o != features.Computed {
					continue
				}
				scorer.Observe(v.Start, v.Close)
				scorer.Await(predictor.Forecast(rec, bound, v, 1.96))
			}
		})
	}
}

func embedded(b *testing.B) jetstream.JetStream {
	s := natstest.Server(b)
	_, js := natstest.Connect(b, s)
	if err := streams.Ensure(b.Context(), js, streams.Declare(1)); err != nil {
		b.Fatal(err)
	}
	return js
}

func loadCandles(b *testing.B, js jetstream.JetStream, candles []streams.Candle) {
	for i, c := range candles {
		msg, err := streams.NewMsg(&c)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			// Below the client's bound on outstanding publishes, which
			// a busy machine otherwise overruns ("stalled with too many
			// outstanding async published messages").
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async publish did not complete")
	}
}

func putChampion(b *testing.B, js jetstream.JetStream) {
	reg, err := js.KeyValue(b.Context(), streams.BucketModelRegistry)
	if err != nil {
		b.Fatal(err)
	}
	data, _ := json.Marshal(benchModel())
	if _, err := reg.Put(b.Context(), streams.ModelKey("bench"), data); err != nil {
		b.Fatal(err)
	}
	if _, err := reg.Put(b.Context(), streams.ChampionKey(streams.Interval1m, symbol), []byte("bench")); err != nil {
		b.Fatal(err)
	}
}

// startPipeline runs a features and a predictor worker until the benchmark
// ends or the returned stop is called.
func startPipeline(b *testing.B, fjs, pjs jetstream.JetStream) (stop func()) {
	ctx, cancel := context.WithCancel(b.Context())
	fw, err := features.New(features.Config{Spec: features.DefaultSpec()}, features.Deps{JS: fjs, Log: discard, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	pw, err := predictor.New(predictor.Config{}, predictor.Deps{JS: pjs, Log: discard, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { _ = fw.Run(ctx); done <- struct{}{} }()
	go func() { _ = pw.Run(ctx); done <- struct{}{} }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; <-done }) }
	b.Cleanup(stop)
	return stop
}

func streamCount(b *testing.B, js jetstream.JetStream, name string) uint64 {
	return streamState(b, js, name).Msgs
}

func streamState(b *testing.B, js jetstream.JetStream, name string) jetstream.StreamState {
	s, err := js.Stream(b.Context(), name)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	return info.State
}

// storedSize is a stream's stored bytes per message (subject, headers and
// the store's framing included).
func storedSize(b *testing.B, js jetstream.JetStream, name string) uint64 {
	st := streamState(b, js, name)
	return st.Bytes / max(st.Msgs, 1)
}

// rawConsume is the reference: n messages of size bytes already stored,
// read by a durable pull consumer with explicit acks, at the given
// MaxAckPending. It returns messages per second.
func rawConsume(b *testing.B, n, size, maxAckPending int) float64 {
	js := embedded(b)
	ctx := b.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)
	for i := range n {
		if _, err := js.PublishAsync("raw.x", payload); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	cons, err := js.CreateConsumer(ctx, "RAW", jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: maxAckPending})
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan struct{}, n)
	began := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack(); got <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	for range n {
		<-got
	}
	elapsed := time.Since(began)
	cc.Stop()
	return float64(n) / elapsed.Seconds()
}

// rawHop moves every message of stream from to stream to the way a stage
// runner does, with no application code: batches of what has arrived (up
// to StageBatch, the consumer's MaxAckPending), each message republished
// asynchronously as an out-sized payload with a msg-id, every PubAck
// awaited, then the batch acked. It stops after n messages.
func rawHop(ctx context.Context, b *testing.B, js jetstream.JetStream, from, to string, n, outSize int) {
	cons, err := js.CreateConsumer(ctx, from, jetstream.ConsumerConfig{Durable: "hop", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: streams.StageBatch})
	if err != nil {
		b.Error(err)
		return
	}
	in := make(chan jetstream.Msg, 2*streams.StageBatch)
	cc, err := cons.Consume(func(m jetstream.Msg) { in <- m }, jetstream.PullMaxMessages(streams.StageBatch))
	if err != nil {
		b.Error(err)
		return
	}
	defer cc.Stop()
	payload := make([]byte, outSize)
	subject := strings.ToLower(to) + ".x"
	batch := make([]jetstream.Msg, 0, streams.StageBatch)
	futs := make([]jetstream.PubAckFuture, 0, streams.StageBatch)
	for done := 0; done < n; {
		batch = append(batch[:0], <-in)
	fill:
		for len(batch) < streams.StageBatch {
			select {
			case m := <-in:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		futs = futs[:0]
		for _, m := range batch {
			md, _ := m.Metadata()
			out := nats.NewMsg(subject)
			out.Data = payload
			out.Header.Set(jetstream.MsgIDHeader, strconv.FormatUint(md.Sequence.Stream, 10))
			f, err := js.PublishMsgAsync(out)
			if err != nil {
				b.Error(err)
				return
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Error(err)
				return
			}
		}
		for _, m := range batch {
			_ = m.Ack()
		}
		done += len(batch)
	}
}

// rawChain is the ceiling of the features -> predictor topology: n
// messages of inSize already stored in A, moved to B (midSize) and then C
// (outSize) by two rawHops on their own connections, as the two workers
// are, from the hops' start until the last is stored in C.
func rawChain(b *testing.B, n, inSize, midSize, outSize int) pass {
	s := natstest.Server(b)
	_, js := natstest.Connect(b, s)
	ctx := b.Context()
	for _, name := range []string{"A", "B", "C"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}, Storage: jetstream.FileStorage}); err != nil {
			b.Fatal(err)
		}
	}
	payload := make([]byte, inSize)
	for i := range n {
		if _, err := js.PublishAsync("a.x", payload); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	_, js1 := natstest.Connect(b, s)
	_, js2 := natstest.Connect(b, s)
	p := begin(n)
	done := make(chan struct{}, 2)
	go func() { rawHop(ctx, b, js1, "A", "B", n, midSize); done <- struct{}{} }()
	go func() { rawHop(ctx, b, js2, "B", "C", n, outSize); done <- struct{}{} }()
	<-done
	<-done
	p = p.end()
	if logSizes.chain.CompareAndSwap(false, true) {
		b.Logf("stored per message: B %d bytes, C %d bytes", storedSize(b, js, "B"), storedSize(b, js, "C"))
	}
	return p
}

// pipelinePass: the candles already in MARKET and a champion in the
// registry, then features and predictor started on their own connections
// (as separate processes would be), until the last prediction is stored.
func pipelinePass(b *testing.B, candles []streams.Candle) pass {
	s := natstest.Server(b)
	_, js := natstest.Connect(b, s)
	top := streams.Declare(1)
	// BENCH_OUTPUTS=async: outputs one by one asynchronously, as a stream
	// without allow_batched takes them, for an A/B against the fast batch.
	if os.Getenv("BENCH_OUTPUTS") == "async" {
		for i := range top.Streams {
			top.Streams[i].AllowBatchPublish = false
		}
	}
	if err := streams.Ensure(b.Context(), js, top); err != nil {
		b.Fatal(err)
	}
	putChampion(b, js)
	loadCandles(b, js, candles)
	want := uint64(len(candles) - features.DefaultSpec().Need())
	_, fjs := natstest.Connect(b, s)
	_, pjs := natstest.Connect(b, s)
	p := begin(len(candles))
	stop := startPipeline(b, fjs, pjs)
	defer stop()
	// The raw chain knows its end for free; this poll is a stream info
	// request, so it is kept to about 200 a pass (a 5 ms poll was 3-4% of
	// the pipeline's CPU per candle), which ends a pass at most 0.5% late.
	for streamCount(b, js, streams.StreamPredictions) < want {
		time.Sleep(min(max(5*time.Millisecond, time.Since(p.began)/200), 50*time.Millisecond))
	}
	p = p.end()
	if logSizes.pipeline.CompareAndSwap(false, true) {
		b.Logf("stored per message: FEATURES %d bytes, PREDICTIONS %d bytes", storedSize(b, js, streams.StreamFeatures), storedSize(b, js, streams.StreamPredictions))
	}
	return p
}

// passCandles is the candles (or messages) of one pass: 20,000, or
// BENCH_CANDLES. A pass of 20,000 lasts about 0.6 s (the raw chain) to 1 s
// (the pipeline) on a quiet machine, short beside the bursts of a shared
// one; a longer pass trades iterations for less weight of each burst.
func passCandles(b *testing.B) int {
	n := 20000
	if v := os.Getenv("BENCH_CANDLES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= features.DefaultSpec().Need() {
			b.Fatalf("BENCH_CANDLES=%q: want a count above the window", v)
		}
	}
	return n
}

// logSizes: the stored sizes are the same every pass, and a benchmark's log
// is truncated after a few lines, which hid the passes' own figures.
var logSizes struct{ chain, pipeline atomic.Bool }

// pass is one measured run: messages per second, and the process's CPU
// time per message (the embedded server's included: it is in the same
// process).
type pass struct {
	n        int
	began    time.Time
	cpuBegan time.Duration
	mallocs  uint64
	rate     float64
	cpuPer   time.Duration
	// allocsPer is the process's heap allocations per message, the
	// embedded server's included.
	allocsPer float64
	// sysBegan and sysPer: the process's read and write system calls
	// (socket reads and writes, the file store's), per message: what
	// coalescing writes saves, whatever the machine's load.
	sysBegan uint64
	sysPer   float64
}

func begin(n int) pass {
	profileWindow(true)
	return pass{n: n, began: time.Now(), cpuBegan: cpuTime(), mallocs: mallocs(), sysBegan: ioSyscalls()}
}

// ioSyscalls is the process's read and write system calls so far
// (/proc/self/io's syscr and syscw), 0 where there is no such file.
func ioSyscalls() uint64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	var n uint64
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "syscr" || k == "syscw" {
			c, _ := strconv.ParseUint(v, 10, 64)
			n += c
		}
	}
	return n
}

// profileWindow, with BENCH_CPUPROFILE set to a file name prefix, profiles
// only the timed part of each pass (no stream setup, no loading), one file
// a pass, so that the pipeline's profile and the raw chain's compare per
// message.
func profileWindow(start bool) {
	prefix := os.Getenv("BENCH_CPUPROFILE")
	if prefix == "" {
		return
	}
	if !start {
		pprof.StopCPUProfile()
		if profileFile != nil {
			_ = profileFile.Close()
		}
		return
	}
	profiles++
	f, err := os.Create(prefix + "." + strconv.Itoa(profiles))
	if err != nil {
		return
	}
	profileFile = f
	_ = pprof.StartCPUProfile(f)
}

var (
	profiles    int
	profileFile *os.File
)

func (p pass) end() pass {
	profileWindow(false)
	p.rate = float64(p.n) / time.Since(p.began).Seconds()
	p.cpuPer = (cpuTime() - p.cpuBegan) / time.Duration(p.n)
	p.allocsPer = float64(mallocs()-p.mallocs) / float64(p.n)
	p.sysPer = float64(ioSyscalls()-p.sysBegan) / float64(p.n)
	return p
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// BenchmarkPipelineThroughput: candles per second through features ->
// predictor from a backlog (pipelinePass) against, in the same iteration,
// the raw two-hop chain with the same batching and no application code
// (the ceiling of this topology) with payloads the size of a candle, a
// vector and a prediction, and raw durable consumption of as many
// candle-sized messages.
//
// Each iteration runs the raw chain, the pipeline, then the raw chain
// again, and takes the pipeline's ratio to the mean of the two chain
// passes around it, so that a drift of the machine's load during the
// iteration cancels to first order. This replaced one chain pass a side,
// in alternating order. On the shared machine (2026-12-07, load 4-7) both
// rates swing with the other processes while their CPU per message stays
// put: chain passes of about 0.6 s ran at 9,800-35,000 msgs/s at 29-35 µs
// a message, pipeline passes of about 1 s at 11,700-32,000 candles/s at
// 52-65 µs, and single iteration ratios came out 0.52-1.56. The chain's
// passes are the shorter, so a burst of other work weighs more on one of
// them, and one chain pass beside each pipeline pass made the ratio's
// spread. The figures are medians over iterations, with the lowest and
// highest iteration ratio beside them: run it with -benchtime=5x or more.
//
// cpu_ratio is the chain's CPU per message over the pipeline's per candle,
// both pass-wide (the embedded server's included): what the throughput
// ratio comes to when the cores are the bound, and a figure that moves
// far less with the machine's load than the throughput ratio does.
func BenchmarkPipelineThroughput(b *testing.B) {
	n := passCandles(b)
	candles := meanReverting(n, 2)
	sample, _ := streams.Encode(&candles[0])
	vecSize, predSize := sizes(b, candles)
	var pipes, chains, raws, toChain, toRaw, cpuPipe, cpuChain, cpuRatio, allocPipe, allocChain, sysPipe, sysChain []float64
	for i := range b.N {
		before := rawChain(b, n, len(sample), vecSize, predSize)
		pipe := pipelinePass(b, candles)
		after := rawChain(b, n, len(sample), vecSize, predSize)
		chainRate := (before.rate + after.rate) / 2
		chainCPU := float64(before.cpuPer+after.cpuPer) / 2e3
		raw := rawConsume(b, n, len(sample), 1024)
		pipes, chains, raws = append(pipes, pipe.rate), append(chains, chainRate), append(raws, raw)
		toChain, toRaw = append(toChain, pipe.rate/chainRate), append(toRaw, pipe.rate/raw)
		cpuPipe = append(cpuPipe, float64(pipe.cpuPer)/1e3)
		cpuChain = append(cpuChain, chainCPU)
		cpuRatio = append(cpuRatio, chainCPU/cpuPipe[i])
		allocPipe, allocChain = append(allocPipe, pipe.allocsPer), append(allocChain, (before.allocsPer+after.allocsPer)/2)
		sysPipe, sysChain = append(sysPipe, pipe.sysPer), append(sysChain, (before.sysPer+after.sysPer)/2)
		b.Logf("pass %d: pipeline %.0f candles/s (%.1f µs CPU, %.0f allocs, %.1f read/write syscalls each), raw chain %.0f and %.0f msgs/s (%.1f µs, %.0f allocs, %.1f syscalls), ratio %.2f, CPU ratio %.2f; raw consume %.0f msgs/s",
			i+1, pipe.rate, cpuPipe[i], pipe.allocsPer, pipe.sysPer, before.rate, after.rate, chainCPU, allocChain[i], sysChain[i], toChain[i], cpuRatio[i], raw)
	}
	b.ReportMetric(median(pipes), "candles/s")
	b.ReportMetric(median(chains), "raw_chain_msgs/s")
	b.ReportMetric(median(raws), "raw_consume_msgs/s")
	b.ReportMetric(median(toChain), "ratio_to_raw_chain")
	b.ReportMetric(slices.Min(toChain), "ratio_min")
	b.ReportMetric(slices.Max(toChain), "ratio_max")
	b.ReportMetric(median(cpuRatio), "cpu_ratio")
	b.ReportMetric(median(toRaw), "ratio_to_raw_consume")
	b.ReportMetric(median(cpuPipe), "cpu_µs/candle")
	b.ReportMetric(median(cpuChain), "chain_cpu_µs/msg")
	b.ReportMetric(median(allocPipe), "allocs/candle")
	b.ReportMetric(median(allocChain), "chain_allocs/msg")
	b.ReportMetric(median(sysPipe), "syscalls/candle")
	b.ReportMetric(median(sysChain), "chain_syscalls/msg")
}

// sizes are the sizes of a vector's and a prediction's payloads as the
// features and predictor stages publish them (the vector in binary, the
// prediction in JSON with its horizons, intervals and trace), made by
// replaying candles through the two stages, for the raw chain's payloads.
// (The prediction of predictor.Forecast alone, which this used before,
// has no horizons: 337 bytes where the stage publishes about 2 KB.)
func sizes(b *testing.B, candles []streams.Candle) (int, int) {
	vs, ps := benchStages(b)
	in := make([]pipeline.Msg, len(candles))
	for i := range candles {
		in[i] = pipeline.Msg{Stream: streams.StreamMarket, Subject: candles[i].Subject(), Seq: uint64(i + 1), Value: &candles[i]}
	}
	vecs := published(b, vs, in)
	preds := published(b, ps, vecs)
	if len(vecs) == 0 || len(preds) == 0 {
		b.Fatal("no vector or no prediction")
	}
	return len(vecs[len(vecs)-1].Data), len(preds[len(preds)-1].Data)
}

// benchStages are a features and a predictor stage as the workers make
// them, with benchModel the champion, for replays with no NATS.
func benchStages(b testing.TB) (*features.Vectors, *predictor.Predictions) {
	reg := prometheus.NewRegistry()
	vs, err := features.NewVectors(features.DefaultSpec(), nil, reg)
	if err != nil {
		b.Fatal(err)
	}
	ps := predictor.NewPredictions(predictor.PredictionsConfig{}, nil, discard, reg)
	rec := benchModel()
	if err := ps.SetChampion(strings.TrimPrefix(streams.ChampionKey(streams.Interval1m, symbol), "champion."), &rec); err != nil {
		b.Fatal(err)
	}
	return vs, ps
}

// published replays in through stage and returns its outputs as the
// runner would publish them, as the next stage's inputs.
func published(b testing.TB, stage pipeline.Stage, in []pipeline.Msg) []pipeline.Msg {
	var outs []pipeline.Msg
	for out, err := range pipeline.Replay(b.Context(), stage, pipeline.Msgs(in), pipeline.ReplayConfig{}) {
		if err != nil {
			b.Fatal(err)
		}
		msg, err := streams.NewMsg(out.Event)
		if err != nil {
			b.Fatal(err)
		}
		outs = append(outs, pipeline.Msg{Stream: streams.StreamFeatures, Subject: msg.Subject, Seq: uint64(len(outs) + 1), Data: msg.Data})
	}
	return outs
}

// BenchmarkPublishToPrediction: one candle at a time, the time from before
// its publish to its prediction arriving on a subscription to PREDICTIONS'
// subjects.
func BenchmarkPublishToPrediction(b *testing.B) {
	const n = 1000
	candles := meanReverting(n+100, 4)
	var all []time.Duration
	for range b.N {
		s := natstest.Server(b)
		nc, js := natstest.Connect(b, s)
		if err := streams.Ensure(b.Context(), js, streams.Declare(1)); err != nil {
			b.Fatal(err)
		}
		putChampion(b, js)
		loadCandles(b, js, candles[:100])
		startPipeline(b, js, js)
		arrived := make(chan time.Time, 1)
		sub, err := nc.Subscribe(streams.PredictionSubject(streams.Interval1m, symbol), func(*nats.Msg) { arrived <- time.Now() })
		if err != nil {
			b.Fatal(err)
		}
		// The warm-up candles' predictions.
		for streamCount(b, js, streams.StreamPredictions) < uint64(100-features.DefaultSpec().Need()) {
			time.Sleep(5 * time.Millisecond)
		}
		for len(arrived) > 0 {
			<-arrived
		}
		time.Sleep(50 * time.Millisecond)
		for len(arrived) > 0 {
			<-arrived
		}
		for _, c := range candles[100:] {
			began := time.Now()
			if _, err := streams.Publish(b.Context(), js, &c); err != nil {
				b.Fatal(err)
			}
			select {
			case at := <-arrived:
				all = append(all, at.Sub(began))
			case <-time.After(30 * time.Second):
				b.Fatal("no prediction")
			}
		}
		_ = sub.Unsubscribe()
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99_ms")
}

// BenchmarkPipelineAlone runs only BenchmarkPipelineThroughput's pipeline
// pass, for a CPU or allocation profile of the chain without the raw
// references in it.
func BenchmarkPipelineAlone(b *testing.B) {
	n := passCandles(b)
	candles := meanReverting(n, 2)
	var rates, cpus, allocs, sys []float64
	for range b.N {
		p := pipelinePass(b, candles)
		b.Logf("pass: %.0f candles/s, %.1f µs CPU each", p.rate, float64(p.cpuPer)/1e3)
		rates, cpus = append(rates, p.rate), append(cpus, float64(p.cpuPer)/1e3)
		allocs, sys = append(allocs, p.allocsPer), append(sys, p.sysPer)
	}
	b.ReportMetric(median(rates), "candles/s")
	b.ReportMetric(median(cpus), "cpu_µs/candle")
	b.ReportMetric(median(allocs), "allocs/candle")
	b.ReportMetric(median(sys), "syscalls/candle")
}

// BenchmarkRawChainAlone runs only BenchmarkPipelineThroughput's raw
// two-hop chain, to profile it beside BenchmarkPipelineAlone.
func BenchmarkRawChainAlone(b *testing.B) {
	n := passCandles(b)
	candles := meanReverting(n, 2)
	sample, _ := streams.Encode(&candles[0])
	vecSize, predSize := sizes(b, candles)
	var rates, cpus, sys []float64
	for range b.N {
		p := rawChain(b, n, len(sample), vecSize, predSize)
		b.Logf("pass: %.0f msgs/s, %.1f µs CPU each", p.rate, float64(p.cpuPer)/1e3)
		rates, cpus, sys = append(rates, p.rate), append(cpus, float64(p.cpuPer)/1e3), append(sys, p.sysPer)
	}
	b.ReportMetric(median(rates), "msgs/s")
	b.ReportMetric(median(cpus), "cpu_µs/msg")
	b.ReportMetric(median(sys), "syscalls/msg")
}

// BenchmarkStagesReplay is the application's share of the chain's CPU with
// no NATS: stored candles (as bytes) through the features stage, each
// vector encoded as the runner publishes it and decoded by the predictor
// stage, each prediction encoded. One op is the whole replay of n candles,
// so that under callgrind (-test.benchtime 1x) the instruction count per
// candle is the stages' and the encodings', load-independent.
func BenchmarkStagesReplay(b *testing.B) {
	const n = 20000
	candles := meanReverting(n, 2)
	in := make([]pipeline.Msg, len(candles))
	for i := range candles {
		data, err := streams.Encode(&candles[i])
		if err != nil {
			b.Fatal(err)
		}
		in[i] = pipeline.Msg{Stream: streams.StreamMarket, Subject: candles[i].Subject(), Seq: uint64(i + 1), Data: data}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		vs, ps := benchStages(b)
		preds := published(b, ps, published(b, vs, in))
		if len(preds) < n/2 {
			b.Fatalf("%d predictions of %d candles", len(preds), n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/candle")
}
