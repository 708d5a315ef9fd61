package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/datatest"
	"cryptostream/features"
	"cryptostream/ingest"
	"cryptostream/natstest"
	"cryptostream/pipeline"
	"cryptostream/predictor"
	"cryptostream/streams"
)

// clusterDays is the first days of real minutes of each recorded pair:
// Kraken's BTC/USD (with its minutes that had no trade missing) and
// Binance's BTC/USDT and ETH/USDT.
func clusterDays(t testing.TB, days int) [][]streams.Candle {
	t.Helper()
	files := []struct{ name, symbol string }{
		{datatest.KrakenBTCUSD1m, "BTC/USD"},
		{"binance_BTCUSDT_1m_2025-05_08.csv", "BTC/USDT"},
		{"binance_ETHUSDT_1m_2025-05_08.csv", "ETH/USDT"},
	}
	var out [][]streams.Candle
	for _, f := range files {
		r, err := os.Open(datatest.Path(t, f.name))
		if err != nil {
			t.Fatal(err)
		}
		s, err := ingest.ReadFile(f.name, r, f.symbol, streams.Interval1m, time.Now(), func(e *ingest.BadRowError) { t.Errorf("%v", e) })
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		var day []streams.Candle
		for _, c := range s.Candles {
			if c.Start.Sub(s.Candles[0].Start) >= time.Duration(days)*24*time.Hour {
				break
			}
			day = append(day, c)
		}
		out = append(out, day)
	}
	return out
}

// clusterWorker is one instance of a worker on its own connection to the
// cluster. Its bus records every output publish in the ledger and refuses
// them once the instance is killed, as a crashed process publishes
// nothing.
type clusterWorker struct {
	name, stage string
	l           *ledger
	nc          *nats.Conn
	reg         *prometheus.Registry
	cancel      context.CancelFunc
	done        chan error

	mu     sync.Mutex // orders a kill against a publish
	killed bool
}

// workerJS is a worker's bus.
type workerJS struct {
	jetstream.JetStream
	w *clusterWorker
}

var errKilled = errors.New("test: instance killed")

func (j workerJS) record(subject string) error {
	j.w.mu.Lock()
	defer j.w.mu.Unlock()
	if j.w.killed {
		return errKilled
	}
	if root, _, ok := strings.Cut(subject, "."); ok && (root == "features" || root == "predictions") {
		j.w.l.add(j.w.name, j.w.stage+"/"+subject[strings.LastIndexByte(subject, '.')+1:], "step", 0)
	}
	return nil
}

func (j workerJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if err := j.record(m.Subject); err != nil {
		return nil, err
	}
	return j.JetStream.PublishMsgAsync(m, opts...)
}

func (j workerJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if err := j.record(m.Subject); err != nil {
		return nil, err
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

func (w *clusterWorker) onOwner(p string, owned bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.killed {
		return // a crashed process tells nothing
	}
	w.l.add(w.name, w.stage+"/"+p, map[bool]string{true: "own", false: "release"}[owned], 0)
}

// clusterLog is a worker's logger: nothing, or with PIPELINE_TEST_LOG set
// its debug log on stderr (not t.Log, which panics once the test is over
// and a worker still drains), to find what the owners did in a failed run.
func clusterLog(name string) *slog.Logger {
	if os.Getenv("PIPELINE_TEST_LOG") == "" {
		return discard
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("instance", name)
}

func startClusterWorker(t testing.TB, urls, stage, name string, l *ledger) *clusterWorker {
	t.Helper()
	nc, js := natstest.ConnectURL(t, urls)
	reg := prometheus.NewRegistry()
	w := &clusterWorker{name: name, stage: stage, l: l, nc: nc, reg: reg, done: make(chan error, 1)}
	bus := workerJS{JetStream: js, w: w}
	var run func(context.Context) error
	switch stage {
	case "features":
		f, err := features.New(features.Config{Spec: features.DefaultSpec(), Partitioned: true},
			features.Deps{JS: bus, Log: clusterLog(name), Registry: reg, Instance: name, OnOwner: w.onOwner})
		if err != nil {
			t.Fatal(err)
		}
		run = f.Run
	case "predictor":
		p, err := predictor.New(predictor.Config{Partitioned: true},
			predictor.Deps{JS: bus, Log: clusterLog(name), Registry: reg, Instance: name, OnOwner: w.onOwner})
		if err != nil {
			t.Fatal(err)
		}
		run = p.Run
	}
	ctx, cancel := context.WithCancel(t.Context())
	w.cancel = cancel
	go func() { w.done <- run(ctx) }()
	t.Cleanup(w.stop)
	return w
}

func (w *clusterWorker) stop() {
	if w.cancel == nil {
		return
	}
	w.cancel()
	<-w.done
	w.cancel = nil
}

// crash makes the instance die as a crashed process does; stop then
// lets its goroutines end.
func (w *clusterWorker) crash(parts []string) {
	w.mu.Lock()
	w.killed = true
	for _, p := range parts {
		if w.l.owners(p)[w.name] {
			w.l.add(w.name, p, "release", 0)
		}
	}
	w.mu.Unlock()
	w.nc.Close()
}

// output is one output read back: its subject, msg-id, the candle start
// it is for, and when the stream stored it.
type output struct {
	subject, id string
	start       time.Time
	at          time.Time
	msg         pipeline.Msg
}

// readStream reads every message of stream, one get at a time, each
// tried again when it fails while the cluster elects a leader.
func readStream(t testing.TB, js jetstream.JetStream, stream string, start func([]byte) time.Time) []output {
	t.Helper()
	var st jetstream.Stream
	var info *jetstream.StreamInfo
	natstest.WaitFor(t, 2*time.Minute, stream+"'s state", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var err error
		if st, err = js.Stream(ctx, stream); err == nil {
			info, err = st.Info(ctx)
		}
		return err == nil
	})
	out := make([]output, 0, info.State.Msgs)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		var m *jetstream.RawStreamMsg
		var err error
		natstest.WaitFor(t, 2*time.Minute, fmt.Sprintf("%s message %d", stream, seq), func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			m, err = st.GetMsg(ctx, seq)
			return err == nil || errors.Is(err, jetstream.ErrMsgNotFound)
		})
		if err != nil || streams.IsFenceSubject(m.Subject) {
			continue // a deleted message, were there one, or an owner marker
		}
		o := output{subject: m.Subject, id: m.Header.Get(jetstream.MsgIDHeader), at: m.Time,
			msg: pipeline.Msg{Stream: stream, Subject: m.Subject, Seq: m.Sequence, Time: m.Time, Data: m.Data}}
		if start != nil {
			o.start = start(m.Data)
		}
		out = append(out, o)
	}
	return out
}

func candleStart(b []byte) time.Time {
	c, err := streams.Decode[streams.Candle](b)
	if err != nil {
		return time.Time{}
	}
	return c.Start
}

func vectorStart(b []byte) time.Time {
	v, err := streams.Decode[streams.FeatureVector](b)
	if err != nil {
		return time.Time{}
	}
	return v.Start
}

func predictionStart(b []byte) time.Time {
	p, err := streams.Decode[streams.Prediction](b)
	if err != nil {
		return time.Time{}
	}
	return p.Start
}

// settledCount is count on a cluster, where a call may time out while
// leaders are elected.
func settledCount(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	var n uint64
	natstest.WaitFor(t, 2*time.Minute, stream+"'s state", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		n, err = streams.DataMsgs(ctx, st)
		return err == nil
	})
	return n
}

// perSymbol is the candle starts of outputs by symbol token, in stream
// order.
func perSymbol(s []output) map[string][]time.Time {
	out := map[string][]time.Time{}
	for _, x := range s {
		tok := x.subject[strings.LastIndexByte(x.subject, '.')+1:]
		out[tok] = append(out[tok], x.start)
	}
	return out
}

// TestClusterFailover runs the partitioned chain, two features and two
// predictor instances, on three clustered servers with R3 streams, over a
// day of real minutes of three pairs published at a steady pace. While it
// runs, the server leading MARKET is stopped, and then one instance of
// each worker is killed. At the end every candle, feature vector and
// prediction is stored once, in per-symbol order, exactly the vectors a
// replay of the stored candles gives; each partition had one owner at a
// time, and its stall is reported from the stored timestamps.
func TestClusterFailover(t *testing.T) {
	servers, urls := natstest.Cluster(t, 3)
	_, js := natstest.ConnectURL(t, urls)
	ctx := t.Context()
	var lastErr error
	natstest.WaitFor(t, 2*time.Minute, "the topology on the cluster", func() bool {
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		// The meta leader may be elected before every peer has caught
		// up; creating a stream then fails for a while.
		lastErr = streams.Ensure(ectx, js, streams.Declare(3))
		return lastErr == nil
	})

	day := clusterDays(t, 1)
	var total int
	var parts []string
	for _, d := range day {
		total += len(d)
		for _, stage := range []string{"features", "predictor"} {
			parts = append(parts, stage+"/"+streams.CandleSubject(streams.Interval1m, d[0].Symbol)[len("market.candle.1m."):])
		}
	}
	// Every lease write as the servers pass it on, for the report's
	// breakdown of a takeover: a core subscription sees each write when
	// it is made, where a watch lags while its consumer is rebuilt.
	renewals := &leaseWrites{last: map[string][]leaseWrite{}}
	lnc, _ := natstest.ConnectURL(t, urls)
	if _, err := lnc.Subscribe("$KV."+streams.BucketLeases+".>", renewals.add); err != nil {
		t.Fatal(err)
	}
	l := &ledger{}
	workers := map[string][]*clusterWorker{}
	for _, stage := range []string{"features", "predictor"} {
		for i := 1; i <= 2; i++ {
			workers[stage] = append(workers[stage], startClusterWorker(t, urls, stage, fmt.Sprintf("%s-%d", stage, i), l))
		}
	}

	// The candles interleaved by series, each publish awaited, which
	// paces them at the cluster's speed; a publish that fails (the
	// stream's leader lost) goes again with the same msg-id.
	var sent atomic.Int64
	var retried atomic.Int64
	published := make(chan struct{})
	// The publisher waits at a third for the node loss, and at two
	// thirds for the kills, so that each fault lands mid-stream.
	nodeLost, killed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; ; i++ {
			more := false
			for _, d := range day {
				if i >= len(d) {
					continue
				}
				more = true
				c := d[i]
				c.Trace = streams.Trace{}.Stamp("ingest", time.Now())
				for {
					pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := streams.Publish(pctx, js, &c)
					cancel()
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						return
					}
					retried.Add(1)
				}
				switch sent.Add(1) {
				case int64(total / 3):
					<-nodeLost
				case int64(2 * total / 3):
					<-killed
				}
			}
			if !more {
				return
			}
		}
	}()
	// A cluster that elects leaders answers slowly for a while: a count
	// that fails is the last one known.
	last := map[string]uint64{}
	msgs := func(stream string) uint64 {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if st, err := js.Stream(ictx, stream); err == nil {
			if n, err := streams.DataMsgs(ictx, st); err == nil {
				last[stream] = n
			}
		}
		return last[stream]
	}
	predictions := func() uint64 { return msgs(streams.StreamPredictions) }
	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.2fs %s", time.Since(t0).Seconds(), what) }

	// Both instances of each worker hold a share before anything fails.
	natstest.WaitProgress(t, 2*time.Minute, "each instance owns partitions", func() (bool, string) {
		var p []string
		ok := true
		for _, ws := range workers {
			for _, w := range ws {
				k := l.ownedBy(w.name, parts)
				p = append(p, fmt.Sprint(k))
				ok = ok && k > 0
			}
		}
		return ok && predictions() > 0, strings.Join(p, "/") + fmt.Sprintf(" %d", predictions())
	})
	phase("each instance owns partitions")
	natstest.WaitProgress(t, 2*time.Minute, "a third of the day published", func() (bool, string) {
		return sent.Load() >= int64(total/3), fmt.Sprint(sent.Load())
	})

	// Stop the server that leads MARKET.
	lost := natstest.StreamLeader(t, js, servers, streams.StreamMarket)
	leader := lost.Name()
	nodeAt := time.Now()
	lost.Shutdown()
	lost.WaitForShutdown()
	phase("stopped " + leader + ", MARKET's leader")
	close(nodeLost)
	before := predictions()
	natstest.WaitProgress(t, 2*time.Minute, "predictions after the node loss", func() (bool, string) {
		p := predictions()
		return p > before+100, fmt.Sprint(p)
	})
	natstest.WaitProgress(t, 2*time.Minute, "two thirds of the day published", func() (bool, string) {
		return sent.Load() >= int64(2*total/3), fmt.Sprint(sent.Load())
	})

	// Kill the second instance of each worker.
	warmBefore, takeBefore := map[string][2]float64{}, map[string][2]float64{}
	for stage, ws := range workers {
		warmBefore[stage] = histogramSum(t, ws[0].reg, "cryptostream_pipeline_warmup_seconds")
		takeBefore[stage] = histogramSum(t, ws[0].reg, "cryptostream_pipeline_takeover_seconds")
	}
	killAt := time.Now()
	for _, ws := range workers {
		ws[1].crash(parts)
	}
	phase("killed an instance of each worker")
	close(killed)
	for _, ws := range workers {
		ws[1].stop()
	}
	<-published
	phase("every candle published")

	// Every vector a replay of the stored candles gives, and a
	// prediction of each.
	candles := readStream(t, js, streams.StreamMarket, candleStart)
	if len(candles) != total {
		t.Fatalf("MARKET holds %d candles, %d published", len(candles), total)
	}
	wantVectors := replayVectors(t, js)
	t.Cleanup(func() {
		if t.Failed() {
			diagnoseOutputs(t, js, l, wantVectors)
		}
	})
	natstest.WaitProgress(t, 2*time.Minute, "every prediction", func() (bool, string) {
		p, f := predictions(), msgs(streams.StreamFeatures)
		return f >= uint64(len(wantVectors)) && p >= f, fmt.Sprint(f, "/", p, " of ", len(wantVectors))
	})
	vectors := readStream(t, js, streams.StreamFeatures, vectorStart)
	preds := readStream(t, js, streams.StreamPredictions, predictionStart)
	for name, got := range map[string][]output{"candles": candles, "vectors": vectors, "predictions": preds} {
		seen := map[string]bool{}
		for _, s := range got {
			if seen[s.id] {
				t.Errorf("%s: %s stored twice", name, s.id)
			}
			seen[s.id] = true
		}
	}
	want := perSymbol(wantVectors)
	for name, got := range map[string]map[string][]time.Time{"vectors": perSymbol(vectors), "predictions": perSymbol(preds)} {
		for tok, w := range want {
			if !slices.EqualFunc(got[tok], w, time.Time.Equal) {
				t.Errorf("%s of %s: %d stored, want the %d of the replay in order", name, tok, len(got[tok]), len(w))
			}
		}
	}
	checkOneOwner(t, l, parts)

	// The stall of each partition: the longest an input waited, from
	// when its stream stored it to when its output was stored, for the
	// inputs stored after the node loss and before the kills ("node"),
	// and after the kills ("kill"), beside the median wait of the whole
	// run. A partition the kills moved has its stall split in two:
	// "detect", from the kill to the survivor's taking its lease (the
	// lease TTL), and "resume", from then to its first output stored.
	storedAt := map[string]time.Time{}
	for _, in := range slices.Concat(candles, vectors) {
		storedAt[in.subject[strings.LastIndexByte(in.subject, '.')+1:]+"@"+in.start.String()+"@"+strings.SplitN(in.subject, ".", 2)[0]] = in.at
	}
	// A partition that runs behind shows its backlog in every wait; the
	// longest gap between two of its outputs stored one after the other
	// is the time it produced nothing, backlog or not.
	var nodeMax, killMax, detectMax, resumeMax, nodeGapMax, killGapMax time.Duration
	var behindMax, leftMax, lateMax, catchMax time.Duration
	for _, out := range []struct {
		stage, input string
		s            []output
	}{{"features", "market", vectors}, {"predictor", "features", preds}} {
		waits := map[string][]time.Duration{}
		node, kill := map[string]time.Duration{}, map[string]time.Duration{}
		firstAfter := map[string][]time.Time{}
		waitAt := map[string][]time.Duration{} // the wait of each output, beside firstAfter
		nodeGap, killGap := map[string]time.Duration{}, map[string]time.Duration{}
		for _, x := range out.s {
			tok := x.subject[strings.LastIndexByte(x.subject, '.')+1:]
			if prev := firstAfter[tok]; len(prev) > 0 {
				last := prev[len(prev)-1]
				// A gap counts for the fault before its end.
				switch gap := x.at.Sub(last); {
				case x.at.After(killAt):
					killGap[tok] = max(killGap[tok], gap)
				case x.at.After(nodeAt):
					nodeGap[tok] = max(nodeGap[tok], gap)
				}
			}
			in, ok := storedAt[tok+"@"+x.start.String()+"@"+out.input]
			if !ok {
				t.Errorf("%s: no input stored for %s", out.stage, x.id)
				continue
			}
			w := x.at.Sub(in)
			waits[tok] = append(waits[tok], w)
			switch {
			case in.After(killAt):
				kill[tok] = max(kill[tok], w)
			case in.After(nodeAt):
				node[tok] = max(node[tok], w)
			}
			firstAfter[tok] = append(firstAfter[tok], x.at)
			waitAt[tok] = append(waitAt[tok], w)
		}
		for tok, ws := range waits {
			slices.Sort(ws)
			nodeMax, killMax = max(nodeMax, node[tok]), max(killMax, kill[tok])
			nodeGapMax, killGapMax = max(nodeGapMax, nodeGap[tok]), max(killGapMax, killGap[tok])
			moved := "not moved by the kills"
			l.mu.Lock()
			// The lease phases are those of the killed instance's lease:
			// a partition a survivor held at the kill and took again (its
			// own fence shut) has none.
			killed, held := workers[out.stage][1].name, false
			for _, e := range l.events {
				if e.partition == out.stage+"/"+tok && e.instance == killed && e.at.Before(killAt) && e.kind != "step" {
					held = e.kind == "own"
				}
			}
			for _, e := range l.events {
				if e.partition == out.stage+"/"+tok && e.kind == "own" && e.at.After(killAt) {
					var renewed time.Time
					if held {
						renewed = renewals.lastBefore(out.stage+".owner."+tok, killed, e.at)
					}
					b := takeoverPhases(firstAfter[tok], waitAt[tok], ws[len(ws)/2], killAt, e.at, renewed)
					moved = fmt.Sprintf("taken by %s: detect %.2fs, resume %.2fs; %s", e.instance, e.at.Sub(killAt).Seconds(), b.resume.Seconds(), b)
					detectMax, resumeMax = max(detectMax, e.at.Sub(killAt)), max(resumeMax, b.resume)
					behindMax, leftMax, lateMax, catchMax = max(behindMax, b.behind), max(leftMax, b.left), max(lateMax, b.late), max(catchMax, b.catchUp)
					break
				}
			}
			l.mu.Unlock()
			t.Logf("%s/%s: longest wait node %.2fs, kill %.2fs (median of the run %.3fs); longest output gap node %.2fs, kill %.2fs; %s",
				out.stage, tok, node[tok].Seconds(), kill[tok].Seconds(), ws[len(ws)/2].Seconds(), nodeGap[tok].Seconds(), killGap[tok].Seconds(), moved)
		}
	}
	expiries := 0.0
	for _, ws := range workers {
		for _, w := range ws {
			expiries += counterSum(t, w.reg, "cryptostream_pipeline_lease_expiries_total")
		}
	}
	t.Logf("%d candles, %d publishes retried during the node loss; the kills %.2fs after the node loss", total, retried.Load(), killAt.Sub(nodeAt).Seconds())
	t.Logf("stall: node %.2fs, kill %.2fs (detect %.2fs, resume %.2fs); output gap: node %.2fs, kill %.2fs; %v lease expiries",
		nodeMax.Seconds(), killMax.Seconds(), detectMax.Seconds(), resumeMax.Seconds(), nodeGapMax.Seconds(), killGapMax.Seconds(), expiries)
	t.Logf("phases of the moved partitions (each the longest): behind %.2fs, lease left %.2fs, taken late %.2fs, resume %.2fs, catch-up %.2fs",
		behindMax.Seconds(), leftMax.Seconds(), lateMax.Seconds(), resumeMax.Seconds(), catchMax.Seconds())
	// Of a resume, the takeovers' waits for what the dead owner held in
	// flight, and the warm-ups: what the survivors spent warming series
	// after the kill (every runner of a partition shares its instance's
	// stage, so a warm-up that waits holds the others up too).
	for _, stage := range []string{"features", "predictor"} {
		after := histogramSum(t, workers[stage][0].reg, "cryptostream_pipeline_warmup_seconds")
		took := histogramSum(t, workers[stage][0].reg, "cryptostream_pipeline_takeover_seconds")
		t.Logf("%s: the survivor after the kill: %.0f takeovers waiting %.2fs in all for inputs in flight; %.0f warm-ups, %.2fs in all", stage,
			took[0]-takeBefore[stage][0], took[1]-takeBefore[stage][1], after[0]-warmBefore[stage][0], after[1]-warmBefore[stage][1])
	}
}

// histogramSum is the count and the sum of a histogram's series in reg.
func histogramSum(t *testing.T, reg *prometheus.Registry, name string) [2]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out [2]float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				out[0] += float64(m.GetHistogram().GetSampleCount())
				out[1] += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// leaseWrite is one write of a lease or member key as the test saw it go
// by: the instance that wrote it, and when.
type leaseWrite struct {
	instance string
	at       time.Time
}

// leaseWrites records the writes of the leases bucket by key.
type leaseWrites struct {
	mu   sync.Mutex
	last map[string][]leaseWrite
}

func (w *leaseWrites) add(m *nats.Msg) {
	key := strings.TrimPrefix(m.Subject, "$KV."+streams.BucketLeases+".")
	w.mu.Lock()
	w.last[key] = append(w.last[key], leaseWrite{string(m.Data), time.Now()})
	w.mu.Unlock()
}

// lastBefore is when instance last wrote key before at.
func (w *leaseWrites) lastBefore(key, instance string, at time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	for _, x := range w.last[key] {
		if x.instance == instance && x.at.Before(at) {
			last = x.at
		}
	}
	return last
}

// phases is where the stall of a partition moved by the kill went:
// behind, how far it ran behind at the kill (the wait of its last output
// before); left, what its dead owner's last renewal still had of the
// lease TTL at the kill; late, how long after the lease ran out the
// survivor took it (its view's lag, the round); resume, from the take to
// its first output (reset, fence claims, warm-up); catchUp, from then
// until an output's wait is back near the run's median (the backlog).
type phases struct{ behind, left, late, resume, catchUp time.Duration }

func (p phases) String() string {
	return fmt.Sprintf("behind %.2fs + lease left %.2fs + taken late %.2fs + resume %.2fs + catch-up %.2fs",
		p.behind.Seconds(), p.left.Seconds(), p.late.Seconds(), p.resume.Seconds(), p.catchUp.Seconds())
}

// takeoverPhases splits a moved partition's stall; outs and waits are its
// outputs' store times and waits in order, taken the take's time, and
// renewed the dead owner's last renewal (zero when none was seen).
func takeoverPhases(outs []time.Time, waits []time.Duration, median time.Duration, killAt, taken, renewed time.Time) phases {
	var p phases
	for i, at := range outs {
		if at.Before(killAt) {
			p.behind = waits[i]
		}
	}
	if !renewed.IsZero() {
		expiry := renewed.Add(pipeline.DefaultLeaseTTL)
		p.left, p.late = expiry.Sub(killAt), taken.Sub(expiry)
	}
	caught := max(2*median, 500*time.Millisecond)
	first := -1
	for i, at := range outs {
		if !at.After(taken) {
			continue
		}
		if first < 0 {
			first = i
			p.resume = at.Sub(taken)
		}
		if waits[i] <= caught {
			p.catchUp = at.Sub(outs[first])
			break
		}
	}
	return p
}

// diagnoseOutputs logs, for a failed run, the vectors and predictions
// that differ from the replay's (missing or extra, by series and candle
// start), and the ledger's events of their partitions.
func diagnoseOutputs(t *testing.T, js jetstream.JetStream, l *ledger, want []output) {
	vectors := readStream(t, js, streams.StreamFeatures, vectorStart)
	preds := readStream(t, js, streams.StreamPredictions, predictionStart)
	key := func(o output) string {
		return o.subject[strings.LastIndexByte(o.subject, '.')+1:] + "@" + o.start.UTC().Format(time.RFC3339)
	}
	count := func(s []output) map[string]int {
		m := map[string]int{}
		for _, o := range s {
			m[key(o)]++
		}
		return m
	}
	w := count(want)
	for name, got := range map[string][]output{"vectors": vectors, "predictions": preds} {
		g := count(got)
		for _, o := range got {
			if g[key(o)] != w[key(o)] {
				t.Logf("diagnose: %s: %s stored %d times, the replay has %d (id %s, stored at %s, seq %d)",
					name, key(o), g[key(o)], w[key(o)], o.id, o.at.Format("15:04:05.000"), o.msg.Seq)
			}
		}
		for k, n := range w {
			if g[k] < n {
				t.Logf("diagnose: %s: %s missing (%d stored, the replay has %d)", name, k, g[k], n)
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.kind != "step" {
			t.Logf("diagnose: ledger %s %s %s %s", e.at.Format("15:04:05.000"), e.instance, e.kind, e.partition)
		}
	}
}

// counterSum is the sum of a counter's series in reg, 0 when it has none.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// replayVectors is what the features stage makes of MARKET as stored,
// replayed without NATS.
func replayVectors(t *testing.T, js jetstream.JetStream) []output {
	t.Helper()
	var msgs []pipeline.Msg
	for _, o := range readStream(t, js, streams.StreamMarket, nil) {
		msgs = append(msgs, o.msg)
	}
	v, err := features.NewVectors(features.DefaultSpec(), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var out []output
	for o, err := range pipeline.Replay(t.Context(), v, pipeline.Msgs(msgs), pipeline.ReplayConfig{History: pipeline.MemoryHistory(msgs)}) {
		if err != nil {
			t.Fatal(err)
		}
		fv := o.Event.(*streams.FeatureVector)
		out = append(out, output{subject: o.Event.Subject(), id: o.Event.MsgID(), start: fv.Start})
	}
	return out
}
