package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"cryptostream/forecast"
	"cryptostream/pipeline"
	"cryptostream/registry"
	"cryptostream/streams"
)

// JetStream is what the worker needs from the bus.
type JetStream interface {
	pipeline.JetStream
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
	ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error)
}

// Config is the trainer's configuration; a job's params override the model
// settings for that job.
type Config struct {
	// Horizon in intervals of the predicted log return.
	Horizon int
	Split   Split
	// Every schedules a training of a series on every Every-th interval
	// (see Schedule); 0 trains on jobs only.
	Every int
	// Rule is the promotion rule; its zero value means
	// forecast.DefaultRule.
	Rule forecast.Rule
	// Candidates are the feature sets each training tries, the best of
	// which is put to the rule, corrected for their number; none means
	// the split's features (every feature by default).
	Candidates [][]string
}

// Deps are the worker's collaborators.
type Deps struct {
	JS       JetStream
	Log      *slog.Logger
	Registry prometheus.Registerer
	Now      func() time.Time
	// Instance names this instance among the schedule's owners (a random
	// id when empty).
	Instance string
}

// Worker trains models on jobs from JOBS and on its schedule: two stages.
// The jobs consumer is shared by every instance (each job goes to one);
// the schedule is partitioned by symbol between the instances, so that
// there is one schedule however many run, and a lost instance's symbols
// move to another within the lease TTL.
type Worker struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	jobs     *prometheus.CounterVec
	duration prometheus.Histogram
	models   *prometheus.CounterVec

	// Set by Run before the runners start.
	registry *registry.Models
	queue    *registry.Jobs
}

// New validates cfg; it does no I/O.
func New(cfg Config, deps Deps) (*Worker, error) {
	if deps.JS == nil || deps.Log == nil || deps.Registry == nil {
		return nil, errors.New("trainer: JS, Log and Registry are required")
	}
	if cfg.Horizon < 1 {
		cfg.Horizon = 1
	}
	if cfg.Split.TrainSize == 0 {
		cfg.Split = DefaultSplit()
	}
	if cfg.Rule == (forecast.Rule{}) {
		cfg.Rule = forecast.DefaultRule()
	}
	if !(cfg.Rule.Alpha > 0 && cfg.Rule.Alpha < 1) || !(cfg.Rule.Margin >= 0 && cfg.Rule.Margin < 1) || cfg.Rule.MinRows < 2 {
		return nil, fmt.Errorf("trainer: promotion rule %+v: alpha in (0, 1), margin in [0, 1), at least 2 rows", cfg.Rule)
	}
	if cfg.Every < 0 {
		return nil, fmt.Errorf("trainer: schedule every %d vectors", cfg.Every)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	f := promauto.With(deps.Registry)
	return &Worker{
		cfg: cfg, deps: deps, log: deps.Log.With("worker", "trainer"),
		jobs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_trainer_jobs_total",
			Help: "Jobs handled by the trainer, by kind and outcome.",
		}, []string{"kind", "outcome"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "cryptostream_trainer_training_duration_seconds",
			Help:    "Time to read the features, run the walk-forward evaluation and store the model.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}),
		models: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_trainer_models_total",
			Help: "Models trained, by decision (promoted or rejected).",
		}, []string{"decision"}),
	}, nil
}

// Run consumes jobs, and vectors for the schedule, until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	err := w.run(ctx)
	if err != nil && ctx.Err() != nil {
		// Stopped while still starting: a clean stop, not a failure.
		return nil
	}
	return err
}

func (w *Worker) run(ctx context.Context) error {
	var err error
	if w.registry, err = registry.OpenModels(ctx, w.deps.JS); err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	if w.queue, err = registry.OpenJobs(ctx, w.deps.JS, w.deps.Now); err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	pdeps := pipeline.Deps{JS: w.deps.JS, Log: w.log, Registry: w.deps.Registry}
	// One job at a time: a training holds a few hundred MB at most and
	// two at once would only compete for the same cores.
	jobs, err := pipeline.New(pipeline.Config{Name: "trainer-jobs", Stream: streams.StreamJobs, Consumer: streams.ConsumerTrainerJobs,
		Batch: 1, Retry: pipeline.RetryRedeliver}, jobStage{w: w}, pdeps)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return jobs.Run(gctx) })
	if w.cfg.Every > 0 {
		p, _ := streams.Declare(1).Partition(streams.ConsumerTrainerFeatures)
		sdeps := pdeps
		sdeps.Instance = w.deps.Instance
		sched, err := pipeline.New(pipeline.Config{Name: "trainer-schedule", Stream: streams.StreamFeatures, Partitioned: &p},
			&Schedule{Every: w.cfg.Every, Now: w.deps.Now, Queue: w.queue}, sdeps)
		if err != nil {
			return err
		}
		g.Go(func() error { return sched.Run(gctx) })
	}
	return g.Wait()
}

// JobQueuer records a job as queued before its runner publishes it.
type JobQueuer interface {
	Queue(ctx context.Context, job streams.Job) error
}

// Schedule is the stage that queues a training of a series on the vector
// of every Every-th interval since the Unix epoch (its start, counted in
// intervals, a multiple of Every). The rule reads nothing but the vector,
// and the job id is derived from it: whichever instance owns the series,
// after a restart or a failover, the same vectors queue the same jobs, so
// there is one schedule, not one per instance or per start (a counter of
// vectors seen would start again at each owner). A new series is first
// trained at the next grid point, on what it has by then.
type Schedule struct {
	Every int
	Now   func() time.Time
	Queue JobQueuer
}

// Key implements pipeline.Stage.
func (s *Schedule) Key(m pipeline.Msg) string { return m.Subject }

// Warm implements pipeline.Stage: the schedule keeps no state.
func (s *Schedule) Warm(context.Context, pipeline.History, string, pipeline.Msg) error { return nil }

// Reset implements pipeline.Stage.
func (s *Schedule) Reset(string) {}

// Step implements pipeline.Stage: the job when one is due.
func (s *Schedule) Step(ctx context.Context, m pipeline.Msg) ([]streams.Event, error) {
	v, err := streams.Decode[streams.FeatureVector](m.Data)
	if err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	if !v.Interval.Valid() {
		return nil, streams.Permanent(fmt.Errorf("trainer: vector of interval %d", int(v.Interval)))
	}
	if v.Start.Unix()/int64(v.Interval.Duration()/time.Second)%int64(s.Every) != 0 {
		return nil, nil
	}
	tok, err := streams.SymbolToken(v.Symbol)
	if err != nil {
		return nil, streams.Permanent(err)
	}
	job := streams.Job{
		ID:   "sched-" + v.Interval.String() + "-" + tok + "-" + strconv.FormatInt(v.Start.Unix(), 10),
		Kind: streams.JobTrain, Symbol: v.Symbol, Interval: v.Interval,
		// The schedule trains on the vectors up to the one that triggered
		// it, not on whatever FEATURES holds when the job runs: during a
		// backfill the stream is far ahead, and a model trained on later
		// data would then forecast minutes it has already seen.
		Params:      map[string]string{"before_seq": strconv.FormatUint(m.Seq+1, 10)},
		RequestedBy: "schedule", RequestedAt: s.Now().UTC(),
	}
	if err := s.Queue.Queue(ctx, job); err != nil {
		return nil, err // retried in place: the same vector, the same job
	}
	return []streams.Event{&job}, nil
}

// jobStage runs train and score jobs: no series, no outputs but the
// registry's.
type jobStage struct {
	pipeline.Stateless
	w *Worker
}

func (s jobStage) Step(ctx context.Context, m pipeline.Msg) ([]streams.Event, error) {
	return nil, s.w.HandleJob(ctx, m.Data)
}

// HandleJob runs one train or score job, moving its status from running to
// done or failed. A job that cannot succeed (bad parameters, too little
// data) fails for good; a bus error is retried.
func (w *Worker) HandleJob(ctx context.Context, data []byte) error {
	job, err := streams.Decode[streams.Job](data)
	if err != nil {
		w.jobs.WithLabelValues("unknown", "invalid").Inc()
		return fmt.Errorf("trainer: %w", err)
	}
	if err := w.queue.Start(ctx, job); err != nil {
		return err
	}
	var result map[string]string
	switch job.Kind {
	case streams.JobTrain:
		result, err = w.Train(ctx, job)
	case streams.JobScore:
		result, err = w.Score(ctx, job)
	default:
		err = streams.Permanent(fmt.Errorf("trainer: cannot run a %s job", job.Kind))
	}
	switch {
	case err == nil:
		w.jobs.WithLabelValues(string(job.Kind), "done").Inc()
	case errors.Is(err, streams.ErrPermanent):
		w.jobs.WithLabelValues(string(job.Kind), "failed").Inc()
		w.log.Warn("job failed", "job", job.ID, "kind", job.Kind, "err", err)
	default:
		w.jobs.WithLabelValues(string(job.Kind), "retry").Inc()
	}
	if ferr := w.queue.Finish(ctx, job, result, err); ferr != nil && err == nil {
		return ferr
	}
	return err
}
