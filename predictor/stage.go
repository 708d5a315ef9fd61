package predictor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/ops"
	"cryptostream/pipeline"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// LiveStore keeps the live figures of a model in its registry record and
// the live scores of a series' forecasts.
type LiveStore interface {
	Modify(ctx context.Context, id string, change func(*streams.ModelRecord) error) error
	PutForecastScore(ctx context.Context, s streams.ForecastScore) error
}

// PredictionsConfig tunes the Predictions stage.
type PredictionsConfig struct {
	// Z is the half-width of the interval in residual standard deviations.
	Z float64
	// LiveWindow is how many recent scores the live figures cover (500
	// when 0), FlushEvery how many new scores of a model trigger writing
	// them to the registry (50 when 0).
	LiveWindow int
	FlushEvery int
	// Horizons are the forecast horizons (DefaultHorizons when empty);
	// a series forecasts those that are whole numbers of its interval.
	Horizons []time.Duration
	// Seed, when set, warms the volatility model of a series whose
	// stream holds less history than the model needs.
	Seed Seeder
}

// champion is a series' current model, bound lazily to the vector layout.
type champion struct {
	rec   streams.ModelRecord
	model trainer.Linear
	names []string
	bound trainer.Bound
}

// Predictions is the predictor stage: feature vectors in, one prediction
// out per vector (the champion's point forecast at its horizon, no-change
// at the others and when there is no champion, each with intervals from
// the volatility model), every earlier forecast scored when its target
// arrives.
// The worker runs it on FEATURES with the champions it watches; the
// backtest replays it with pipeline.Replay after SetChampion.
type Predictions struct {
	cfg   PredictionsConfig
	now   func() time.Time
	log   *slog.Logger
	store LiveStore // nil: live figures stay in memory
	// writes take the live figures to store off the step's path.
	writes *registryWrites

	predictions *prometheus.CounterVec
	// outcomes are predictions' children, looked up once each rather
	// than on every vector; guarded by mu.
	outcomes map[string]prometheus.Counter
	// vdec decodes the vectors Step is given as bytes.
	vdec     streams.VectorDecoder
	absError *prometheus.HistogramVec
	hitRatio *prometheus.GaugeVec
	liveMAE  *prometheus.GaugeVec
	latency  prometheus.Observer

	mu        sync.Mutex           // the runner's steps against the watch and /readyz
	champions map[string]*champion // by series key "1m.BTC-USD"
	scorers   map[string]*Scorer   // by series key
	live      map[string]*Live     // by model id
	unflush   map[string]int
	scored    map[string]time.Time // series -> start of the last prediction scored
	noChamp   map[string]bool
	forecasts map[string]*seriesForecast // by series key
	warned    map[string]bool            // series warned of a champion horizon not forecast
	names     map[seriesID]*seriesNames
	// hist is the history the runner warms from, kept to warm a series
	// again when a vector lands past vectors it never stepped; warmedAt
	// is, per FEATURES subject, the sequence it was last warmed at, and
	// steppedAt the sequence of the newest vector it stepped.
	hist      pipeline.History
	warmedAt  map[string]uint64
	steppedAt map[string]uint64
}

// seriesID is a series as a vector names it.
type seriesID struct {
	symbol   string
	interval streams.Interval
}

// seriesNames is what a series is known by in the stage's maps and
// metrics, made once per series rather than on every vector.
type seriesNames struct {
	key, label        string // "1m.BTC-USD", "BTC/USD 1m"
	absError          prometheus.Observer
	hitRatio, liveMAE prometheus.Gauge
	noChamp           bool // as noChamp[label], written there when it changes
}

func (p *Predictions) seriesNames(v *streams.FeatureVector) *seriesNames {
	id := seriesID{v.Symbol, v.Interval}
	n := p.names[id]
	if n == nil {
		labels := []string{v.Symbol, v.Interval.String()}
		n = &seriesNames{key: seriesKey(v.Interval, v.Symbol), label: v.Symbol + " " + v.Interval.String(),
			absError: p.absError.WithLabelValues(labels...), hitRatio: p.hitRatio.WithLabelValues(labels...), liveMAE: p.liveMAE.WithLabelValues(labels...)}
		p.names[id] = n
	}
	return n
}

// NewPredictions builds the stage; now stamps the traces and reg takes its
// metrics.
func NewPredictions(cfg PredictionsConfig, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) *Predictions {
	if cfg.Z <= 0 {
		cfg.Z = 1.96
	}
	if cfg.LiveWindow <= 0 {
		cfg.LiveWindow = 500
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = 50
	}
	if now == nil {
		now = time.Now
	}
	if len(cfg.Horizons) == 0 {
		cfg.Horizons = DefaultHorizons
	}
	f := promauto.With(reg)
	p := &Predictions{
		cfg: cfg, now: now, log: log,
		predictions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_predictor_vectors_total",
			Help: "Feature vectors handled by the predictor, by outcome: predicted (the champion's forecast), no_champion, model_newer (the champion was trained on later data), model_mismatch, model_horizon (the champion's horizon is not forecast) all publish the no-change forecast; duplicate, invalid and forecast_refused publish nothing; rescored counts scores skipped as already counted.",
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
		latency:   ops.PipelineLatency(reg).WithLabelValues(Stage),
		champions: map[string]*champion{},
		scorers:   map[string]*Scorer{},
		live:      map[string]*Live{},
		unflush:   map[string]int{},
		scored:    map[string]time.Time{},
		noChamp:   map[string]bool{},
		forecasts: map[string]*seriesForecast{},
		warned:    map[string]bool{},
		names:     map[seriesID]*seriesNames{},
		warmedAt:  map[string]uint64{},
		steppedAt: map[string]uint64{},
		outcomes:  map[string]prometheus.Counter{},
		writes:    newRegistryWrites(log),
	}
	reg.MustRegister(forecastCollector{p})
	return p
}

// setStore makes store the registry the live figures are written to.
func (p *Predictions) setStore(store LiveStore) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.store = store
	p.writes.writing.Lock()
	p.writes.store = store
	p.writes.writing.Unlock()
}

func seriesKey(iv streams.Interval, symbol string) string {
	tok, _ := streams.SymbolToken(symbol)
	return iv.String() + "." + tok
}

// SetChampion makes rec the champion of a series ("1m.BTC-USD"; see
// streams.ChampionKey), from the next vector on; nil removes it.
func (p *Predictions) SetChampion(series string, rec *streams.ModelRecord) error {
	var c *champion
	if rec != nil {
		m, err := trainer.FromRecord(*rec)
		if err != nil {
			return err
		}
		c = &champion{rec: *rec, model: m}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c == nil {
		delete(p.champions, series)
	} else {
		p.champions[series] = c
	}
	return nil
}

// current returns the series' champion bound to names.
func (p *Predictions) current(key string, names []string) (*champion, error) {
	c := p.champions[key]
	if c == nil {
		return nil, nil
	}
	// Every vector of a series shares its calculator's names: the same
	// array is the same names, without comparing each string.
	same := len(c.names) == len(names) && (len(names) == 0 || &c.names[0] == &names[0])
	if !same && !slices.Equal(c.names, names) {
		b, err := c.model.Bind(names)
		if err != nil {
			return nil, err
		}
		c.bound, c.names = b, names
	}
	return c, nil
}

// Key implements pipeline.Stage: one scorer per vector subject.
func (p *Predictions) Key(m pipeline.Msg) string { return m.Subject }

// Reset implements pipeline.Stage.
func (p *Predictions) Reset(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := vectorSeries(key); ok {
		delete(p.scorers, v)
		delete(p.forecasts, v)
	}
	delete(p.warmedAt, key)
	delete(p.steppedAt, key)
}

// rewarmPastHandled warms m's series again, before m is stepped, when m
// lands past vectors the series never stepped and FEATURES holds them: the
// runner steps a series in stream order but not every stored vector, since
// after a takeover the first input it holds (where it warmed) may be one
// delivered again, with the vectors after it already handled (acked) by
// the previous owner. The volatility model would go on as if they were a
// gap in the market and forecast other intervals than an uninterrupted
// run. A real gap costs one read of one stored vector.
func (p *Predictions) rewarmPastHandled(ctx context.Context, m pipeline.Msg, v *streams.FeatureVector) error {
	p.mu.Lock()
	// The series' names hold its key: building it here was two of a
	// candle's allocations.
	key := p.seriesNames(v).key
	sc, h, at, stepped := p.scorers[key], p.hist, p.warmedAt[m.Subject], p.steppedAt[m.Subject]
	p.mu.Unlock()
	if h == nil || sc == nil || at == m.Seq || sc.Seen().IsZero() || v.Start.Sub(sc.Seen()) <= v.Interval.Duration() {
		return nil
	}
	// A gap in the market is a gap in FEATURES too: one direct get
	// proves the common case (a Tail at every gap took the chain
	// benchmark from 149 to 331 allocations a candle).
	if !pipeline.StoredBetween(ctx, h, streams.StreamFeatures, m.Subject, stepped, m.Seq) {
		return nil
	}
	prev, err := h.Tail(ctx, streams.StreamFeatures, m.Subject, 1, m.Seq)
	if err != nil {
		return fmt.Errorf("predictor: rebuild %s: %w", m.Subject, err)
	}
	if len(prev) == 0 {
		return nil
	}
	if pv, err := pipeline.Decode[streams.FeatureVector](prev[0]); err != nil || !pv.Start.After(sc.Seen()) {
		return nil // a real gap: nothing stored that the series missed
	}
	return p.Warm(ctx, h, m.Subject, m)
}

// vectorSeries is the series key of a FEATURES subject.
func vectorSeries(subject string) (string, bool) {
	k, err := streams.ParseSeriesSubject(subject)
	if err != nil {
		return "", false
	}
	return seriesKey(k.Interval, k.Symbol), true
}

// Step implements pipeline.Stage: score what the vector completes, then
// predict from it.
func (p *Predictions) Step(ctx context.Context, m pipeline.Msg) ([]streams.Event, error) {
	v, err := p.vector(m)
	if err != nil {
		p.predictions.WithLabelValues("invalid").Inc()
		return nil, fmt.Errorf("predictor: %w", err)
	}
	if err := p.rewarmPastHandled(ctx, m, &v); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	names := p.seriesNames(&v)
	key := names.key
	sc := p.scorers[key]
	if sc == nil {
		sc = NewScorer(time.Time{}, 0, nil)
		p.scorers[key] = sc
	}
	if !v.Start.After(sc.Seen()) {
		p.counted("duplicate").Inc()
		return nil, nil
	}
	p.steppedAt[m.Subject] = m.Seq
	for _, s := range sc.Observe(v.Start, v.Close) {
		// A vector handled again after a failed publish re-scores what
		// it scored the first time: count each prediction once.
		if !s.Start.After(p.scored[key]) {
			p.counted("rescored").Inc()
			continue
		}
		p.scored[key] = s.Start
		p.record(ctx, names, s)
	}
	sf := p.forecasts[key]
	if sf == nil {
		if sf, err = newSeriesForecast(v.Symbol, v.Interval, p.cfg.Horizons); err != nil {
			return nil, streams.Permanent(err)
		}
		p.forecasts[key] = sf
	}
	k, center, id := p.champion(names, sf, v)
	step, err := sf.add(v.Start, v.Close, k, center)
	if err != nil {
		// Not after the last candle or off the grid: the vector passed
		// its own checks, so this is a series out of step; say so and
		// keep going.
		p.counted("forecast_refused").Inc()
		p.log.Warn("volatility model refused a vector", "series", key, "start", v.Start, "err", err)
		return nil, nil
	}
	out := &predictionOut{}
	out.pred = prediction(v, step.Forecasts, k, id, &out.parts)
	pred := &out.pred
	sf.markFailing(pred)
	now := p.now()
	pred.Trace = out.parts.stamp(v.Trace, Stage, now)
	if _, live := v.Trace.At("ingest"); live {
		p.latency.Observe(now.Sub(v.Start.Add(v.Interval.Duration())).Seconds())
	}
	if k >= 0 {
		sc.Await(*pred)
	}
	if sf.unflush++; sf.unflush >= p.cfg.FlushEvery {
		p.flushForecast(ctx, sf)
	}
	out.evs[0] = pred
	return out.evs[:], nil
}

// counted is the predictions counter of outcome; mu is held.
func (p *Predictions) counted(outcome string) prometheus.Counter {
	c := p.outcomes[outcome]
	if c == nil {
		c = p.predictions.WithLabelValues(outcome)
		p.outcomes[outcome] = c
	}
	return c
}

// vector is m's vector: its Value when a stage before handed one over,
// else its bytes, decoded as pipeline.Decode would with the series' names
// shared between vectors (the runner steps one input at a time).
func (p *Predictions) vector(m pipeline.Msg) (streams.FeatureVector, error) {
	if v, ok := m.Value.(*streams.FeatureVector); ok && v != nil {
		return pipeline.Decode[streams.FeatureVector](m)
	}
	return p.vdec.Decode(m.Data)
}

// predictionOut is a step's prediction, its parts and the slice returning
// it, in one allocation.
type predictionOut struct {
	pred  streams.Prediction
	evs   [1]streams.Event
	parts predictionParts
}

// champion is the champion's forecast for v: the horizon index it is
// published at (-1: none, no-change everywhere), its point forecast and
// the model id, counting why when there is none.
func (p *Predictions) champion(names *seriesNames, sf *seriesForecast, v streams.FeatureVector) (int, float64, string) {
	key := names.key
	c, err := p.current(key, v.Names)
	if no := c == nil && err == nil; no != names.noChamp {
		names.noChamp = no
		p.noChamp[names.label] = no
	}
	switch {
	case err != nil:
		p.counted("model_mismatch").Inc()
		p.log.Warn("champion does not fit the vectors", "series", key, "err", err)
		return -1, 0, ""
	case c == nil:
		p.counted("no_champion").Inc()
		return -1, 0, ""
	case v.Start.Before(c.rec.TrainTo.Add(time.Duration(c.rec.Horizon) * v.Interval.Duration())):
		// The champion's training labels reach past this vector (the
		// predictor is replaying history the trainer has passed): its
		// forecast would have seen part of the answer.
		p.counted("model_newer").Inc()
		return -1, 0, ""
	}
	k := sf.horizonIndex(c.rec.Horizon)
	if k < 0 {
		p.counted("model_horizon").Inc()
		if !p.warned[key] {
			p.warned[key] = true
			p.log.Warn("the champion's horizon is not among the forecast horizons: publishing no-change", "series", key,
				"model", c.rec.ID, "horizon", c.rec.Horizon, "horizons", sf.cfg.Horizons)
		}
		return -1, 0, ""
	}
	p.counted("predicted").Inc()
	return k, c.bound.Predict(v.Values), c.rec.ID
}

// Warm implements pipeline.Stage: it restores a series after a start or
// failover by replaying the stored history before first. The last vectors
// of the series and the predictions made from them go through a fresh
// scorer and volatility model exactly as they went live, which leaves the
// scorer holding the champion's predictions still waiting for their
// target, the volatility model and its calibration where they were (up
// to what the replayed stretch covers), and yields the scores that seed
// the live figures of models this instance has not scored yet (so a
// restart does not reset them). When the stream holds less history than
// the volatility model needs, the Seeder's candles before it come first.
func (p *Predictions) Warm(ctx context.Context, h pipeline.History, subject string, first pipeline.Msg) error {
	v, err := pipeline.Decode[streams.FeatureVector](first)
	if err != nil {
		return nil // Step rejects it
	}
	sf, err := newSeriesForecast(v.Symbol, v.Interval, p.cfg.Horizons)
	if err != nil {
		return streams.Permanent(err)
	}
	need := sf.cfg.History()
	n := max(p.cfg.LiveWindow+64, need)
	vmsgs, err := h.Tail(ctx, streams.StreamFeatures, subject, n, first.Seq)
	if err != nil {
		return fmt.Errorf("predictor: rebuild %s: %w", subject, err)
	}
	// One prediction per vector, and those made from vectors just before
	// the replayed ones may still wait for their target.
	pmsgs, err := h.Tail(ctx, streams.StreamPredictions, streams.PredictionSubject(v.Interval, v.Symbol), n+256, 0)
	if err != nil {
		return fmt.Errorf("predictor: rebuild %s: %w", subject, err)
	}
	var vecs []streams.FeatureVector
	for _, m := range vmsgs {
		if pv, err := pipeline.Decode[streams.FeatureVector](m); err == nil {
			vecs = append(vecs, pv)
		}
	}
	var preds []streams.Prediction
	for _, m := range pmsgs {
		if pr, err := pipeline.Decode[streams.Prediction](m); err == nil && pr.Start.Before(v.Start) {
			preds = append(preds, pr)
		}
	}
	slices.SortFunc(preds, func(a, b streams.Prediction) int { return a.Start.Compare(b.Start) })
	from := v.Start
	if len(vecs) > 0 {
		from = vecs[0].Start
	}
	if p.cfg.Seed != nil && len(vecs) < need {
		for _, c := range p.cfg.Seed.Seed(v.Symbol, v.Interval, from) {
			if c.Start.Before(from) {
				if _, err := sf.fc.Add(c.Start, c.Close, nil); err == nil {
					sf.seeded++
				}
			}
		}
		p.log.Info("volatility model seeded", "series", subject, "candles", sf.seeded, "before", from)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hist, p.warmedAt[subject] = h, first.Seq
	key := seriesKey(v.Interval, v.Symbol)
	sc := NewScorer(time.Time{}, 0, nil)
	p.scorers[key] = sc
	p.forecasts[key] = sf
	if len(vecs) == 0 {
		return nil
	}
	pi := 0
	for ; pi < len(preds) && preds[pi].Start.Before(vecs[0].Start); pi++ {
		// Made before the replay starts; still open if its target is not
		// before the first replayed vector.
		if byChampion(preds[pi]) && !preds[pi].Target.Before(vecs[0].Start) {
			sc.Await(preds[pi])
		}
	}
	seed := map[string]bool{}
	for _, pv := range vecs {
		if !pv.Start.After(sc.Seen()) && !sc.Seen().IsZero() {
			continue // a duplicate vector in the stream
		}
		for _, s := range sc.Observe(pv.Start, pv.Close) {
			l, ok := p.live[s.ModelID]
			if !ok {
				l, seed[s.ModelID] = NewLive(p.cfg.LiveWindow), true
				p.live[s.ModelID] = l
			}
			if seed[s.ModelID] {
				l.Add(s)
			}
			if s.Start.After(p.scored[key]) {
				p.scored[key] = s.Start
			}
		}
		var made *streams.Prediction
		for ; pi < len(preds) && !preds[pi].Start.After(pv.Start); pi++ {
			if preds[pi].Start.Equal(pv.Start) {
				made = &preds[pi]
				if byChampion(preds[pi]) {
					sc.Await(preds[pi])
				}
			}
		}
		k, c := sf.centerOf(made)
		_, _ = sf.add(pv.Start, pv.Close, k, c) // a refused vector was refused live too
	}
	return nil
}

// byChampion says whether a stored prediction is a champion's, whose
// score goes to its model's live figures.
func byChampion(p streams.Prediction) bool {
	return p.ModelID != streams.ModelNoChange && p.Model != streams.ModelNoChange
}

// record adds a score to the model's live figures and, every FlushEvery
// scores, writes them to the model's registry record.
func (p *Predictions) record(ctx context.Context, names *seriesNames, s Score) {
	l := p.live[s.ModelID]
	if l == nil {
		l = NewLive(p.cfg.LiveWindow)
		p.live[s.ModelID] = l
	}
	l.Add(s)
	names.absError.Observe(s.AbsError)
	mae, hit := l.Gauges()
	names.hitRatio.Set(hit)
	names.liveMAE.Set(mae)
	p.unflush[s.ModelID]++
	if p.unflush[s.ModelID] >= p.cfg.FlushEvery {
		p.flush(ctx, s.ModelID, l.Metrics())
	}
}

// Live returns a model's live figures so far.
func (p *Predictions) Live(id string) (streams.Metrics, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.live[id]
	if l == nil {
		return streams.Metrics{}, false
	}
	return l.Metrics(), true
}

// FlushAll hands every model's and series' unwritten live figures to the
// registry writer and writes whatever it holds, before returning.
func (p *Predictions) FlushAll(ctx context.Context) {
	p.mu.Lock()
	for id, n := range p.unflush {
		if n > 0 {
			p.flush(ctx, id, p.live[id].Metrics())
		}
	}
	for _, sf := range p.forecasts {
		if sf.unflush > 0 {
			p.flushForecast(ctx, sf)
		}
	}
	p.mu.Unlock()
	p.writes.drain(ctx)
}

// flush hands a model's live figures to the registry writer. The step
// does not wait for the registry: a read-modify-write of the record is
// three round trips to the server, which every FlushEvery scores stalled
// the stream (about 1,200 of them over the 20,000 candles of
// BenchmarkPipelineThroughput).
func (p *Predictions) flush(_ context.Context, id string, m streams.Metrics) {
	p.unflush[id] = 0
	if p.store != nil {
		p.writes.model(id, m)
	}
}

// flushForecast hands a series' live forecast scores to the registry
// writer.
func (p *Predictions) flushForecast(_ context.Context, sf *seriesForecast) {
	sf.unflush = 0
	if p.store != nil {
		p.writes.forecast(sf.record(p.now()))
	}
}

// WriteRegistry writes the live figures the steps hand over until ctx
// ends, newest first per model and series (an older one not yet written is
// dropped), off the step's path. The worker runs it beside the runners
// and calls FlushAll once they have drained.
func (p *Predictions) WriteRegistry(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.writes.wake:
		}
		p.writes.drain(ctx)
	}
}

// registryWrites are the live figures waiting for the registry, the
// newest per model and per series.
type registryWrites struct {
	store LiveStore
	log   *slog.Logger
	wake  chan struct{}

	mu        sync.Mutex
	models    map[string]streams.Metrics
	forecasts map[string]streams.ForecastScore

	// writing serialises drains, so that a figure taken later is never
	// overwritten by one taken before it.
	writing sync.Mutex
}

func newRegistryWrites(log *slog.Logger) *registryWrites {
	return &registryWrites{log: log, wake: make(chan struct{}, 1),
		models: map[string]streams.Metrics{}, forecasts: map[string]streams.ForecastScore{}}
}

func (w *registryWrites) model(id string, m streams.Metrics) {
	w.mu.Lock()
	w.models[id] = m
	w.mu.Unlock()
	w.signal()
}

func (w *registryWrites) forecast(s streams.ForecastScore) {
	w.mu.Lock()
	w.forecasts[seriesKey(s.Interval, s.Symbol)] = s
	w.mu.Unlock()
	w.signal()
}

func (w *registryWrites) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// drain writes what is waiting. A figure that could not be written waits
// for the next drain unless a newer one came meanwhile.
func (w *registryWrites) drain(ctx context.Context) {
	w.writing.Lock()
	defer w.writing.Unlock()
	w.mu.Lock()
	models, forecasts := w.models, w.forecasts
	w.models, w.forecasts = map[string]streams.Metrics{}, map[string]streams.ForecastScore{}
	w.mu.Unlock()
	if w.store == nil {
		return
	}
	for id, m := range models {
		// Compare-and-swap, so that a concurrent write by the trainer
		// (a demotion, a score job) is not overwritten.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		err := w.store.Modify(fctx, id, func(rec *streams.ModelRecord) error {
			if rec.Metrics == nil {
				rec.Metrics = map[string]streams.Metrics{}
			}
			rec.Metrics["live"] = m
			return nil
		})
		cancel()
		if err != nil {
			w.log.Warn("live metrics not stored", "model", id, "err", err)
			w.mu.Lock()
			if _, newer := w.models[id]; !newer {
				w.models[id] = m
			}
			w.mu.Unlock()
		}
	}
	for key, s := range forecasts {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		err := w.store.PutForecastScore(fctx, s)
		cancel()
		if err != nil {
			w.log.Warn("forecast scores not stored", "symbol", s.Symbol, "interval", s.Interval, "err", err)
			w.mu.Lock()
			if _, newer := w.forecasts[key]; !newer {
				w.forecasts[key] = s
			}
			w.mu.Unlock()
		}
	}
}

// ForecastScore returns a series' live forecast scores ("1m.BTC-USD").
func (p *Predictions) ForecastScore(series string) (streams.ForecastScore, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sf := p.forecasts[series]
	if sf == nil {
		return streams.ForecastScore{}, false
	}
	return sf.record(p.now()), true
}
