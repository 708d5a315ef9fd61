package features

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/ops"
	"cryptostream/streams"
)

// Stage is the trace stage the worker stamps.
const Stage = "features"

// JetStream is what the worker needs from the bus.
type JetStream interface {
	streams.StreamLookup
	streams.Publisher
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
}

// Config is the worker's configuration.
type Config struct {
	Spec Spec
	// Consumer is the durable on MARKET; empty means streams.ConsumerFeatures.
	Consumer string
	// PublishTimeout bounds one publish attempt.
	PublishTimeout time.Duration
}

// Deps are the worker's collaborators.
type Deps struct {
	JS       JetStream
	Log      *slog.Logger
	Registry prometheus.Registerer
	// Now is the clock for trace stamps; time.Now when nil.
	Now func() time.Time
}

// Worker consumes closed candles from MARKET and publishes one vector per
// candle to FEATURES.
type Worker struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	calc    *Calculator
	candles *prometheus.CounterVec
	rebuild prometheus.Counter
	latency prometheus.Observer
	lag     prometheus.Gauge

	mu     sync.Mutex // one handler at a time: series are per-symbol state
	series map[string]*Series
	pin    string
}

// New validates cfg and builds the worker; it does no I/O.
func New(cfg Config, deps Deps) (*Worker, error) {
	if deps.JS == nil || deps.Log == nil || deps.Registry == nil {
		return nil, errors.New("features: JS, Log and Registry are required")
	}
	if cfg.Consumer == "" {
		cfg.Consumer = streams.ConsumerFeatures
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	calc, err := NewCalculator(cfg.Spec)
	if err != nil {
		return nil, err
	}
	f := promauto.With(deps.Registry)
	return &Worker{
		cfg: cfg, deps: deps, log: deps.Log.With("worker", "features"), calc: calc,
		candles: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_features_candles_total",
			Help: "Candles handled by the features worker, by outcome (computed, warmup, duplicate, late, too_old, invalid).",
		}, []string{"outcome"}),
		rebuild: f.NewCounter(prometheus.CounterOpts{
			Name: "cryptostream_features_rebuilds_total",
			Help: "Per-symbol windows rebuilt from MARKET (start, failover, or after a failed publish).",
		}),
		latency: ops.PipelineLatency(deps.Registry).WithLabelValues(Stage),
		lag: f.NewGauge(prometheus.GaugeOpts{
			Name: "cryptostream_features_consumer_backlog_messages",
			Help: "Candles in MARKET not yet handled by the features consumer (pending plus unacked).",
		}),
		series: map[string]*Series{},
	}, nil
}

// Run consumes until ctx ends, then drains: candles already fetched are
// handled and acked before Run returns.
func (w *Worker) Run(ctx context.Context) error {
	err := w.run(ctx)
	if err != nil && ctx.Err() != nil {
		// Stopped while still starting: a clean stop, not a failure.
		return nil
	}
	return err
}

func (w *Worker) run(ctx context.Context) error {
	cons, err := w.deps.JS.Consumer(ctx, streams.StreamMarket, w.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("features: consumer %s: %w", w.cfg.Consumer, err)
	}
	// Handlers run on a context that outlives ctx, so that draining can
	// finish the candles already fetched instead of failing them.
	hctx := context.WithoutCancel(ctx)
	handler := streams.Acker(hctx, w.log, func(hc context.Context, msg jetstream.Msg) error {
		return w.Handle(hc, ctx.Done(), msg)
	}, nil)
	cc, err := cons.Consume(handler,
		jetstream.PullPriorityGroup(streams.PriorityGroup),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			w.log.Debug("consume", "err", err)
		}))
	if err != nil {
		return fmt.Errorf("features: consume: %w", err)
	}
	go streams.WatchLag(ctx, cons, 15*time.Second, w.lag.Set)
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	w.unpin(ctx)
	return nil
}

// unpin hands the consumer over at once after a clean stop, instead of
// leaving a restarted or standby instance waiting for the pin to expire.
func (w *Worker) unpin(ctx context.Context) {
	w.mu.Lock()
	pinned := w.pin != ""
	w.mu.Unlock()
	if !pinned {
		return // a standby: unpinning would unseat the active instance
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := streams.Unpin(uctx, w.deps.JS, streams.StreamMarket, w.cfg.Consumer); err != nil {
		w.log.Warn("unpin after stop", "err", err)
	}
}

// Handle processes one MARKET message. It keeps per-symbol order by never
// asking for a redelivery of a candle it could not publish the vector of:
// it retries in place (telling the server it is still working) until the
// publish succeeds or stop closes. A redelivery would arrive after newer
// candles and be skipped as late.
func (w *Worker) Handle(ctx context.Context, stop <-chan struct{}, msg jetstream.Msg) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The pin id changes when the server hands the consumer to another
	// client: whatever windows this instance holds may have been
	// advanced by the other one meanwhile.
	if pin := msg.Headers().Get("Nats-Pin-Id"); pin != "" && pin != w.pin {
		if w.pin != "" {
			w.log.Info("pin changed, rebuilding windows", "from", w.pin, "to", pin)
		}
		w.pin = pin
		clear(w.series)
	}
	c, err := streams.Decode[streams.Candle](msg.Data())
	if err != nil {
		w.candles.WithLabelValues("invalid").Inc()
		return fmt.Errorf("features: %w", err)
	}
	md, err := msg.Metadata()
	if err != nil {
		return streams.Permanent(fmt.Errorf("features: metadata: %w", err))
	}
	key := msg.Subject()
	s, ok := w.series[key]
	if !ok {
		if s, err = w.rebuildSeries(ctx, key, md.Sequence.Stream); err != nil {
			return err
		}
		w.series[key] = s
	}
	v, outcome := s.Add(c, md.Sequence.Stream)
	w.candles.WithLabelValues(string(outcome)).Inc()
	switch outcome {
	case Computed:
	case TooOld:
		return streams.Permanent(fmt.Errorf("features: candle %s older than the window of %s", c.Start.Format(time.RFC3339), key))
	default:
		w.log.Debug("candle skipped", "subject", key, "start", c.Start, "outcome", outcome)
		return nil
	}
	now := w.deps.Now()
	v.Trace = c.Trace.Stamp(Stage, now)
	if _, live := c.Trace.At("ingest"); live {
		w.latency.Observe(now.Sub(c.End()).Seconds())
	}
	if err := w.publish(ctx, stop, msg, &v); err != nil {
		// The window holds a candle whose vector is not stored: drop it
		// so that the redelivery finds a window rebuilt without it.
		delete(w.series, key)
		return err
	}
	return nil
}

func (w *Worker) publish(ctx context.Context, stop <-chan struct{}, msg jetstream.Msg, v *streams.FeatureVector) error {
	delay := 100 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, w.cfg.PublishTimeout)
		_, err := streams.Publish(pctx, w.deps.JS, v)
		cancel()
		if err == nil || errors.Is(err, streams.ErrPermanent) {
			return err
		}
		w.log.Warn("publish vector failed, retrying", "subject", v.Subject(), "err", err, "in", delay)
		_ = msg.InProgress()
		select {
		case <-stop:
			return fmt.Errorf("features: publish %s: %w", v.MsgID(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// rebuildSeries reads the candles of subject stored before seq and replays
// them into a fresh series: the state an uninterrupted run would have when
// seq arrives.
func (w *Worker) rebuildSeries(ctx context.Context, subject string, seq uint64) (*Series, error) {
	w.rebuild.Inc()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Twice what the window needs, so duplicates stored in MARKET do not
	// leave it short.
	msgs, err := streams.Tail(ctx, w.deps.JS, streams.StreamMarket, subject, 2*w.calc.Spec().Need(), seq)
	if err != nil {
		return nil, fmt.Errorf("features: rebuild %s: %w", subject, err)
	}
	s := NewSeries(w.calc)
	for _, m := range msgs {
		c, err := streams.Decode[streams.Candle](m.Data)
		if err != nil {
			continue // rejected when it was first delivered
		}
		s.Add(c, m.Seq)
	}
	w.log.Debug("window rebuilt", "subject", subject, "candles", s.Len(), "before_seq", seq)
	return s, nil
}
