package features

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/ops"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// Stage is the trace stage the worker stamps.
const Stage = "features"

// Config is the worker's configuration.
type Config struct {
	Spec Spec
	// Consumer is the durable on MARKET; empty means streams.ConsumerFeatures.
	Consumer string
	// PublishTimeout bounds waiting for a batch's PubAcks.
	PublishTimeout time.Duration
	// Partitioned shares the symbols with the stage's other instances,
	// one consumer per symbol (streams.Partitioned), instead of one
	// active instance on Consumer for all of them.
	Partitioned bool
}

// Deps are the worker's collaborators.
type Deps struct {
	JS       pipeline.JetStream
	Log      *slog.Logger
	Registry prometheus.Registerer
	// Now is the clock for trace stamps; time.Now when nil.
	Now func() time.Time
	// Instance and OnOwner are pipeline.Deps', for a partitioned stage.
	Instance string
	OnOwner  func(partition string, owned bool)
}

// Worker runs the Vectors stage on MARKET, publishing to FEATURES.
type Worker struct {
	runner *pipeline.Runner
}

// New validates cfg and builds the worker; it does no I/O.
func New(cfg Config, deps Deps) (*Worker, error) {
	if deps.JS == nil || deps.Log == nil || deps.Registry == nil {
		return nil, errors.New("features: JS, Log and Registry are required")
	}
	if cfg.Consumer == "" {
		cfg.Consumer = streams.ConsumerFeatures
	}
	v, err := NewVectors(cfg.Spec, deps.Now, deps.Registry)
	if err != nil {
		return nil, err
	}
	pcfg := pipeline.Config{Name: Stage, Stream: streams.StreamMarket, Consumer: cfg.Consumer, Pinned: true, PublishTimeout: cfg.PublishTimeout}
	if cfg.Partitioned {
		p, _ := streams.Declare(1).Partition(streams.ConsumerFeatures)
		pcfg.Partitioned = &p
	}
	r, err := pipeline.New(pcfg, v, pipeline.Deps{JS: deps.JS, Log: deps.Log.With("worker", "features"), Registry: deps.Registry,
		Instance: deps.Instance, OnOwner: deps.OnOwner})
	if err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	return &Worker{runner: r}, nil
}

// Run consumes until ctx ends, then drains: candles already fetched are
// handled and acked before Run returns.
func (w *Worker) Run(ctx context.Context) error { return w.runner.Run(ctx) }

// Vectors is the features stage: closed candles in, one vector per candle
// out, a rolling window per series. The worker runs it on MARKET; the
// backtest replays it with pipeline.Replay.
type Vectors struct {
	calc    *Calculator
	now     func() time.Time
	candles *prometheus.CounterVec
	rebuild prometheus.Counter
	latency prometheus.Observer
	series  map[string]*Series
	// outcomes are candles' children by outcome, looked up once each
	// rather than on every candle.
	outcomes map[Outcome]prometheus.Counter
	// dec reads the candles that come as JSON (a runner's), with no
	// allocation for the shape streams.Encode writes; the runner calls
	// Warm and Step from one goroutine at a time.
	dec streams.CandleDecoder
	// hist is the history the runner warms from, kept to warm a series
	// again when an input lands past candles it never stepped; warmedAt
	// is, per series, the sequence of the input it was last warmed at.
	hist     pipeline.History
	warmedAt map[string]uint64
}

// candle is m's candle: its Value when a stage before handed one over,
// else its JSON, decoded as pipeline.Decode would.
func (v *Vectors) candle(m pipeline.Msg) (streams.Candle, error) {
	if c, ok := m.Value.(*streams.Candle); ok && c != nil {
		return pipeline.Decode[streams.Candle](m)
	}
	return v.dec.Decode(m.Data)
}

func (v *Vectors) counted(o Outcome) prometheus.Counter {
	c := v.outcomes[o]
	if c == nil {
		c = v.candles.WithLabelValues(string(o))
		v.outcomes[o] = c
	}
	return c
}

// NewVectors builds the stage; now stamps the traces (time.Now when nil)
// and reg takes its metrics.
func NewVectors(spec Spec, now func() time.Time, reg prometheus.Registerer) (*Vectors, error) {
	calc, err := NewCalculator(spec)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	f := promauto.With(reg)
	return &Vectors{
		calc: calc, now: now,
		candles: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_features_candles_total",
			Help: "Candles handled by the features worker, by outcome (computed, warmup, duplicate, late, too_old, invalid).",
		}, []string{"outcome"}),
		rebuild: f.NewCounter(prometheus.CounterOpts{
			Name: "cryptostream_features_rebuilds_total",
			Help: "Per-symbol windows rebuilt from MARKET (start, failover, after a failed publish, or past candles the window had not stepped).",
		}),
		latency:  ops.PipelineLatency(reg).WithLabelValues(Stage),
		series:   map[string]*Series{},
		outcomes: map[Outcome]prometheus.Counter{},
		warmedAt: map[string]uint64{},
	}, nil
}

// Key implements pipeline.Stage: one window per candle subject.
func (v *Vectors) Key(m pipeline.Msg) string { return m.Subject }

// Warm implements pipeline.Stage: the window holds the candles stored
// before first, as an uninterrupted run would when first arrives.
func (v *Vectors) Warm(ctx context.Context, h pipeline.History, key string, first pipeline.Msg) error {
	v.rebuild.Inc()
	s, err := v.history(ctx, h, key, first.Seq)
	if err != nil {
		return err
	}
	v.series[key] = s
	v.hist, v.warmedAt[key] = h, first.Seq
	return nil
}

// history is key's window built from the candles stored before seq.
func (v *Vectors) history(ctx context.Context, h pipeline.History, key string, seq uint64) (*Series, error) {
	// Twice what the window needs, so duplicates stored in MARKET do not
	// leave it short.
	msgs, err := h.Tail(ctx, streams.StreamMarket, key, 2*v.calc.Spec().Need(), seq)
	if err != nil {
		return nil, fmt.Errorf("features: rebuild %s: %w", key, err)
	}
	s := NewSeries(v.calc)
	for _, m := range msgs {
		c, err := v.candle(m)
		if err != nil {
			continue // rejected when it was first delivered
		}
		s.Add(c, m.Seq)
	}
	return s, nil
}

// Reset implements pipeline.Stage.
func (v *Vectors) Reset(key string) {
	delete(v.series, key)
	delete(v.warmedAt, key)
}

// skips says whether c leaves grid points empty after s's newest candle.
func skips(s *Series, c streams.Candle) bool {
	last, ok := s.Last()
	iv := c.Interval.Duration()
	return ok && iv > 0 && c.Start.Sub(last.Start) > iv
}

// Step implements pipeline.Stage: the vector at m's candle, if the window
// covers the lookback. A candle older than the window is rejected; a
// duplicate or a late one is skipped.
func (v *Vectors) Step(ctx context.Context, m pipeline.Msg) ([]streams.Event, error) {
	c, err := v.candle(m)
	if err != nil {
		v.candles.WithLabelValues("invalid").Inc()
		return nil, fmt.Errorf("features: %w", err)
	}
	s := v.series[m.Subject]
	if s == nil {
		// Replay without a warm-up history, or a key the runner did
		// not warm: start empty, as at the start of the stream.
		s = NewSeries(v.calc)
		v.series[m.Subject] = s
	}
	if v.hist != nil && v.warmedAt[m.Subject] != m.Seq && skips(s, c) && pipeline.StoredBetween(ctx, v.hist, streams.StreamMarket, m.Subject, s.lastSeq, m.Seq) {
		// The runner steps a series in stream order, but not every
		// stored candle: after a takeover the first input it holds may
		// be one delivered again, with the candles after it already
		// handled (acked) and so never stepped here. The window would
		// hold empty points where MARKET has candles (TestEndToEnd's
		// vector over 67 candles where the replay held 78), so a gap is
		// checked against the history; a real gap in the market costs
		// one direct get (pipeline.StoredBetween), not a read of the window.
		hs, err := v.history(ctx, v.hist, m.Subject, m.Seq)
		if err != nil {
			return nil, err
		}
		v.warmedAt[m.Subject] = m.Seq
		// A history that holds nothing newer (a real gap, or a replay's
		// history of what came before its range) leaves s as it is.
		if hl, ok := hs.Last(); ok && hl.Start.After(s.last.Start) {
			v.rebuild.Inc()
			v.series[m.Subject], s = hs, hs
		}
	}
	vec, outcome := s.Add(c, m.Seq)
	v.counted(outcome).Inc()
	switch outcome {
	case Computed:
	case TooOld:
		return nil, streams.Permanent(fmt.Errorf("features: candle %s older than the window of %s", c.Start.Format(time.RFC3339), m.Subject))
	default:
		return nil, nil
	}
	now := v.now()
	out := &vectorOut{vec: vec}
	out.vec.Trace = c.Trace.StampIn(out.hops[:], Stage, now)
	if _, live := c.Trace.At("ingest"); live {
		v.latency.Observe(now.Sub(c.End()).Seconds())
	}
	out.evs[0] = &out.vec
	return out.evs[:], nil
}

// vectorOut is a step's vector, its trace and the slice returning it, in
// one allocation. Two hops are a live candle's trace with this stage's
// (ingest, features), and keep the block at the 256-byte size class the
// vector and its separate trace took between them.
type vectorOut struct {
	vec  streams.FeatureVector
	evs  [1]streams.Event
	hops [2]streams.Hop
}
