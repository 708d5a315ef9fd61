package notifier_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/notifier"
	"cryptostream/streams"
)

var (
	stretchFrom = time.Date(2023, 3, 2, 22, 0, 0, 0, time.UTC)
	stretchTo   = time.Date(2023, 3, 3, 4, 0, 0, 0, time.UTC)
)

func stretchCandles(t *testing.T) []streams.Candle {
	t.Helper()
	var out []streams.Candle
	for _, c := range datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3000) {
		if !c.Start.Before(stretchFrom) && c.Start.Before(stretchTo) {
			out = append(out, c)
		}
	}
	return out
}

func (b *bus) track(t *testing.T, sym string) {
	t.Helper()
	kv, err := b.js.KeyValue(t.Context(), streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(streams.Asset{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: sym, AddedAt: time.Now()})
	if _, err := kv.Put(t.Context(), streams.AssetKey(sym), raw); err != nil {
		t.Fatal(err)
	}
}

// worker runs a notifier worker until the returned stop is called and
// returns its registry.
func (b *bus) worker(t *testing.T, cfg notifier.Config) (stop func(), reg *prometheus.Registry) {
	t.Helper()
	return b.workerOn(t, b.js, cfg, false)
}

// workerOn is worker on a connection of its own; with dies, the worker's
// connection will be killed under it and its error is expected.
func (b *bus) workerOn(t *testing.T, js jetstream.JetStream, cfg notifier.Config, dies bool) (stop func(), reg *prometheus.Registry) {
	t.Helper()
	rules, assets := workerBuckets(t, js)
	reg = prometheus.NewRegistry()
	w, err := notifier.New(cfg, notifier.Deps{JS: js, Rules: rules, Assets: assets, Records: b.records, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	return run(t, w, dies), reg
}

// workerBuckets opens the buckets a notifier worker reads on js.
func workerBuckets(t *testing.T, js jetstream.JetStream) (rules, assets jetstream.KeyValue) {
	t.Helper()
	rules, err := js.KeyValue(t.Context(), streams.BucketAlertRules)
	if err != nil {
		t.Fatal(err)
	}
	assets, err = js.KeyValue(t.Context(), streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	return rules, assets
}

// run runs w until the returned stop is called, or the test ends; w's
// error fails the test unless dies says its connection is killed under it.
func run(t *testing.T, w interface{ Run(context.Context) error }, dies bool) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !dies {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitHandled waits until the durable consumer has acked everything up
// to seq.
func (b *bus) waitHandled(t testing.TB, stream, consumer string, seq uint64) {
	t.Helper()
	for {
		var floor uint64
		c, err := b.js.Consumer(t.Context(), stream, consumer)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			// A companion's partition consumer (PREDICTIONS, TICKS) is
			// made when its partition is first taken, which is after
			// the owner is reported: not there yet is not handled yet.
		case err != nil:
			t.Fatal(err)
		default:
			info, err := c.Info(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if info.AckFloor.Stream >= seq {
				return
			}
			floor = info.AckFloor.Stream
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s stuck at %d of %d (consumer lookup: %v)", consumer, floor, seq, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (b *bus) publishAll(t *testing.T, cs []streams.Candle) (seqs []uint64) {
	t.Helper()
	for i := range cs {
		ack, err := streams.Publish(t.Context(), b.js, &cs[i])
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	return seqs
}

type stored struct {
	streams.Alert
	seq uint64
}

func (b *bus) alerts(t *testing.T) []stored {
	t.Helper()
	msgs, err := streams.ReadRange(t.Context(), b.js, streams.StreamAlerts, "alerts.>", 1, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for _, m := range msgs {
		a, err := streams.Decode[streams.Alert](m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, stored{a, m.Seq})
	}
	return out
}

func fired(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "cryptostream_notifier_alerts_fired_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// aliceMove creates alice's 0.7% move rule on BTC/USD: the one rule that
// the restart and the kill tests both fire across a stopped worker.
func (b *bus) aliceMove(t *testing.T) notifier.Rule {
	t.Helper()
	mine, err := b.rules.Create(t.Context(), notifier.Rule{Owner: "alice", OwnerID: "id-alice", Kind: notifier.KindPercentMove, Symbol: "BTC/USD", Interval: streams.Interval1m,
		Direction: notifier.Either, Threshold: 0.7, Window: notifier.Duration(15 * time.Minute), Cooldown: notifier.Duration(30 * time.Minute),
		Hysteresis: 0.3, Trigger: notifier.TriggerOncePerClose})
	if err != nil {
		t.Fatal(err)
	}
	return mine
}

// The done-when test of issue 12: a real stretch with a sharp move through
// the worker, stopped and restarted between two firings of one rule (in
// its cooldown, with its leg disarmed): every alert fires once, none is
// missed, each names the candle it came from, and the preview of the rule
// over the same candles answers the same firings.
func TestWorkerReplaysRealMoveAcrossARestart(t *testing.T) {
	b := newBus(t)
	b.track(t, "BTC/USD")
	mine := b.aliceMove(t)
	cfg := notifier.Config{System: notifier.SystemConfig{MovePercent: 2, MoveWindow: 15 * time.Minute, MoveCooldown: 30 * time.Minute}}
	cs := stretchCandles(t)
	cut := slices.IndexFunc(cs, func(c streams.Candle) bool { return c.Start.Equal(time.Date(2023, 3, 3, 1, 24, 0, 0, time.UTC)) })
	seqs := b.publishAll(t, cs[:cut+1])
	stop, reg1 := b.worker(t, cfg)
	b.waitHandled(t, streams.StreamMarket, streams.ConsumerNotifierMarket, seqs[len(seqs)-1])
	stop()
	if got := b.alerts(t); len(got) != 1 {
		t.Fatalf("before the restart: %+v", got)
	}
	seqs = append(seqs, b.publishAll(t, cs[cut+1:])...)
	_, reg2 := b.worker(t, cfg)
	b.waitHandled(t, streams.StreamMarket, streams.ConsumerNotifierMarket, seqs[len(seqs)-1])

	seqOf := func(hhmm string) uint64 {
		end, _ := time.Parse("2006-01-02 15:04", "2023-03-03 "+hhmm)
		for i, c := range cs {
			if c.End().Equal(end.UTC()) {
				return seqs[i]
			}
		}
		t.Fatalf("no candle ends at %s", hhmm)
		return 0
	}
	want := []struct {
		rule, at string
		from, to float64
	}{
		{mine.ID, "01:21", 23414.1, 23170.8},
		{"system-move-BTC-USD", "01:29", 23420.5, 22872.3},
		{mine.ID, "01:58", 22291.2, 22128.7},
	}
	got := b.alerts(t)
	if len(got) != len(want) {
		t.Fatalf("alerts %+v, want %d", got, len(want))
	}
	for i, w := range want {
		a := got[i]
		if a.RuleID != w.rule || a.At.Format("15:04") != w.at || a.Values["from"] != w.from || a.Values["to"] != w.to ||
			a.Stream != streams.StreamMarket || a.Seq != seqOf(w.at) || a.Message == "" {
			t.Errorf("alert %d = %+v, want %+v", i, a.Alert, w)
		}
		if _, ok := a.Trace.At(notifier.Stage); !ok {
			t.Errorf("alert %d has no notifier hop", i)
		}
	}
	if got[1].Owner != "" || got[0].Owner != "id-alice" || got[1].Message != "BTC/USD fell 2.3% in 15 min to 22,872" {
		t.Errorf("owners or message: %+v", got[1].Alert)
	}
	// Each fired once: not merely deduplicated by the stream, never
	// produced twice.
	if n := fired(t, reg1) + fired(t, reg2); n != 3 {
		t.Errorf("the two workers fired %v alerts, want 3", n)
	}
	// The preview of alice's rule over the same candles.
	var in []notifier.Input
	for i := range cs {
		in = append(in, notifier.Input{Candle: &cs[i], Source: notifier.Source{Stream: streams.StreamMarket, Seq: seqs[i]}})
	}
	pre := notifier.Preview(notifier.EngineConfig{}, []notifier.Rule{mine}, in)
	if len(pre) != 2 {
		t.Fatalf("preview %+v", pre)
	}
	for i, p := range pre {
		live := got[2*i].Alert
		live.Trace = nil
		if fmt.Sprint(p) != fmt.Sprint(live) {
			t.Errorf("preview %+v\nlive    %+v", p, live)
		}
	}
}

// 20 failed logins in a minute for one user fire the system security
// rule once, for admins only.
func TestWorkerSecurityRule(t *testing.T) {
	b := newBus(t)
	b.worker(t, notifier.Config{System: notifier.SystemConfig{FailedLogins: 20, FailedLoginsWindow: time.Minute}})
	var last uint64
	for i := range 25 {
		ev := &streams.AuditEvent{ID: fmt.Sprint("e", i), Action: "auth.login", Actor: "alice", Target: "alice", Outcome: "failed",
			Remote: fmt.Sprintf("10.0.0.%d", i), At: at0.Add(time.Duration(i) * time.Second)}
		ack, err := streams.Publish(t.Context(), b.js, ev)
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	b.waitHandled(t, streams.StreamAudit, streams.ConsumerNotifierAudit, last)
	got := b.alerts(t)
	if len(got) != 1 || got[0].Key != "alice" || got[0].Owner != streams.AlertAudienceAdmins || got[0].Kind != "failed_logins" || got[0].Stream != streams.StreamAudit {
		t.Fatalf("alerts %+v", got)
	}
}

// A worker whose connection dies mid-stream (a crash: nothing drained,
// nothing unpinned, a batch unacked) is replaced by another that resumes
// from the stream: the alerts are exactly those of an uninterrupted run,
// each stored once. The consumer's ack wait and pin timeout are shortened
// so that the takeover happens in seconds rather than minutes.
func TestWorkerKilledMidStream(t *testing.T) {
	b := newBus(t)
	b.track(t, "BTC/USD")
	mine := b.aliceMove(t)
	spec, _ := streams.Declare(1).Consumer(streams.ConsumerNotifierMarket)
	spec.Config.AckWait, spec.Config.BackOff, spec.Config.PinnedTTL = time.Second, nil, time.Second
	if _, err := b.js.CreateOrUpdateConsumer(t.Context(), spec.Stream, spec.Config); err != nil {
		t.Fatal(err)
	}
	cfg := notifier.Config{System: notifier.SystemConfig{MovePercent: 2, MoveWindow: 15 * time.Minute, MoveCooldown: 30 * time.Minute}}
	cs := stretchCandles(t)
	// The first worker handles up to 01:24 (inside the cooldown of alice's
	// first alert, her rule disarmed), then dies as the next minutes
	// arrive, likely with some unacked.
	cut := slices.IndexFunc(cs, func(c streams.Candle) bool { return c.Start.Equal(time.Date(2023, 3, 3, 1, 24, 0, 0, time.UTC)) })
	seqs := b.publishAll(t, cs[:cut+1])
	nc1, js1 := natstest.ConnectURL(t, b.url)
	b.workerOn(t, js1, cfg, true)
	b.waitHandled(t, streams.StreamMarket, streams.ConsumerNotifierMarket, seqs[len(seqs)-1])
	seqs = append(seqs, b.publishAll(t, cs[cut+1:cut+4])...)
	nc1.Close()
	seqs = append(seqs, b.publishAll(t, cs[cut+4:])...)
	_, js2 := natstest.ConnectURL(t, b.url)
	b.workerOn(t, js2, cfg, false)
	b.waitHandled(t, streams.StreamMarket, streams.ConsumerNotifierMarket, seqs[len(seqs)-1])
	var got []string
	for _, a := range b.alerts(t) {
		got = append(got, a.RuleID+"@"+a.At.Format("15:04"))
	}
	want := []string{mine.ID + "@01:21", "system-move-BTC-USD@01:29", mine.ID + "@01:58"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("alerts %v, want %v", got, want)
	}
}

// Prediction rules across a restart: model-error windows, predicted-move
// legs and forecast-failing flags are rebuilt from the PREDICTIONS stream,
// so the worker stopped midway and started again fires exactly the alerts
// of the preview over the same predictions, each once: a forecast still
// failing when the worker restarts does not fire again.
func TestWorkerPredictionRulesAcrossARestart(t *testing.T) {
	b := newBus(t)
	b.track(t, "BTC/USD")
	var mine []notifier.Rule
	for _, r := range []notifier.Rule{
		{Kind: notifier.KindModelError, Threshold: 0, Count: 10, Hysteresis: 0.1, Cooldown: notifier.Duration(20 * time.Minute)},
		{Kind: notifier.KindPredictedMove, Direction: notifier.Either, Threshold: 0.3, Hysteresis: 0.2},
		{Kind: notifier.KindForecastFailing, Horizon: notifier.Duration(15 * time.Minute)},
	} {
		r.Owner, r.OwnerID, r.Symbol, r.Interval, r.Trigger = "alice", "id-alice", "BTC/USD", streams.Interval1m, notifier.TriggerOncePerClose
		got, err := b.rules.Create(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, got)
	}
	ps := datatest.ReversalPredictions(stretchCandles(t))
	// Failing across the restart (the cut is at 01:00), and again later.
	datatest.Failing(ps, [2]time.Time{stretchFrom.Add(90 * time.Minute), stretchFrom.Add(210 * time.Minute)},
		[2]time.Time{stretchFrom.Add(270 * time.Minute), stretchFrom.Add(300 * time.Minute)})
	var in []notifier.Input
	var seqs []uint64
	publish := func(ps []streams.Prediction) {
		for i := range ps {
			ack, err := streams.Publish(t.Context(), b.js, &ps[i])
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, ack.Sequence)
			in = append(in, notifier.Input{Prediction: &ps[i], Source: notifier.Source{Stream: streams.StreamPredictions, Seq: ack.Sequence}})
		}
	}
	cut := len(ps) / 2
	publish(ps[:cut])
	stop, reg1 := b.worker(t, notifier.Config{})
	b.waitHandled(t, streams.StreamPredictions, streams.ConsumerNotifierPrediction, seqs[len(seqs)-1])
	stop()
	before := len(b.alerts(t))
	publish(ps[cut:])
	_, reg2 := b.worker(t, notifier.Config{})
	b.waitHandled(t, streams.StreamPredictions, streams.ConsumerNotifierPrediction, seqs[len(seqs)-1])

	want := notifier.Preview(notifier.EngineConfig{}, mine, in)
	kinds := map[string]int{}
	for _, a := range want {
		kinds[a.Kind]++
	}
	if kinds["model_error"] == 0 || kinds["predicted_move"] < 2 || kinds["forecast_failing"] != 2 || before == 0 || before == len(want) {
		t.Fatalf("the stretch does not test much: preview %v, %d of %d before the restart", kinds, before, len(want))
	}
	got := b.alerts(t)
	if len(got) != len(want) {
		t.Fatalf("%d alerts, preview %d", len(got), len(want))
	}
	for i := range want {
		live := got[i].Alert
		live.Trace = nil
		if fmt.Sprint(want[i]) != fmt.Sprint(live) {
			t.Errorf("preview %+v\nlive    %+v", want[i], live)
		}
	}
	if n := fired(t, reg1) + fired(t, reg2); n != float64(len(want)) {
		t.Errorf("the two workers fired %v alerts, want %d", n, len(want))
	}
}
