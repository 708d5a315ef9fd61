package predictor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/ops"
	"cryptostream/registry"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// Stage is the trace stage the worker stamps.
const Stage = "predictor"

// JetStream is what the worker needs from the bus.
type JetStream interface {
	streams.StreamLookup
	streams.Publisher
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// Config is the predictor's configuration.
type Config struct {
	// Consumer is the durable on FEATURES; empty means streams.ConsumerPredictor.
	Consumer string
	// Z is the half-width of the interval in held-out residual standard
	// deviations (1.96: about 95% if the errors were normal, which at
	// one minute they are not: the live hit rate of the band is the
	// honest figure).
	Z float64
	// LiveWindow is how many recent scores the live figures cover, and
	// FlushEvery how many new scores of a model trigger writing them to
	// the registry.
	LiveWindow int
	FlushEvery int
	// PublishTimeout bounds one publish attempt.
	PublishTimeout time.Duration
}

// Deps are the worker's collaborators.
type Deps struct {
	JS       JetStream
	Log      *slog.Logger
	Registry prometheus.Registerer
	// Health, when set, gets a /readyz detail while a series has no
	// champion.
	Health *ops.Health
	Now    func() time.Time
}

// champion is a series' current model, bound lazily to the vector layout.
type champion struct {
	rec   streams.ModelRecord
	model trainer.Linear
	names []string
	bound trainer.Bound
}

// series is the per-series state: the scorer and whether the series has
// been seen without a champion.
type series struct {
	scorer *Scorer
}

// Worker publishes and scores predictions.
type Worker struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	predictions *prometheus.CounterVec
	absError    *prometheus.HistogramVec
	hitRatio    *prometheus.GaugeVec
	liveMAE     *prometheus.GaugeVec
	swaps       prometheus.Counter
	latency     prometheus.Observer
	lag         prometheus.Gauge

	cmu       sync.RWMutex
	champions map[string]*champion // by series subject token "1m.BTC-USD"
	ready     chan struct{}

	mu       sync.Mutex // one handler at a time
	series   map[string]*series
	live     map[string]*Live // by model id
	unflush  map[string]int
	scored   map[string]time.Time // series -> start of the last prediction scored
	noChamp  map[string]bool
	pin      string
	registry jetstream.KeyValue
}

// New validates cfg; it does no I/O.
func New(cfg Config, deps Deps) (*Worker, error) {
	if deps.JS == nil || deps.Log == nil || deps.Registry == nil {
		return nil, errors.New("predictor: JS, Log and Registry are required")
	}
	if cfg.Consumer == "" {
		cfg.Consumer = streams.ConsumerPredictor
	}
	if cfg.Z <= 0 {
		cfg.Z = 1.96
	}
	if cfg.LiveWindow <= 0 {
		cfg.LiveWindow = 500
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = 50
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	f := promauto.With(deps.Registry)
	w := &Worker{
		cfg: cfg, deps: deps, log: deps.Log.With("worker", "predictor"),
		predictions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_predictor_vectors_total",
			Help: "Feature vectors handled by the predictor, by outcome (predicted, no_champion, model_newer (the champion was trained on later data), model_mismatch, duplicate, invalid), and scores skipped as already counted (rescored).",
		}, []string{"outcome"}),
		absError: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cryptostream_predictor_prediction_abs_error",
			Help:    "Absolute error of scored predictions, in log return (0.001 is about 0.1%).",
			Buckets: prometheus.ExponentialBucketsRange(1e-5, 0.05, 14),
		}, []string{"symbol", "interval"}),
		hitRatio: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cryptostream_predictor_direction_hit_ratio",
			Help: "Share of the last live-window scored predictions of the champion whose direction was right (a flat actual counts as a miss).",
		}, []string{"symbol", "interval"}),
		liveMAE: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cryptostream_predictor_live_mae",
			Help: "Mean absolute error, in log return, of the last live-window scored predictions.",
		}, []string{"symbol", "interval"}),
		swaps: f.NewCounter(prometheus.CounterOpts{
			Name: "cryptostream_predictor_champion_swaps_total",
			Help: "Champion models loaded from the registry without a restart.",
		}),
		latency: ops.PipelineLatency(deps.Registry).WithLabelValues(Stage),
		lag: f.NewGauge(prometheus.GaugeOpts{
			Name: "cryptostream_predictor_consumer_backlog_messages",
			Help: "Vectors in FEATURES not yet handled by the predictor consumer (pending plus unacked).",
		}),
		champions: map[string]*champion{},
		ready:     make(chan struct{}),
		series:    map[string]*series{},
		live:      map[string]*Live{},
		unflush:   map[string]int{},
		scored:    map[string]time.Time{},
		noChamp:   map[string]bool{},
	}
	if deps.Health != nil {
		deps.Health.AddDetail("predictor", w.detail)
	}
	return w, nil
}

// detail is the /readyz line: which series get no prediction and why.
func (w *Worker) detail() string {
	w.cmu.RLock()
	n := len(w.champions)
	w.cmu.RUnlock()
	w.mu.Lock()
	var missing []string
	for k, v := range w.noChamp {
		if v {
			missing = append(missing, k)
		}
	}
	w.mu.Unlock()
	sort.Strings(missing)
	switch {
	case len(missing) > 0:
		return "no champion model for " + strings.Join(missing, ", ") + ": publishing no predictions for them"
	case n == 0:
		return "no champion model yet: publishing no predictions"
	}
	return ""
}

func seriesKey(iv streams.Interval, symbol string) string {
	tok, _ := streams.SymbolToken(symbol)
	return iv.String() + "." + tok
}

// Run loads the champions, then consumes FEATURES until ctx ends. The
// registry is watched throughout so a new champion takes over from the next
// vector on.
func (w *Worker) Run(ctx context.Context) error {
	err := w.run(ctx)
	if err != nil && ctx.Err() != nil {
		// Stopped while still starting: a clean stop, not a failure.
		return nil
	}
	return err
}

func (w *Worker) run(ctx context.Context) error {
	reg, err := w.deps.JS.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		return fmt.Errorf("predictor: registry: %w", err)
	}
	w.registry = reg
	watcher, err := reg.Watch(ctx, "champion.>")
	if err != nil {
		return fmt.Errorf("predictor: watch champions: %w", err)
	}
	defer func() { _ = watcher.Stop() }()
	go w.watch(ctx, reg, watcher)
	// Consuming before the champions are loaded would skip the vectors
	// that arrive meanwhile: a restart would lose predictions.
	select {
	case <-w.ready:
	case <-ctx.Done():
		return nil
	}
	cons, err := w.deps.JS.Consumer(ctx, streams.StreamFeatures, w.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("predictor: consumer %s: %w", w.cfg.Consumer, err)
	}
	hctx := context.WithoutCancel(ctx)
	cc, err := cons.Consume(streams.Acker(hctx, w.log, func(hc context.Context, msg jetstream.Msg) error {
		return w.Handle(hc, ctx.Done(), msg)
	}, nil),
		jetstream.PullPriorityGroup(streams.PriorityGroup),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { w.log.Debug("consume", "err", err) }))
	if err != nil {
		return fmt.Errorf("predictor: consume: %w", err)
	}
	jobs, err := w.deps.JS.Consumer(ctx, streams.StreamJobs, streams.ConsumerPredictorJobs)
	if err != nil {
		cc.Stop()
		return fmt.Errorf("predictor: consumer %s: %w", streams.ConsumerPredictorJobs, err)
	}
	jc, err := jobs.Consume(streams.Acker(hctx, w.log, w.handleJob, nil),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { w.log.Debug("consume jobs", "err", err) }))
	if err != nil {
		cc.Stop()
		return fmt.Errorf("predictor: consume jobs: %w", err)
	}
	go streams.WatchLag(ctx, cons, 15*time.Second, w.lag.Set)
	<-ctx.Done()
	jc.Drain()
	cc.Drain()
	<-cc.Closed()
	<-jc.Closed()
	w.flushAll(hctx)
	w.mu.Lock()
	pinned := w.pin != ""
	w.mu.Unlock()
	if pinned {
		uctx, cancel := context.WithTimeout(hctx, 2*time.Second)
		if err := streams.Unpin(uctx, w.deps.JS, streams.StreamFeatures, w.cfg.Consumer); err != nil {
			w.log.Debug("unpin", "err", err)
		}
		cancel()
	}
	return nil
}

func (w *Worker) watch(ctx context.Context, reg jetstream.KeyValue, watcher jetstream.KeyWatcher) {
	initial := true
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-watcher.Updates():
			if !ok {
				return
			}
			if e == nil {
				if initial {
					initial = false
					close(w.ready)
				}
				continue
			}
			w.apply(ctx, reg, e)
		}
	}
}

// apply loads the model a champion key names and swaps it in.
func (w *Worker) apply(ctx context.Context, reg jetstream.KeyValue, e jetstream.KeyValueEntry) {
	key := strings.TrimPrefix(e.Key(), "champion.")
	if e.Operation() != jetstream.KeyValuePut {
		w.cmu.Lock()
		delete(w.champions, key)
		w.cmu.Unlock()
		w.log.Info("champion removed", "series", key)
		return
	}
	id := string(e.Value())
	var rec streams.ModelRecord
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if rec, _, err = registry.NewModels(reg).Get(ctx, id); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		w.log.Error("champion not loaded, keeping the previous one", "series", key, "model", id, "err", err)
		return
	}
	m, err := trainer.FromRecord(rec)
	if err != nil {
		w.log.Error("champion not loaded, keeping the previous one", "series", key, "model", id, "err", err)
		return
	}
	w.cmu.Lock()
	w.champions[key] = &champion{rec: rec, model: m}
	w.cmu.Unlock()
	w.swaps.Inc()
	w.log.Info("champion loaded", "series", key, "model", id, "horizon", rec.Horizon)
}

// current returns the series' champion bound to names.
func (w *Worker) current(key string, names []string) (*champion, error) {
	w.cmu.RLock()
	c := w.champions[key]
	w.cmu.RUnlock()
	if c == nil {
		return nil, nil
	}
	if !slices.Equal(c.names, names) {
		// Binding is per champion value; a swap brings a fresh value, so
		// this write races with nothing but other handlers, which the
		// handler lock serialises.
		b, err := c.model.Bind(names)
		if err != nil {
			return nil, err
		}
		c.bound, c.names = b, names
	}
	return c, nil
}

// Handle processes one FEATURES message: score what it completes, then
// predict from it. Like the features worker it never asks for a redelivery
// while running (that would reorder the series): it retries the publish in
// place until it succeeds or stop closes.
func (w *Worker) Handle(ctx context.Context, stop <-chan struct{}, msg jetstream.Msg) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pin := msg.Headers().Get("Nats-Pin-Id"); pin != "" && pin != w.pin {
		w.pin = pin
		clear(w.series)
	}
	v, err := streams.Decode[streams.FeatureVector](msg.Data())
	if err != nil {
		w.predictions.WithLabelValues("invalid").Inc()
		return fmt.Errorf("predictor: %w", err)
	}
	md, err := msg.Metadata()
	if err != nil {
		return streams.Permanent(fmt.Errorf("predictor: metadata: %w", err))
	}
	key := seriesKey(v.Interval, v.Symbol)
	st, ok := w.series[key]
	if !ok {
		if st, err = w.rebuild(ctx, v, md.Sequence.Stream); err != nil {
			return err
		}
		w.series[key] = st
	}
	if !v.Start.After(st.scorer.Seen()) {
		w.predictions.WithLabelValues("duplicate").Inc()
		return nil
	}
	for _, s := range st.scorer.Observe(v.Start, v.Close) {
		// A vector handled again after a failed publish re-scores what
		// it scored the first time: count each prediction once.
		if !s.Start.After(w.scored[key]) {
			w.predictions.WithLabelValues("rescored").Inc()
			continue
		}
		w.scored[key] = s.Start
		w.record(ctx, v, s)
	}
	c, err := w.current(key, v.Names)
	if err != nil {
		w.predictions.WithLabelValues("model_mismatch").Inc()
		w.log.Warn("champion does not fit the vectors", "series", key, "err", err)
		return nil
	}
	if c == nil {
		w.predictions.WithLabelValues("no_champion").Inc()
		w.noChamp[v.Symbol+" "+v.Interval.String()] = true
		return nil
	}
	w.noChamp[v.Symbol+" "+v.Interval.String()] = false
	if v.Start.Before(c.rec.TrainTo.Add(time.Duration(c.rec.Horizon) * v.Interval.Duration())) {
		// The champion's training labels reach past this vector (the
		// predictor is replaying history the trainer has passed): its
		// forecast would have seen part of the answer.
		w.predictions.WithLabelValues("model_newer").Inc()
		return nil
	}
	p := Forecast(c.rec, c.bound, v, w.cfg.Z)
	now := w.deps.Now()
	p.Trace = v.Trace.Stamp(Stage, now)
	if err := w.publish(ctx, stop, msg, &p); err != nil {
		delete(w.series, key)
		return err
	}
	if _, live := v.Trace.At("ingest"); live {
		if end, ok := candleEnd(v); ok {
			w.latency.Observe(now.Sub(end).Seconds())
		}
	}
	st.scorer.Await(p)
	w.predictions.WithLabelValues("predicted").Inc()
	return nil
}

func candleEnd(v streams.FeatureVector) (time.Time, bool) {
	return v.Start.Add(v.Interval.Duration()), true
}

func (w *Worker) publish(ctx context.Context, stop <-chan struct{}, msg jetstream.Msg, p *streams.Prediction) error {
	delay := 100 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, w.cfg.PublishTimeout)
		_, err := streams.Publish(pctx, w.deps.JS, p)
		cancel()
		if err == nil || errors.Is(err, streams.ErrPermanent) {
			return err
		}
		w.log.Warn("publish prediction failed, retrying", "subject", p.Subject(), "err", err, "in", delay)
		_ = msg.InProgress()
		select {
		case <-stop:
			return fmt.Errorf("predictor: publish %s: %w", p.MsgID(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// rebuild restores a series' scorer after a start or failover by replaying
// the stored history before v: the last vectors of the series and the
// predictions made from them go through a fresh scorer exactly as they went
// live, which leaves it holding the predictions still waiting for their
// target, and yields the scores that seed the live figures of models this
// instance has not scored yet (so a restart does not reset them).
func (w *Worker) rebuild(ctx context.Context, v streams.FeatureVector, seq uint64) (*series, error) {
	subject, key := v.Subject(), seriesKey(v.Interval, v.Symbol)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n := w.cfg.LiveWindow + 64
	vmsgs, err := streams.Tail(ctx, w.deps.JS, streams.StreamFeatures, subject, n, seq)
	if err != nil {
		return nil, fmt.Errorf("predictor: rebuild %s: %w", subject, err)
	}
	// Horizons are a few intervals: 256 more predictions than vectors
	// cover every one made from the replayed vectors.
	pmsgs, err := streams.Tail(ctx, w.deps.JS, streams.StreamPredictions, streams.PredictionSubject(v.Interval, v.Symbol), n+256, 0)
	if err != nil {
		return nil, fmt.Errorf("predictor: rebuild %s: %w", subject, err)
	}
	var vecs []streams.FeatureVector
	for _, m := range vmsgs {
		if pv, err := streams.Decode[streams.FeatureVector](m.Data); err == nil {
			vecs = append(vecs, pv)
		}
	}
	var preds []streams.Prediction
	for _, m := range pmsgs {
		if p, err := streams.Decode[streams.Prediction](m.Data); err == nil && p.Start.Before(v.Start) {
			preds = append(preds, p)
		}
	}
	slices.SortFunc(preds, func(a, b streams.Prediction) int { return a.Start.Compare(b.Start) })
	sc := NewScorer(time.Time{}, 0, nil)
	if len(vecs) == 0 {
		return &series{scorer: sc}, nil
	}
	pi := 0
	for ; pi < len(preds) && preds[pi].Start.Before(vecs[0].Start); pi++ {
		// Made before the replay starts; still open if its target is not
		// before the first replayed vector.
		if !preds[pi].Target.Before(vecs[0].Start) {
			sc.Await(preds[pi])
		}
	}
	seed := map[string]bool{}
	for _, pv := range vecs {
		if !pv.Start.After(sc.Seen()) && !sc.Seen().IsZero() {
			continue // a duplicate vector in the stream
		}
		for _, s := range sc.Observe(pv.Start, pv.Close) {
			l, ok := w.live[s.ModelID]
			if !ok {
				l, seed[s.ModelID] = NewLive(w.cfg.LiveWindow), true
				w.live[s.ModelID] = l
			}
			if seed[s.ModelID] {
				l.Add(s)
			}
			if s.Start.After(w.scored[key]) {
				w.scored[key] = s.Start
			}
		}
		for ; pi < len(preds) && !preds[pi].Start.After(pv.Start); pi++ {
			if preds[pi].Start.Equal(pv.Start) {
				sc.Await(preds[pi])
			}
		}
	}
	return &series{scorer: sc}, nil
}

// record adds a score to the model's live figures and, every FlushEvery
// scores, writes them to the model's registry record.
func (w *Worker) record(ctx context.Context, v streams.FeatureVector, s Score) {
	l := w.live[s.ModelID]
	if l == nil {
		l = NewLive(w.cfg.LiveWindow)
		w.live[s.ModelID] = l
	}
	l.Add(s)
	labels := []string{v.Symbol, v.Interval.String()}
	w.absError.WithLabelValues(labels...).Observe(s.AbsError)
	m := l.Metrics()
	w.hitRatio.WithLabelValues(labels...).Set(m.DirectionAccuracy)
	w.liveMAE.WithLabelValues(labels...).Set(m.MAE)
	w.unflush[s.ModelID]++
	if w.unflush[s.ModelID] >= w.cfg.FlushEvery {
		w.flush(ctx, s.ModelID, m)
	}
}

func (w *Worker) flushAll(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, n := range w.unflush {
		if n > 0 {
			w.flush(ctx, id, w.live[id].Metrics())
		}
	}
}

// flush writes a model's live figures to its record with compare-and-swap,
// so a concurrent write by the trainer (a demotion, a score job) is not
// overwritten.
func (w *Worker) flush(ctx context.Context, id string, m streams.Metrics) {
	if w.registry == nil {
		return
	}
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for attempt := 0; attempt < 3; attempt++ {
		rec, rev, err := registry.NewModels(w.registry).Get(fctx, id)
		if err != nil {
			w.log.Warn("live metrics not stored", "model", id, "err", err)
			return
		}
		if rec.Metrics == nil {
			rec.Metrics = map[string]streams.Metrics{}
		}
		rec.Metrics["live"] = m
		b, err := json.Marshal(rec)
		if err != nil {
			return
		}
		_, err = w.registry.Update(fctx, streams.ModelKey(id), b, rev)
		if err == nil {
			w.unflush[id] = 0
			return
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			w.log.Warn("live metrics not stored", "model", id, "err", err)
			return
		}
	}
}

// handleJob runs a predict job, moving its status to done or failed.
func (w *Worker) handleJob(ctx context.Context, msg jetstream.Msg) error {
	job, err := streams.Decode[streams.Job](msg.Data())
	if err != nil {
		return fmt.Errorf("predictor: %w", err)
	}
	jobs, err := registry.OpenJobs(ctx, w.deps.JS, w.deps.Now)
	if err != nil {
		return fmt.Errorf("predictor: %w", err)
	}
	if err := jobs.Start(ctx, job); err != nil {
		return err
	}
	result, err := PredictJob(ctx, w.deps.JS, job, w.cfg.Z)
	if perr := jobs.Finish(ctx, job, result, err); perr != nil && err == nil {
		return perr
	}
	return err
}

// PredictJob answers a predict job: the champion's (or params model_id's)
// forecast from the series' latest vector, returned in the job's result. It
// publishes nothing: PREDICTIONS holds one prediction per candle, made live.
func PredictJob(ctx context.Context, js JetStream, job streams.Job, z float64) (map[string]string, error) {
	reg, err := js.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		return nil, fmt.Errorf("predictor: registry: %w", err)
	}
	models := registry.NewModels(reg)
	id, err := models.JobModel(ctx, job)
	if err != nil {
		return nil, err
	}
	rec, _, err := models.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, streams.Permanent(err)
	}
	if err != nil {
		return nil, err
	}
	msgs, err := streams.Tail(ctx, js, streams.StreamFeatures, streams.FeaturesSubject(job.Interval, job.Symbol), 1, 0)
	if err != nil {
		return nil, fmt.Errorf("predictor: latest vector: %w", err)
	}
	if len(msgs) == 0 {
		return nil, streams.Permanent(fmt.Errorf("predictor: no feature vector for %s %s yet", job.Symbol, job.Interval))
	}
	v, err := streams.Decode[streams.FeatureVector](msgs[0].Data)
	if err != nil {
		return nil, err
	}
	m, err := trainer.FromRecord(rec)
	if err != nil {
		return nil, streams.Permanent(err)
	}
	b, err := m.Bind(v.Names)
	if err != nil {
		return nil, streams.Permanent(err)
	}
	p := Forecast(rec, b, v, z)
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', 10, 64) }
	return map[string]string{
		"model_id": p.ModelID, "start": p.Start.Format(time.RFC3339), "target": p.Target.Format(time.RFC3339),
		"close": f(p.Close), "log_return": f(p.LogReturn), "predicted_close": f(p.PredictedClose),
		"lower": f(p.Lower), "upper": f(p.Upper), "candle_seq": strconv.FormatUint(p.CandleSeq, 10),
	}, nil
}
