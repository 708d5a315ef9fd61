package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/streams"
)

// JetStream is what the worker needs from the bus.
type JetStream interface {
	streams.StreamLookup
	streams.Publisher
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
	ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error)
}

// Config is the trainer's configuration; a job's params override the model
// settings for that job.
type Config struct {
	// Horizon in intervals of the predicted log return.
	Horizon int
	Split   Split
	// Every schedules a training of a series after this many new vectors
	// of it; 0 trains on jobs only.
	Every int
}

// Deps are the worker's collaborators.
type Deps struct {
	JS       JetStream
	Log      *slog.Logger
	Registry prometheus.Registerer
	Now      func() time.Time
}

// Worker trains models on jobs from JOBS and on its schedule.
type Worker struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	jobs     *prometheus.CounterVec
	duration prometheus.Histogram
	models   *prometheus.CounterVec
	lag      prometheus.Gauge

	mu    sync.Mutex
	count map[string]int
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
		lag: f.NewGauge(prometheus.GaugeOpts{
			Name: "cryptostream_trainer_jobs_backlog_messages",
			Help: "Train and score jobs queued and not yet finished.",
		}),
		count: map[string]int{},
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
	hctx := context.WithoutCancel(ctx)
	jobs, err := w.deps.JS.Consumer(ctx, streams.StreamJobs, streams.ConsumerTrainerJobs)
	if err != nil {
		return fmt.Errorf("trainer: consumer: %w", err)
	}
	errh := jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { w.log.Debug("consume", "err", err) })
	// One job at a time: a training holds a few hundred MB at most and
	// two at once would only compete for the same cores.
	jc, err := jobs.Consume(streams.Acker(hctx, w.log, w.HandleJob, nil), errh, jetstream.PullMaxMessages(1))
	if err != nil {
		return fmt.Errorf("trainer: consume jobs: %w", err)
	}
	var vc jetstream.ConsumeContext
	if w.cfg.Every > 0 {
		vectors, err := w.deps.JS.Consumer(ctx, streams.StreamFeatures, streams.ConsumerTrainerFeatures)
		if err != nil {
			jc.Stop()
			return fmt.Errorf("trainer: consumer: %w", err)
		}
		vc, err = vectors.Consume(streams.Acker(hctx, w.log, w.handleVector, nil), errh, jetstream.PullPriorityGroup(streams.PriorityGroup))
		if err != nil {
			jc.Stop()
			return fmt.Errorf("trainer: consume features: %w", err)
		}
	}
	go streams.WatchLag(ctx, jobs, 15*time.Second, w.lag.Set)
	<-ctx.Done()
	jc.Drain()
	if vc != nil {
		vc.Drain()
		<-vc.Closed()
		uctx, cancel := context.WithTimeout(hctx, 2*time.Second)
		if err := streams.Unpin(uctx, w.deps.JS, streams.StreamFeatures, streams.ConsumerTrainerFeatures); err != nil {
			w.log.Debug("unpin", "err", err)
		}
		cancel()
	}
	<-jc.Closed()
	return nil
}

// handleVector counts vectors per series and queues a training job after
// every cfg.Every of them. The job id is derived from the vector, so a
// redelivered vector queues nothing new.
func (w *Worker) handleVector(ctx context.Context, msg jetstream.Msg) error {
	v, err := streams.Decode[streams.FeatureVector](msg.Data())
	if err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	w.mu.Lock()
	key := v.Subject()
	w.count[key]++
	due := w.count[key] >= w.cfg.Every
	if due {
		w.count[key] = 0
	}
	w.mu.Unlock()
	if !due {
		return nil
	}
	tok, err := streams.SymbolToken(v.Symbol)
	if err != nil {
		return streams.Permanent(err)
	}
	md, err := msg.Metadata()
	if err != nil {
		return streams.Permanent(fmt.Errorf("trainer: metadata: %w", err))
	}
	job := streams.Job{
		ID:   "sched-" + v.Interval.String() + "-" + tok + "-" + strconv.FormatInt(v.Start.Unix(), 10),
		Kind: streams.JobTrain, Symbol: v.Symbol, Interval: v.Interval,
		// The schedule trains on the vectors up to the one that triggered
		// it, not on whatever FEATURES holds when the job runs: during a
		// backfill the stream is far ahead, and a model trained on later
		// data would then forecast minutes it has already seen.
		Params:      map[string]string{"before_seq": strconv.FormatUint(md.Sequence.Stream+1, 10)},
		RequestedBy: "schedule", RequestedAt: w.deps.Now().UTC(),
	}
	if err := Submit(ctx, w.deps.JS, &job, w.deps.Now()); err != nil {
		w.mu.Lock()
		w.count[key] = w.cfg.Every // try again on the next vector
		w.mu.Unlock()
		return err
	}
	w.log.Info("training scheduled", "job", job.ID, "symbol", v.Symbol, "interval", v.Interval)
	return nil
}

// JobQueue is what submitting a job needs.
type JobQueue interface {
	streams.Publisher
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// Submit records job as queued in the jobs bucket and publishes it to JOBS.
// The gateway's POST /prediction/train and `cryptostream train` do the same.
func Submit(ctx context.Context, js JobQueue, job *streams.Job, now time.Time) error {
	if err := job.Validate(); err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, streams.BucketJobs)
	if err != nil {
		return fmt.Errorf("trainer: jobs bucket: %w", err)
	}
	if err := PutStatus(ctx, kv, streams.JobStatus{Job: *job, State: streams.JobQueued, UpdatedAt: now.UTC()}); err != nil {
		return err
	}
	if _, err := streams.Publish(ctx, js, job); err != nil {
		return fmt.Errorf("trainer: submit %s: %w", job.ID, err)
	}
	return nil
}

// PutStatus writes a job's status to the jobs bucket, keyed by the job id.
func PutStatus(ctx context.Context, kv jetstream.KeyValue, st streams.JobStatus) error {
	st.V = streams.SchemaVersion
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("trainer: encode job status: %w", err)
	}
	if _, err := kv.Put(ctx, st.Job.ID, b); err != nil {
		return fmt.Errorf("trainer: job status %s: %w", st.Job.ID, err)
	}
	return nil
}

// HandleJob runs one train or score job, moving its status from running to
// done or failed. A job that cannot succeed (bad parameters, too little
// data) fails for good; a bus error is retried.
func (w *Worker) HandleJob(ctx context.Context, msg jetstream.Msg) error {
	job, err := streams.Decode[streams.Job](msg.Data())
	if err != nil {
		w.jobs.WithLabelValues("unknown", "invalid").Inc()
		return fmt.Errorf("trainer: %w", err)
	}
	kv, err := w.deps.JS.KeyValue(ctx, streams.BucketJobs)
	if err != nil {
		return fmt.Errorf("trainer: jobs bucket: %w", err)
	}
	status := streams.JobStatus{Job: job, State: streams.JobRunning, UpdatedAt: w.deps.Now().UTC()}
	if err := PutStatus(ctx, kv, status); err != nil {
		return err
	}
	stop := keepAlive(msg)
	var result map[string]string
	switch job.Kind {
	case streams.JobTrain:
		result, err = w.Train(ctx, job)
	case streams.JobScore:
		result, err = w.Score(ctx, job)
	default:
		err = streams.Permanent(fmt.Errorf("trainer: cannot run a %s job", job.Kind))
	}
	stop()
	status.UpdatedAt = w.deps.Now().UTC()
	switch {
	case err == nil:
		status.State, status.Result = streams.JobDone, result
		w.jobs.WithLabelValues(string(job.Kind), "done").Inc()
	case errors.Is(err, streams.ErrPermanent):
		status.State, status.Error = streams.JobFailed, err.Error()
		w.jobs.WithLabelValues(string(job.Kind), "failed").Inc()
		w.log.Warn("job failed", "job", job.ID, "kind", job.Kind, "err", err)
	default:
		status.State, status.Error = streams.JobQueued, "retrying: "+err.Error()
		w.jobs.WithLabelValues(string(job.Kind), "retry").Inc()
	}
	if perr := PutStatus(ctx, kv, status); perr != nil && err == nil {
		return perr
	}
	return err
}

// keepAlive tells the server the job is still being worked on, so that a
// training longer than AckWait is not redelivered to another trainer.
func keepAlive(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// params are a job's overrides of the model settings.
func (w *Worker) params(job streams.Job) (int, Split, error) {
	h, sp := w.cfg.Horizon, w.cfg.Split
	ints := map[string]*int{"horizon": &h, "train_size": &sp.TrainSize, "test_size": &sp.TestSize, "folds": &sp.Folds, "gap": &sp.Gap}
	for k, v := range job.Params {
		if p, ok := ints[k]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return 0, sp, streams.Permanent(fmt.Errorf("trainer: param %s=%q: want a non-negative integer", k, v))
			}
			*p = n
		}
	}
	if f := job.Params["features"]; f != "" {
		sp.Features = strings.Split(f, ",")
	}
	if h < 1 || h > 1440 {
		return 0, sp, streams.Permanent(fmt.Errorf("trainer: horizon %d", h))
	}
	return h, sp, nil
}

// dataset reads the latest n vectors of a series and labels them.
func (w *Worker) dataset(ctx context.Context, job streams.Job, n, horizon int) (Dataset, error) {
	subject := streams.FeaturesSubject(job.Interval, job.Symbol)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var before uint64
	if b := job.Params["before_seq"]; b != "" {
		v, err := strconv.ParseUint(b, 10, 64)
		if err != nil {
			return Dataset{}, streams.Permanent(fmt.Errorf("trainer: param before_seq=%q: %w", b, err))
		}
		before = v
	}
	msgs, err := streams.Tail(ctx, w.deps.JS, streams.StreamFeatures, subject, n, before)
	if err != nil {
		return Dataset{}, fmt.Errorf("trainer: read features: %w", err)
	}
	vs := make([]streams.FeatureVector, 0, len(msgs))
	for _, m := range msgs {
		v, err := streams.Decode[streams.FeatureVector](m.Data)
		if err != nil {
			continue
		}
		vs = append(vs, v)
	}
	ds, err := BuildDataset(vs, horizon)
	if err != nil {
		return Dataset{}, streams.Permanent(err)
	}
	return ds, nil
}

// ModelID is the id of the model a training job produces: derived from the
// job, so that a redelivered job rewrites the same model.
func ModelID(job streams.Job) string {
	id := []byte(job.ID)
	for i, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			id[i] = '_'
		}
	}
	return "m-" + string(id)
}

// artifact is what the object store keeps of a model: the record and the
// evidence it was judged on.
type artifact struct {
	Record streams.ModelRecord `json:"record"`
	Split  Split               `json:"split"`
	Folds  []Fold              `json:"folds"`
}

// Train runs a training job: walk-forward evaluation, storage of the model
// and its artifact, the champion decision, and the models.updated notice.
func (w *Worker) Train(ctx context.Context, job streams.Job) (map[string]string, error) {
	began := time.Now()
	horizon, sp, err := w.params(job)
	if err != nil {
		return nil, err
	}
	need := sp.TrainSize + sp.Folds*sp.TestSize + max(sp.Gap, horizon) + 2*horizon
	ds, err := w.dataset(ctx, job, need, horizon)
	if err != nil {
		return nil, err
	}
	rep, err := WalkForward(ds, horizon, sp)
	if err != nil {
		// Too little data or an unknown feature will not change on retry.
		return nil, streams.Permanent(err)
	}
	reg, err := w.deps.JS.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		return nil, fmt.Errorf("trainer: registry: %w", err)
	}
	id := ModelID(job)
	champID, champEntry, champMSE, err := w.champion(ctx, reg, job, ds.Names, rep)
	if err != nil {
		return nil, err
	}
	promote, decision := Decide(rep, champID, champMSE)
	if champID == id {
		promote, decision = true, "already champion (job redelivered)"
	}
	demote := !promote && champID != "" && Demote(rep, champMSE)
	if demote {
		decision += fmt.Sprintf("; champion %s demoted: %.4g on these rows does not beat the zero-return baseline", champID, champMSE)
	}
	now := w.deps.Now().UTC()
	rec := streams.ModelRecord{
		ID: id, Symbol: job.Symbol, Interval: job.Interval, Horizon: horizon,
		Features: rep.Model.Features, Coefficients: rep.Model.Coef, ResidualStd: rep.ResidualStd,
		TrainFrom: rep.TrainFrom, TrainTo: rep.TrainTo, TestFrom: rep.TestFrom, TestTo: rep.TestTo,
		Metrics: map[string]streams.Metrics{
			"train": rep.Train, "test": rep.Test, "baseline_zero": rep.BaselineZero, "baseline_last": rep.BaselineLast,
		},
		Champion: promote, Decision: decision, Artifact: "model/" + id + ".json", CreatedAt: now,
	}
	rec.V = streams.SchemaVersion
	obj, err := w.deps.JS.ObjectStore(ctx, streams.ObjectStoreModels)
	if err != nil {
		return nil, fmt.Errorf("trainer: object store: %w", err)
	}
	art, err := json.Marshal(artifact{Record: rec, Split: sp, Folds: rep.Folds})
	if err != nil {
		return nil, fmt.Errorf("trainer: encode artifact: %w", err)
	}
	if _, err := obj.PutBytes(ctx, rec.Artifact, art); err != nil {
		return nil, fmt.Errorf("trainer: store artifact: %w", err)
	}
	champion := champID
	if err := putJSON(ctx, reg, streams.ModelKey(id), rec); err != nil {
		return nil, err
	}
	if demote {
		// Compare-and-delete: a concurrent promotion wins over this.
		if err := reg.Delete(ctx, streams.ChampionKey(job.Interval, job.Symbol), jetstream.LastRevision(champEntry.Revision())); err != nil {
			return nil, fmt.Errorf("trainer: demote %s: %w", champID, err)
		}
		champion = ""
		w.demote(ctx, reg, champID)
	}
	if promote && champID != id {
		// Compare-and-swap on the champion key: a concurrent promotion
		// makes this job retry and decide again against the new champion.
		key := streams.ChampionKey(job.Interval, job.Symbol)
		if champEntry == nil {
			_, err = reg.Create(ctx, key, []byte(id))
		} else {
			_, err = reg.Update(ctx, key, []byte(id), champEntry.Revision())
		}
		if err != nil {
			return nil, fmt.Errorf("trainer: promote %s: %w", id, err)
		}
		champion = id
		if champID != "" {
			w.demote(ctx, reg, champID)
		}
	}
	label := "rejected"
	if promote {
		label = "promoted"
	}
	w.models.WithLabelValues(label).Inc()
	w.duration.Observe(time.Since(began).Seconds())
	w.log.Info("model trained", "model", id, "symbol", job.Symbol, "interval", job.Interval, "decision", decision,
		"test_mse", rep.Test.MSE, "baseline_zero_mse", rep.BaselineZero.MSE, "baseline_last_mse", rep.BaselineLast.MSE)
	note := streams.ModelUpdated{ModelID: id, Symbol: job.Symbol, Interval: job.Interval, Promoted: promote, Champion: champion, Decision: decision, At: now}
	if _, err := streams.Publish(ctx, w.deps.JS, &note); err != nil {
		return nil, fmt.Errorf("trainer: models.updated: %w", err)
	}
	return map[string]string{
		"model_id": id, "promoted": strconv.FormatBool(promote), "decision": decision, "champion": champion,
		"test_mse": fmtF(rep.Test.MSE), "baseline_zero_mse": fmtF(rep.BaselineZero.MSE), "baseline_last_mse": fmtF(rep.BaselineLast.MSE),
	}, nil
}

func fmtF(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }

// champion returns the series' current champion and its MSE on the
// candidate's held-out rows (-1 when there is no champion). A champion that
// cannot be scored on them (another feature set) is judged by its own
// stored test MSE. The champion may have been trained on some of these
// rows, which favours it: promotion errs on the side of keeping it.
func (w *Worker) champion(ctx context.Context, reg jetstream.KeyValue, job streams.Job, names []string, rep Report) (string, jetstream.KeyValueEntry, float64, error) {
	entry, err := reg.Get(ctx, streams.ChampionKey(job.Interval, job.Symbol))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil, -1, nil
	}
	if err != nil {
		return "", nil, 0, fmt.Errorf("trainer: read champion: %w", err)
	}
	id := string(entry.Value())
	rec, _, err := GetModel(ctx, reg, id)
	if err != nil {
		return "", nil, 0, err
	}
	m, err := FromRecord(rec)
	if err != nil {
		return id, entry, rec.Metrics["test"].MSE, nil
	}
	if rec.Horizon == rep.Horizon {
		if s, err := Score(m, names, rep.TestRows); err == nil {
			return id, entry, s.MSE, nil
		}
	}
	return id, entry, rec.Metrics["test"].MSE, nil
}

// demote clears the champion flag of the previous champion's record; the
// champion key is the truth, the flag is for display, so a failure is only
// logged.
func (w *Worker) demote(ctx context.Context, reg jetstream.KeyValue, id string) {
	rec, rev, err := GetModel(ctx, reg, id)
	if err == nil {
		rec.Champion = false
		err = updateJSON(ctx, reg, streams.ModelKey(id), rec, rev)
	}
	if err != nil {
		w.log.Warn("demote previous champion", "model", id, "err", err)
	}
}

// JobModelID is the model a score or predict job names: its model_id
// parameter, else the series' champion. No champion is permanent for the job.
func JobModelID(ctx context.Context, reg jetstream.KeyValue, job streams.Job) (string, error) {
	if id := job.Params["model_id"]; id != "" {
		return id, nil
	}
	e, err := reg.Get(ctx, streams.ChampionKey(job.Interval, job.Symbol))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", streams.Permanent(fmt.Errorf("trainer: no champion for %s %s", job.Symbol, job.Interval))
	}
	if err != nil {
		return "", fmt.Errorf("trainer: read champion: %w", err)
	}
	return string(e.Value()), nil
}

// GetModel reads a model record and its revision from the registry.
func GetModel(ctx context.Context, reg jetstream.KeyValue, id string) (streams.ModelRecord, uint64, error) {
	e, err := reg.Get(ctx, streams.ModelKey(id))
	if err != nil {
		return streams.ModelRecord{}, 0, fmt.Errorf("trainer: read model %s: %w", id, err)
	}
	var rec streams.ModelRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, 0, streams.Permanent(fmt.Errorf("trainer: decode model %s: %w", id, err))
	}
	return rec, e.Revision(), nil
}

func putJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("trainer: encode %s: %w", key, err)
	}
	if _, err := kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("trainer: put %s: %w", key, err)
	}
	return nil
}

func updateJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any, rev uint64) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("trainer: encode %s: %w", key, err)
	}
	if _, err := kv.Update(ctx, key, b, rev); err != nil {
		return fmt.Errorf("trainer: update %s: %w", key, err)
	}
	return nil
}

// Score runs a score job: the series' champion (or params model_id) on the
// latest held-out-sized stretch of vectors, stored as the model's "scored"
// metrics.
func (w *Worker) Score(ctx context.Context, job streams.Job) (map[string]string, error) {
	reg, err := w.deps.JS.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		return nil, fmt.Errorf("trainer: registry: %w", err)
	}
	id, err := JobModelID(ctx, reg, job)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		rec, rev, err := GetModel(ctx, reg, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, streams.Permanent(err)
		}
		if err != nil {
			return nil, err
		}
		m, err := FromRecord(rec)
		if err != nil {
			return nil, streams.Permanent(err)
		}
		n := w.cfg.Split.TestSize
		if v, err := strconv.Atoi(job.Params["rows"]); err == nil && v > 0 {
			n = v
		}
		ds, err := w.dataset(ctx, job, n+2*rec.Horizon+1, rec.Horizon)
		if err != nil {
			return nil, err
		}
		s, err := Score(m, ds.Names, ds.Rows)
		if err != nil {
			return nil, streams.Permanent(err)
		}
		if rec.Metrics == nil {
			rec.Metrics = map[string]streams.Metrics{}
		}
		rec.Metrics["scored"] = s
		err = updateJSON(ctx, reg, streams.ModelKey(id), rec, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) && attempt < 5 {
			continue // the predictor wrote its live figures meanwhile
		}
		if err != nil {
			return nil, err
		}
		return map[string]string{"model_id": id, "n": strconv.Itoa(s.N), "mse": fmtF(s.MSE), "mae": fmtF(s.MAE),
			"r2": fmtF(s.R2), "direction_accuracy": fmtF(s.DirectionAccuracy)}, nil
	}
}
