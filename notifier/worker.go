package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"cryptostream/ops"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// Stage is the trace stage the worker stamps on an alert.
const Stage = "notifier"

// Config is the worker's configuration.
type Config struct {
	// System is the rule set from flags (no rule stored).
	System SystemConfig
	Engine EngineConfig
	// WarmBars is how many closes per series (and predictions) are
	// replayed after a start or a failover to rebuild windows, armed legs
	// and cooldowns (default a day of 1m candles).
	WarmBars int
	// Webhooks runs the webhook deliverer beside the evaluation.
	Webhooks bool
	Delivery DeliveryConfig
	// Partitioned shares the symbols with the worker's other instances
	// (pipeline's partitions, one lease per symbol): the instance that
	// owns a symbol's MARKET partition also consumes its TICKS and
	// PREDICTIONS partitions, since a symbol's rules join the three. The
	// security rules, on AUDIT, have no symbol: every instance runs the
	// pinned notifier-audit consumer and the one the server pins
	// evaluates them, another taking over when its pin lapses. Without
	// Partitioned, one instance at a time (the pinned one) evaluates
	// everything.
	Partitioned bool
	// LeaseTTL is the partitions' lease (pipeline.DefaultLeaseTTL when 0).
	LeaseTTL time.Duration
}

// Watcher is a KV bucket watched for changes.
type Watcher interface {
	WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// RulesBucket is the alert-rules bucket: the store, and a watch.
type RulesBucket interface {
	KV
	Watcher
}

// Deps are the worker's collaborators.
type Deps struct {
	JS      pipeline.JetStream
	Rules   RulesBucket
	Assets  Watcher
	Records Records // webhook-deliveries; needed with Config.Webhooks
	Log     *slog.Logger
	Metrics prometheus.Registerer
	// Now stamps the trace; time.Now when nil.
	Now func() time.Time
	// Instance and OnOwner are pipeline.Deps', for a partitioned worker.
	Instance string
	OnOwner  func(partition string, owned bool)
}

// Worker evaluates the rules over MARKET, TICKS, PREDICTIONS and AUDIT,
// each read by a stage on its own runner, and publishes every firing to
// ALERTS once (the id is rule, symbol and trigger time, the message id is
// derived from it).
type Worker struct {
	cfg   Config
	d     Deps
	log   *slog.Logger
	store *Store

	mu  sync.Mutex // the engine is fed by four runners
	eng *Engine

	spent chan spentRule
	m     workerMetrics
}

type workerMetrics struct {
	fired      *prometheus.CounterVec
	suppressed *prometheus.CounterVec
	rules      prometheus.Gauge
	badRules   prometheus.Counter
	latency    prometheus.Observer
}

type spentRule struct {
	id string
	at time.Time
}

// New builds the worker; it does no I/O.
func New(cfg Config, d Deps) (*Worker, error) {
	if d.JS == nil || d.Rules == nil || d.Assets == nil {
		return nil, errors.New("notifier: JS, the rules and the assets buckets are required")
	}
	if cfg.Webhooks && d.Records == nil {
		return nil, errors.New("notifier: webhooks need the deliveries bucket")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = prometheus.NewRegistry()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if cfg.WarmBars == 0 {
		cfg.WarmBars = 1440
	}
	f := promauto.With(d.Metrics)
	w := &Worker{
		cfg: cfg, d: d, log: d.Log.With("worker", "notifier"), store: NewStore(d.Rules, 0, nil),
		spent: make(chan spentRule, 256),
		m: workerMetrics{
			fired: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_notifier_alerts_fired_total",
				Help: "Alerts fired, by rule kind."}, []string{"kind"}),
			suppressed: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_notifier_alerts_suppressed_total",
				Help: "Firings suppressed, by reason (cooldown, once_per_candle, spent, expired, rate_cap)."}, []string{"reason"}),
			rules: f.NewGauge(prometheus.GaugeOpts{Name: "cryptostream_notifier_rules", Help: "Rules being evaluated (stored and system)."}),
			badRules: f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_notifier_rules_rejected_total",
				Help: "Stored rules that did not decode or validate and are not evaluated."}),
			latency: ops.PipelineLatency(d.Metrics).WithLabelValues(Stage),
		},
	}
	ec := cfg.Engine
	user := ec.OnSuppress
	ec.OnSuppress = func(r *Rule, reason string) {
		w.m.suppressed.WithLabelValues(reason).Inc()
		if user != nil {
			user(r, reason)
		}
	}
	w.eng = NewEngine(ec)
	return w, nil
}

// Run loads the rules, then evaluates until ctx ends. A stop while still
// starting is a clean stop.
func (w *Worker) Run(ctx context.Context) error {
	err := w.run(ctx)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

func (w *Worker) run(ctx context.Context) error {
	rules, err := w.d.Rules.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("notifier: watch rules: %w", err)
	}
	defer rules.Stop()
	assets, err := w.d.Assets.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("notifier: watch assets: %w", err)
	}
	defer assets.Stop()
	rs := &ruleSet{stored: map[string]Rule{}, symbols: map[string]string{}}
	// The first pass of each watch ends with a nil entry: until both have
	// been read, evaluating would miss rules.
	if err := w.drain(ctx, rules, assets, rs, true); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.drain(gctx, rules, assets, rs, false) })
	g.Go(func() error { w.persistSpent(gctx); return nil })
	for _, st := range w.stages() {
		deps := pipeline.Deps{JS: w.d.JS, Log: w.d.Log, Registry: w.d.Metrics}
		if st.cfg.Partitioned != nil {
			deps.Instance, deps.OnOwner = w.d.Instance, w.owner
		}
		r, err := pipeline.New(st.cfg, st.stage, deps)
		if err != nil {
			return err
		}
		g.Go(func() error { return r.Run(gctx) })
	}
	if w.cfg.Webhooks {
		cons, err := w.d.JS.Consumer(ctx, streams.StreamAlerts, streams.ConsumerNotifierWebhooks)
		if err != nil {
			return fmt.Errorf("notifier: webhooks consumer: %w", err)
		}
		dl, err := NewDeliverer(w.cfg.Delivery, DeliveryDeps{Alerts: cons, Records: w.d.Records, Rules: w.store, Metrics: w.d.Metrics, Log: w.d.Log, Now: w.d.Now})
		if err != nil {
			return err
		}
		g.Go(func() error { return dl.Run(gctx) })
	}
	return g.Wait()
}

type ruleSet struct {
	stored  map[string]Rule
	symbols map[string]string // asset key -> symbol
}

// drain applies rule and asset changes; with initial, it returns once both
// watches have delivered their current values.
func (w *Worker) drain(ctx context.Context, rules, assets jetstream.KeyWatcher, rs *ruleSet, initial bool) error {
	rulesDone, assetsDone := !initial, !initial
	for !initial || !rulesDone || !assetsDone {
		select {
		case <-ctx.Done():
			if initial {
				return ctx.Err()
			}
			return nil
		case e, ok := <-rules.Updates():
			if !ok {
				return errors.New("notifier: rules watch closed")
			}
			if e == nil {
				rulesDone = true
				break
			}
			if e.Operation() != jetstream.KeyValuePut {
				delete(rs.stored, e.Key())
				break
			}
			r, err := DecodeRule(e.Value())
			if err == nil {
				r.Normalize()
				err = r.Validate()
			}
			if err != nil {
				w.m.badRules.Inc()
				w.log.Warn("stored rule not evaluated", "key", e.Key(), "err", err)
				delete(rs.stored, e.Key())
				break
			}
			rs.stored[e.Key()] = r
		case e, ok := <-assets.Updates():
			if !ok {
				return errors.New("notifier: assets watch closed")
			}
			if e == nil {
				assetsDone = true
				break
			}
			var a streams.Asset
			if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &a) != nil || streams.ValidateSymbol(a.Symbol) != nil {
				delete(rs.symbols, e.Key())
				break
			}
			rs.symbols[e.Key()] = a.Symbol
		}
		if rulesDone && assetsDone {
			w.apply(rs)
		}
	}
	return nil
}

func (w *Worker) apply(rs *ruleSet) {
	syms := make([]string, 0, len(rs.symbols))
	for _, s := range rs.symbols {
		syms = append(syms, s)
	}
	slices.Sort(syms)
	all := SystemRules(w.cfg.System, syms)
	for _, r := range rs.stored {
		all = append(all, r)
	}
	w.mu.Lock()
	w.eng.SetRules(all)
	n := w.eng.Rules()
	w.mu.Unlock()
	w.m.rules.Set(float64(n))
}

// persistSpent marks fired once-rules in the bucket, so that a restart
// does not let them fire again even past the warm-up's reach.
func (w *Worker) persistSpent(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-w.spent:
			uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := w.store.Update(uctx, s.id, func(r *Rule) error {
				if r.FiredAt == nil {
					r.FiredAt = &s.at
				}
				return nil
			})
			cancel()
			if err != nil && !errors.Is(err, ErrRuleNotFound) {
				w.log.Warn("once rule not marked as fired", "rule_id", s.id, "err", err)
			}
		}
	}
}

type stageSpec struct {
	cfg   pipeline.Config
	stage pipeline.Stage
}

func (w *Worker) stages() []stageSpec {
	mk := func(name, stream, consumer string, kind inputKind) stageSpec {
		return stageSpec{
			cfg:   pipeline.Config{Name: name, Stream: stream, Consumer: consumer, Pinned: true, Retry: pipeline.RetryInPlace},
			stage: &stage{w: w, kind: kind},
		}
	}
	if w.cfg.Partitioned {
		top := streams.Declare(1)
		market, _ := top.Partition(streams.ConsumerNotifierMarket)
		ticks, _ := top.Partition(streams.ConsumerNotifierTicks)
		preds, _ := top.Partition(streams.ConsumerNotifierPrediction)
		m := mk("notifier-market", streams.StreamMarket, "", inCandle)
		m.cfg.Partitioned, m.cfg.LeaseTTL = &market, w.cfg.LeaseTTL
		m.cfg.With = []pipeline.Companion{
			{Name: "notifier-ticks", Partitioned: ticks, Stage: &stage{w: w, kind: inTick}},
			{Name: "notifier-predictions", Partitioned: preds, Stage: &stage{w: w, kind: inPrediction}},
		}
		return []stageSpec{m, mk("notifier-audit", streams.StreamAudit, streams.ConsumerNotifierAudit, inAudit)}
	}
	return []stageSpec{
		mk("notifier-market", streams.StreamMarket, streams.ConsumerNotifierMarket, inCandle),
		mk("notifier-ticks", streams.StreamTicks, streams.ConsumerNotifierTicks, inTick),
		mk("notifier-predictions", streams.StreamPredictions, streams.ConsumerNotifierPrediction, inPrediction),
		mk("notifier-audit", streams.StreamAudit, streams.ConsumerNotifierAudit, inAudit),
	}
}

type inputKind int

const (
	inCandle inputKind = iota
	inTick
	inPrediction
	inAudit
)

// stage is the evaluation of one stream's events. Closed candles,
// predictions and audit events are per-series state, each warmed from its
// own stream's history; ticks are evaluated against the state the closed
// candles keep.
type stage struct {
	w    *Worker
	kind inputKind
}

// Key implements pipeline.Stage.
func (s *stage) Key(m pipeline.Msg) string {
	switch s.kind {
	case inCandle, inPrediction, inAudit:
		return m.Subject
	}
	return ""
}

func decodeInput(kind inputKind, m pipeline.Msg) (Input, error) {
	in := Input{Source: Source{Stream: m.Stream, Seq: m.Seq}}
	var err error
	switch kind {
	case inCandle:
		err = decodeInto(m.Data, &in.Candle)
	case inTick:
		err = decodeInto(m.Data, &in.Tick)
	case inPrediction:
		err = decodeInto(m.Data, &in.Prediction)
	case inAudit:
		err = decodeInto(m.Data, &in.Audit)
	}
	if err != nil {
		return in, streams.Permanent(fmt.Errorf("notifier: %w", err))
	}
	return in, nil
}

// decodeInto decodes data into the one event field of an Input that its
// kind fills.
func decodeInto[T any, PT interface {
	*T
	streams.Event
}](data []byte, field **T) error {
	v, err := streams.Decode[T, PT](data)
	*field = &v
	return err
}

// Warm implements pipeline.Stage: the series' recent closes, or its
// recent predictions (for model-error windows and predicted-move legs), or
// the audit events a failed-logins window needs, replayed without firing.
func (s *stage) Warm(ctx context.Context, h pipeline.History, key string, first pipeline.Msg) error {
	w := s.w
	var inputs []Input
	switch s.kind {
	case inCandle, inPrediction:
		stream := streams.StreamMarket
		if s.kind == inPrediction {
			stream = streams.StreamPredictions
		}
		k, err := streams.ParseSeriesSubject(key)
		if err != nil {
			return nil // Step rejects it
		}
		w.mu.Lock()
		watched := w.eng.Watches(k.Symbol, k.Interval, s.kind == inPrediction)
		w.mu.Unlock()
		if !watched {
			return nil
		}
		msgs, err := h.Tail(ctx, stream, key, w.cfg.WarmBars, first.Seq)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if in, err := decodeInput(s.kind, m); err == nil {
				inputs = append(inputs, in)
			}
		}
	case inAudit:
		w.mu.Lock()
		n := w.eng.SecurityWindow()
		w.mu.Unlock()
		msgs, err := h.Tail(ctx, streams.StreamAudit, key, n, first.Seq)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if in, err := decodeInput(inAudit, m); err == nil {
				inputs = append(inputs, in)
			}
		}
	}
	w.mu.Lock()
	w.eng.Warm(inputs)
	w.mu.Unlock()
	return nil
}

// Step implements pipeline.Stage.
func (s *stage) Step(_ context.Context, m pipeline.Msg) ([]streams.Event, error) {
	in, err := decodeInput(s.kind, m)
	if err != nil {
		return nil, err
	}
	w := s.w
	w.mu.Lock()
	alerts := w.eng.Feed(in)
	var spent []spentRule
	for _, a := range alerts {
		if rs := w.eng.rules[a.RuleID]; rs != nil && rs.r.Trigger == TriggerOnce {
			spent = append(spent, spentRule{a.RuleID, a.At})
		}
	}
	w.mu.Unlock()
	if len(alerts) == 0 {
		return nil, nil
	}
	var trace streams.Trace
	switch {
	case in.Candle != nil:
		trace = in.Candle.Trace
	case in.Tick != nil:
		trace = in.Tick.Candle.Trace
	case in.Prediction != nil:
		trace = in.Prediction.Trace
	}
	now := w.d.Now()
	// From the close of a live candle to its alerts, as the other stages
	// measure theirs; imported history would only measure its age.
	if in.Candle != nil {
		if _, live := trace.At("ingest"); live {
			w.m.latency.Observe(now.Sub(in.Candle.End()).Seconds())
		}
	}
	out := make([]streams.Event, len(alerts))
	for i := range alerts {
		alerts[i].Trace = trace.Stamp(Stage, now)
		w.m.fired.WithLabelValues(alerts[i].Kind).Inc()
		out[i] = &alerts[i]
	}
	for _, sp := range spent {
		select {
		case w.spent <- sp:
		default: // the warm-up and the msg-id still cover it
		}
	}
	return out, nil
}

// Reset implements pipeline.Stage.
func (s *stage) Reset(key string) {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	switch s.kind {
	case inCandle:
		if k, err := streams.ParseSeriesSubject(key); err == nil {
			w.eng.ResetSeries(k.Symbol, k.Interval)
		}
	case inPrediction:
		if k, err := streams.ParseSeriesSubject(key); err == nil {
			w.eng.ResetForecasts(k.Symbol, k.Interval)
		}
	case inAudit:
		w.eng.ResetSecurity()
	}
}

// owner is told when this instance takes or gives up a symbol. Either
// way the symbol's state goes: a symbol given up is another's to
// evaluate, and one taken is warmed afresh from the streams by its new
// runners, which a leftover from an earlier spell of ownership would
// otherwise be added to.
func (w *Worker) owner(part string, owned bool) {
	if sym, err := streams.SymbolFromToken(part); err == nil {
		w.mu.Lock()
		w.eng.ResetSymbol(sym)
		w.mu.Unlock()
	}
	if w.d.OnOwner != nil {
		w.d.OnOwner(part, owned)
	}
}
