package predictor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"cryptostream/ops"
	"cryptostream/pipeline"
	"cryptostream/registry"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// Stage is the trace stage the worker stamps.
const Stage = "predictor"

// JetStream is what the worker needs from the bus.
type JetStream interface {
	pipeline.JetStream
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
	// PublishTimeout bounds waiting for a batch's PubAcks.
	PublishTimeout time.Duration
	// Horizons are the forecast horizons (DefaultHorizons when empty).
	Horizons []time.Duration
	// Partitioned shares the symbols with the stage's other instances,
	// one consumer per symbol (streams.Partitioned), instead of one
	// active instance on Consumer for all of them.
	Partitioned bool
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
	// Seed, when set, warms the volatility model of a series whose
	// stream holds too little history (the demo's recording).
	Seed Seeder
	// Instance and OnOwner are pipeline.Deps', for a partitioned stage.
	Instance string
	OnOwner  func(partition string, owned bool)
}

// Worker runs the Predictions stage on FEATURES, publishing to
// PREDICTIONS, with the champions watched in the registry, and answers
// predict jobs.
type Worker struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	stage *Predictions
	swaps prometheus.Counter
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
	if deps.Now == nil {
		deps.Now = time.Now
	}
	log := deps.Log.With("worker", "predictor")
	w := &Worker{
		cfg: cfg, deps: deps, log: log,
		stage: NewPredictions(PredictionsConfig{Z: cfg.Z, LiveWindow: cfg.LiveWindow, FlushEvery: cfg.FlushEvery,
			Horizons: cfg.Horizons, Seed: deps.Seed}, deps.Now, log, deps.Registry),
		swaps: registerCounter(deps.Registry, prometheus.CounterOpts{
			Name: "cryptostream_predictor_champion_swaps_total",
			Help: "Champion models loaded from the registry without a restart.",
		}),
	}
	if deps.Health != nil {
		deps.Health.AddDetail("predictor", w.stage.detail)
	}
	return w, nil
}

func registerCounter(reg prometheus.Registerer, opts prometheus.CounterOpts) prometheus.Counter {
	c := prometheus.NewCounter(opts)
	reg.MustRegister(c)
	return c
}

// Run loads the champions, then consumes FEATURES and predict jobs until
// ctx ends. The registry is watched throughout so a new champion takes
// over from the next vector on.
func (w *Worker) Run(ctx context.Context) error {
	err := w.run(ctx)
	if err != nil && ctx.Err() != nil {
		// Stopped while still starting: a clean stop, not a failure.
		return nil
	}
	return err
}

func (w *Worker) run(ctx context.Context) error {
	models, err := registry.OpenModels(ctx, w.deps.JS)
	if err != nil {
		return fmt.Errorf("predictor: %w", err)
	}
	w.stage.setStore(models)
	pdeps := pipeline.Deps{JS: w.deps.JS, Log: w.log, Registry: w.deps.Registry}
	vcfg := pipeline.Config{Name: Stage, Stream: streams.StreamFeatures, Consumer: w.cfg.Consumer,
		Pinned: true, PublishTimeout: w.cfg.PublishTimeout}
	if w.cfg.Partitioned {
		p, _ := streams.Declare(1).Partition(streams.ConsumerPredictor)
		vcfg.Partitioned = &p
	}
	vdeps := pdeps
	vdeps.Instance, vdeps.OnOwner = w.deps.Instance, w.deps.OnOwner
	vectors, err := pipeline.New(vcfg, w.stage, vdeps)
	if err != nil {
		return err
	}
	jobs, err := pipeline.New(pipeline.Config{Name: "predictor-jobs", Stream: streams.StreamJobs, Consumer: streams.ConsumerPredictorJobs,
		Batch: 1, Retry: pipeline.RetryRedeliver}, jobStage{w: w}, pdeps)
	if err != nil {
		return err
	}
	// The watch outlives the runners, which drain after ctx ends.
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	ready := make(chan struct{})
	watched := make(chan error, 1)
	go func() {
		watched <- models.WatchChampions(wctx, func() { close(ready) }, func(c registry.ChampionChange) { w.apply(wctx, models, c) })
	}()
	// Consuming before the champions are loaded would skip the vectors
	// that arrive meanwhile: a restart would lose predictions.
	select {
	case <-ready:
	case err := <-watched:
		return fmt.Errorf("predictor: %w", err)
	case <-ctx.Done():
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	// The writer stops with the watch, after the runners have drained;
	// FlushAll then writes what it has not.
	writerDone := make(chan struct{})
	go func() { w.stage.WriteRegistry(wctx); close(writerDone) }()
	g.Go(func() error { return vectors.Run(gctx) })
	g.Go(func() error { return jobs.Run(gctx) })
	g.Go(func() error {
		select {
		case err := <-watched:
			if err != nil {
				return fmt.Errorf("predictor: %w", err)
			}
		case <-gctx.Done():
		}
		return nil
	})
	err = g.Wait()
	stopWatch()
	<-writerDone
	w.stage.FlushAll(context.WithoutCancel(ctx))
	return err
}

// apply loads the model a champion change names and swaps it in.
func (w *Worker) apply(ctx context.Context, models *registry.Models, c registry.ChampionChange) {
	key := seriesKey(c.Interval, c.Symbol)
	if c.ModelID == "" {
		w.stage.SetChampion(key, nil)
		w.log.Info("champion removed", "series", key)
		return
	}
	var rec streams.ModelRecord
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if rec, _, err = models.Get(ctx, c.ModelID); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err == nil {
		err = w.stage.SetChampion(key, &rec)
	}
	if err != nil {
		w.log.Error("champion not loaded, keeping the previous one", "series", key, "model", c.ModelID, "err", err)
		return
	}
	w.swaps.Inc()
	w.log.Info("champion loaded", "series", key, "model", c.ModelID, "horizon", rec.Horizon)
}

// jobStage answers predict jobs: no series, nothing published.
type jobStage struct {
	pipeline.Stateless
	w *Worker
}

// Step runs a predict job, moving its status to done or failed.
func (s jobStage) Step(ctx context.Context, m pipeline.Msg) ([]streams.Event, error) {
	job, err := streams.Decode[streams.Job](m.Data)
	if err != nil {
		return nil, fmt.Errorf("predictor: %w", err)
	}
	jobs, err := registry.OpenJobs(ctx, s.w.deps.JS, s.w.deps.Now)
	if err != nil {
		return nil, fmt.Errorf("predictor: %w", err)
	}
	if err := jobs.Start(ctx, job); err != nil {
		return nil, err
	}
	result, err := PredictJob(ctx, s.w.deps.JS, job, s.w.cfg.Z)
	if perr := jobs.Finish(ctx, job, result, err); perr != nil && err == nil {
		return nil, perr
	}
	return nil, err
}

// detail is the /readyz line: which series get no prediction and why.
func (p *Predictions) detail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var missing []string
	for k, v := range p.noChamp {
		if v {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	switch {
	case len(missing) > 0:
		return "no champion model for " + strings.Join(missing, ", ") + ": publishing the no-change forecast for them"
	case len(p.champions) == 0:
		return "no champion model yet: publishing the no-change forecast"
	}
	return ""
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
