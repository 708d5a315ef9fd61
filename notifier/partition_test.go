package notifier_test

import (
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

// owners records which instance holds which symbol, from OnOwner.
type owners struct {
	mu  sync.Mutex
	now map[string]string // partition -> instance
	// took counts the partitions each instance has taken.
	took map[string][]string
}

func (o *owners) on(instance string) func(string, bool) {
	return func(part string, owned bool) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if owned {
			o.now[part] = instance
			o.took[instance] = append(o.took[instance], part)
		} else if o.now[part] == instance {
			delete(o.now, part)
		}
	}
}

func (o *owners) of(instance string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for p, i := range o.now {
		if i == instance {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// partitionedWorker runs a partitioned notifier instance on js until the
// test ends; with dies, its connection is closed under it.
func (b *bus) partitionedWorker(t *testing.T, js jetstream.JetStream, id string, cfg notifier.Config, o *owners, dies bool) *prometheus.Registry {
	t.Helper()
	rules, assets := workerBuckets(t, js)
	reg := prometheus.NewRegistry()
	cfg.Partitioned = true
	w, err := notifier.New(cfg, notifier.Deps{JS: js, Rules: rules, Assets: assets, Metrics: reg, Instance: id, OnOwner: o.on(id)})
	if err != nil {
		t.Fatal(err)
	}
	run(t, w, dies)
	return reg
}

// TestPartitionedWorkers: two notifier instances share the symbols, each
// symbol's closes and predictions (and ticks) evaluated by the one that
// owns it. Over a real stretch copied onto four symbols, with a system
// move rule and a predicted-move rule on each, every
// alert is fired exactly once (the stream holds the preview's alerts, and
// the instances' fired counts add up to them: not one produced twice and
// deduplicated); a security rule on AUDIT fires once with both running;
// then one instance dies mid-stream and the other takes its symbols over
// and goes on, the stream holding exactly the preview's alerts at the end.
func TestPartitionedWorkers(t *testing.T) {
	b := newBus(t)
	syms := []string{"BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"}
	for _, s := range syms {
		b.track(t, s)
	}
	cfg := notifier.Config{
		System:   notifier.SystemConfig{MovePercent: 0.7, MoveWindow: 15 * time.Minute, MoveCooldown: 30 * time.Minute, FailedLogins: 20, FailedLoginsWindow: time.Minute},
		LeaseTTL: 2 * time.Second,
	}
	cs := stretchCandles(t)
	cut := slices.IndexFunc(cs, func(c streams.Candle) bool { return c.Start.Equal(time.Date(2023, 3, 3, 1, 24, 0, 0, time.UTC)) })
	// Each symbol's predictions (of its copy of the stretch) feed a
	// predicted-move rule: the PREDICTIONS partitions that follow the
	// MARKET ones. prediction i-1 is made at candle i's close.
	all := slices.Clone(notifier.SystemRules(cfg.System, syms))
	preds := map[string][]streams.Prediction{}
	for _, s := range syms {
		own := slices.Clone(cs)
		for i := range own {
			own[i].Symbol = s
		}
		preds[s] = datatest.ReversalPredictions(own)
		r, err := b.rules.Create(t.Context(), notifier.Rule{Owner: "alice", OwnerID: "id-alice", Kind: notifier.KindPredictedMove, Symbol: s,
			Interval: streams.Interval1m, Direction: notifier.Either, Threshold: 0.3, Hysteresis: 0.2, Trigger: notifier.TriggerOncePerClose})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, r)
	}
	var inputs []notifier.Input
	type position struct{ stream, consumer string }
	last := map[position]uint64{} // each partition consumer's last seq published
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			for _, s := range syms {
				c := cs[i]
				c.Symbol = s
				ack, err := streams.Publish(t.Context(), b.js, &c)
				if err != nil {
					t.Fatal(err)
				}
				inputs = append(inputs, notifier.Input{Candle: &c, Source: notifier.Source{Stream: streams.StreamMarket, Seq: ack.Sequence}})
				last[position{streams.StreamMarket, streams.ConsumerNotifierMarket + "-" + streams.AssetKey(s)}] = ack.Sequence
				if i == 0 {
					continue
				}
				p := &preds[s][i-1]
				if ack, err = streams.Publish(t.Context(), b.js, p); err != nil {
					t.Fatal(err)
				}
				inputs = append(inputs, notifier.Input{Prediction: p, Source: notifier.Source{Stream: streams.StreamPredictions, Seq: ack.Sequence}})
				last[position{streams.StreamPredictions, streams.ConsumerNotifierPrediction + "-" + streams.AssetKey(s)}] = ack.Sequence
			}
		}
	}
	handled := func() {
		t.Helper()
		for p, seq := range last {
			b.waitHandled(t, p.stream, p.consumer, seq)
		}
	}
	want := func() []string {
		var out []string
		for _, a := range notifier.Preview(cfg.Engine, all, inputs) {
			out = append(out, a.ID)
		}
		slices.Sort(out)
		return out
	}
	stored := func() []string {
		var out []string
		for _, a := range b.alerts(t) {
			if a.Stream != streams.StreamAudit {
				out = append(out, a.ID)
			}
		}
		slices.Sort(out)
		return out
	}

	publish(0, cut+1)
	o := &owners{now: map[string]string{}, took: map[string][]string{}}
	nc1, js1 := natstest.ConnectURL(t, b.url)
	_, js2 := natstest.ConnectURL(t, b.url)
	reg1 := b.partitionedWorker(t, js1, "one", cfg, o, true)
	reg2 := b.partitionedWorker(t, js2, "two", cfg, o, false)
	natstest.WaitFor(t, 2*time.Minute, "the symbols shared two by two", func() bool { return len(o.of("one")) == 2 && len(o.of("two")) == 2 })
	handled()
	w1 := want()
	kinds := map[string]bool{}
	for _, a := range b.alerts(t) {
		kinds[a.Kind] = true
	}
	if len(w1) < 2 || !kinds["percent_move"] || !kinds["predicted_move"] {
		t.Fatalf("the stretch fires %v before the cut: too few to tell", w1)
	}
	if got := stored(); fmt.Sprint(got) != fmt.Sprint(w1) {
		t.Fatalf("alerts with two instances %v, want %v", got, w1)
	}
	if n := fired(t, reg1) + fired(t, reg2); n != float64(len(w1)) {
		t.Fatalf("the two instances fired %v alerts, want %d: one was produced twice", n, len(w1))
	}
	// Each symbol's companions were taken with it: its TICKS and
	// PREDICTIONS partition consumers exist.
	for _, s := range syms {
		for _, c := range []struct{ stream, name string }{
			{streams.StreamTicks, streams.ConsumerNotifierTicks}, {streams.StreamPredictions, streams.ConsumerNotifierPrediction},
		} {
			if _, err := b.js.Consumer(t.Context(), c.stream, c.name+"-"+streams.AssetKey(s)); err != nil {
				t.Errorf("%s's %s partition: %v", s, c.name, err)
			}
		}
	}

	// The security rules have no symbol: the pinned audit consumer gives
	// them to one instance.
	var auditSeq uint64
	for i := range 25 {
		ev := &streams.AuditEvent{ID: fmt.Sprint("e", i), Action: "auth.login", Actor: "alice", Target: "alice", Outcome: "failed",
			Remote: fmt.Sprintf("10.0.0.%d", i), At: at0.Add(time.Duration(i) * time.Second)}
		ack, err := streams.Publish(t.Context(), b.js, ev)
		if err != nil {
			t.Fatal(err)
		}
		auditSeq = ack.Sequence
	}
	b.waitHandled(t, streams.StreamAudit, streams.ConsumerNotifierAudit, auditSeq)
	security := 0
	for _, a := range b.alerts(t) {
		if a.Stream == streams.StreamAudit {
			security++
		}
	}
	if n := fired(t, reg1) + fired(t, reg2) - float64(len(w1)); security != 1 || n != 1 {
		t.Fatalf("failed logins fired %d alerts (%v counted), want 1", security, n)
	}

	// Instance one dies as the next minutes arrive; two takes its symbols.
	lost := o.of("one")
	publish(cut+1, cut+4)
	nc1.Close()
	publish(cut+4, len(cs))
	natstest.WaitFor(t, 2*time.Minute, "instance two owning every symbol", func() bool { return len(o.of("two")) == len(syms) })
	handled()
	if got, w := stored(), want(); len(w) <= len(w1) || fmt.Sprint(got) != fmt.Sprint(w) {
		t.Fatalf("alerts after the takeover %v, want %v", got, w)
	}
	// The ticks followed too: a running-candle rule on each symbol, put
	// in now, fires once per symbol from TICKS, on the instance that now
	// owns them all. Ticks keep coming until every symbol's has fired
	// (the rule reaches the instance through its watch of the bucket).
	ruleIDs := map[string]string{}
	for _, s := range syms {
		r, err := b.rules.Create(t.Context(), notifier.Rule{Owner: "bob", OwnerID: "id-bob", Kind: notifier.KindPercentMove, Symbol: s,
			Interval: streams.Interval1m, Direction: notifier.Up, Threshold: 5, Window: notifier.Duration(15 * time.Minute), Trigger: notifier.TriggerOncePerCandle})
		if err != nil {
			t.Fatal(err)
		}
		ruleIDs[r.ID] = s
	}
	running := cs[len(cs)-1].Start.Add(time.Minute)
	price := cs[len(cs)-1].Close * 1.1
	fromTicks := func() map[string]int {
		got := map[string]int{}
		for _, a := range b.alerts(t) {
			if sym, ok := ruleIDs[a.RuleID]; ok && a.Stream == streams.StreamTicks && a.Symbol == sym {
				got[sym]++
			}
		}
		return got
	}
	before := fired(t, reg2)
	for i := 0; len(fromTicks()) < len(syms); i++ {
		if i == 5000 {
			t.Fatalf("tick alerts %v after %d ticks each", fromTicks(), i)
		}
		for _, s := range syms {
			tk := &streams.Tick{Schema: streams.Schema{V: streams.SchemaVersion}, ReceivedAt: running.Add(30 * time.Second),
				Candle: streams.Candle{Symbol: s, Interval: streams.Interval1m, Start: running, Open: price, High: price, Low: price, Close: price,
					Volume: float64(i + 1), Trades: int64(i + 1), Quality: streams.QualityLive}}
			if _, err := streams.Publish(t.Context(), b.js, tk); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond) // pacing, not a bound
	}
	for sym, n := range fromTicks() {
		if n != 1 {
			t.Errorf("%s: %d alerts from its running candle, want 1", sym, n)
		}
	}
	if n := fired(t, reg2) - before; n != float64(len(syms)) {
		t.Errorf("instance two fired %v alerts on ticks, want %d", n, len(syms))
	}

	o.mu.Lock()
	took := slices.Clone(o.took["two"])
	o.mu.Unlock()
	for _, p := range lost {
		if !slices.Contains(took, p) {
			t.Errorf("instance two never took %s from the dead one (took %v)", p, took)
		}
	}
}
