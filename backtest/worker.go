package backtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/pipeline"
	"cryptostream/registry"
	"cryptostream/streams"
)

// ParamRequest is the job parameter holding the Request as JSON.
const ParamRequest = "request"

// ReportObject is the name of a backtest job's HTML report in the models
// object store.
func ReportObject(jobID string) string { return "backtest/" + jobID + ".html" }

// MaxReportBytes bounds the JSON report a job status carries (a sweep's
// results are cut to fit).
const MaxReportBytes = 256 << 10

// WorkerJS is what the backtest worker needs of JetStream.
type WorkerJS interface {
	pipeline.JetStream
	registry.JobQueue
	ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error)
}

// WorkerConfig is the worker's configuration.
type WorkerConfig struct {
	// Horizons are the predictor's forecast horizons.
	Horizons []time.Duration
}

// WorkerDeps are the worker's collaborators.
type WorkerDeps struct {
	JS       WorkerJS
	Log      *slog.Logger
	Registry prometheus.Registerer
}

// Worker runs backtest jobs from JOBS: the report JSON goes into the job
// status, the HTML page into the models object store.
type Worker struct {
	cfg  WorkerConfig
	deps WorkerDeps
	log  *slog.Logger
	jobs *prometheus.CounterVec
}

// NewWorker validates its arguments; it does no I/O.
func NewWorker(cfg WorkerConfig, deps WorkerDeps) (*Worker, error) {
	if deps.JS == nil || deps.Log == nil || deps.Registry == nil {
		return nil, errors.New("backtest: JS, Log and Registry are required")
	}
	return &Worker{cfg: cfg, deps: deps, log: deps.Log.With("worker", "backtest"),
		jobs: promauto.With(deps.Registry).NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_backtest_jobs_total",
			Help: "Backtest jobs handled, by outcome (done, failed, retried, invalid).",
		}, []string{"outcome"}),
	}, nil
}

// Run takes jobs until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	jobs, err := registry.OpenJobs(ctx, w.deps.JS, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("backtest: %w", err)
	}
	models, err := registry.OpenModels(ctx, w.deps.JS)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("backtest: %w", err)
	}
	r, err := pipeline.New(pipeline.Config{Name: "backtest-jobs", Stream: streams.StreamJobs, Consumer: streams.ConsumerBacktestJobs,
		Batch: 1, Retry: pipeline.RetryRedeliver}, jobStage{w: w, jobs: jobs, models: models},
		pipeline.Deps{JS: w.deps.JS, Log: w.log, Registry: w.deps.Registry})
	if err != nil {
		return fmt.Errorf("backtest: %w", err)
	}
	return r.Run(ctx)
}

type jobStage struct {
	pipeline.Stateless
	w      *Worker
	jobs   *registry.Jobs
	models *registry.Models
}

// Step runs one job; a request that cannot succeed fails for good, a bus
// error is retried.
func (s jobStage) Step(ctx context.Context, m pipeline.Msg) ([]streams.Event, error) {
	job, err := streams.Decode[streams.Job](m.Data)
	if err != nil {
		s.w.jobs.WithLabelValues("invalid").Inc()
		return nil, fmt.Errorf("backtest: %w", err)
	}
	if err := s.jobs.Start(ctx, job); err != nil {
		return nil, err
	}
	result, err := s.run(ctx, job)
	if errors.Is(err, ErrSettings) || errors.Is(err, ErrBadRange) || errors.Is(err, ErrEmptyRange) ||
		errors.Is(err, ErrUnknownAsset) || errors.Is(err, ErrUnknownModel) || errors.Is(err, streams.ErrBadPrefix) {
		err = streams.Permanent(err)
	}
	outcome := "done"
	switch {
	case errors.Is(err, streams.ErrPermanent):
		outcome = "failed"
	case err != nil:
		outcome = "retried"
	}
	s.w.jobs.WithLabelValues(outcome).Inc()
	if ferr := s.jobs.Finish(ctx, job, result, err); ferr != nil {
		return nil, ferr
	}
	if err != nil {
		s.w.log.Warn("backtest job", "job", job.ID, "outcome", outcome, "err", err)
	}
	return nil, err
}

func (s jobStage) run(ctx context.Context, job streams.Job) (map[string]string, error) {
	var q Request
	if err := json.Unmarshal([]byte(job.Params[ParamRequest]), &q); err != nil {
		return nil, fmt.Errorf("%w: job %s: param %s: %w", ErrSettings, job.ID, ParamRequest, err)
	}
	if q.Symbol != job.Symbol || q.Interval != job.Interval {
		return nil, fmt.Errorf("%w: job %s is for %s %s, its request for %s %s", ErrSettings, job.ID, job.Symbol, job.Interval, q.Symbol, q.Interval)
	}
	step := 0
	deps := Deps{JS: s.w.deps.JS, Models: s.models, Horizons: s.w.cfg.Horizons, Log: s.w.log,
		Progress: func(read, total int) {
			// A status write per 5% read: enough for a progress bar,
			// few enough not to load the bucket.
			if p := 20 * read / max(total, 1); p > step {
				step = p
				_ = s.jobs.Progress(ctx, job, map[string]string{"read": strconv.Itoa(read), "total": strconv.Itoa(total)})
			}
		}}
	run, rep, err := Execute(ctx, q, deps)
	if err != nil {
		return nil, err
	}
	page, err := HTML(run, rep)
	if err != nil {
		return nil, err
	}
	obj, err := s.w.deps.JS.ObjectStore(ctx, streams.ObjectStoreModels)
	if err != nil {
		return nil, fmt.Errorf("backtest: object store: %w", err)
	}
	if _, err := obj.PutBytes(ctx, ReportObject(job.ID), page); err != nil {
		return nil, fmt.Errorf("backtest: store report: %w", err)
	}
	js, err := json.Marshal(rep)
	for err == nil && len(js) > MaxReportBytes && rep.Sweep != nil && len(rep.Sweep.Results) > 1 {
		rep.Sweep.Results = rep.Sweep.Results[:len(rep.Sweep.Results)/2]
		js, err = json.Marshal(rep)
	}
	if err != nil {
		return nil, fmt.Errorf("backtest: encode report: %w", err)
	}
	return map[string]string{"report": string(js), "report_html": ReportObject(job.ID),
		"read": strconv.Itoa(run.Counts.Read), "total": strconv.Itoa(run.Counts.Read)}, nil
}
