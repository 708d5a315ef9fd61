package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/registry"
	"cryptostream/streams"
)

// params are a job's overrides of the model settings: the horizon, the
// split, and the candidate feature sets (features: one set, comma
// separated; candidates: several sets separated by semicolons).
func (w *Worker) params(job streams.Job) (int, Split, [][]string, error) {
	h, sp, sets := w.cfg.Horizon, w.cfg.Split, w.cfg.Candidates
	ints := map[string]*int{"horizon": &h, "train_size": &sp.TrainSize, "test_size": &sp.TestSize, "folds": &sp.Folds, "gap": &sp.Gap}
	for k, v := range job.Params {
		if p, ok := ints[k]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return 0, sp, nil, streams.Permanent(fmt.Errorf("trainer: param %s=%q: want a non-negative integer", k, v))
			}
			*p = n
		}
	}
	if f := job.Params["features"]; f != "" {
		sets = [][]string{strings.Split(f, ",")}
	}
	if c := job.Params["candidates"]; c != "" {
		sets = nil
		for _, f := range strings.Split(c, ";") {
			sets = append(sets, strings.Split(f, ","))
		}
	}
	if h < 1 || h > 1440 {
		return 0, sp, nil, streams.Permanent(fmt.Errorf("trainer: horizon %d", h))
	}
	return h, sp, sets, nil
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
	horizon, sp, sets, err := w.params(job)
	if err != nil {
		return nil, err
	}
	need := sp.TrainSize + sp.Folds*sp.TestSize + max(sp.Gap, horizon) + 2*horizon
	ds, err := w.dataset(ctx, job, need, horizon)
	if err != nil {
		return nil, err
	}
	rep, err := Search(ds, horizon, sp, sets)
	if err != nil {
		// Too little data or an unknown feature will not change on retry.
		return nil, streams.Permanent(err)
	}
	reg := w.registry
	id := ModelID(job)
	champ, sitting, err := w.champion(ctx, job)
	if err != nil {
		return nil, err
	}
	champID := champ.ID
	dec, err := Decide(w.cfg.Rule, rep, ds.Names, sitting, max(len(sets), 1), job.Interval.Duration())
	if err != nil {
		return nil, streams.Permanent(err)
	}
	promote, demote, decision := dec.Promote, dec.Demote, dec.Reason
	if champID == id {
		promote, demote, decision = true, false, "already champion (job redelivered)"
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
	if err := reg.Put(ctx, rec); err != nil {
		return nil, err
	}
	if demote {
		// Compare-and-delete: a concurrent promotion wins over this.
		if err := reg.Demote(ctx, job.Interval, job.Symbol, champ); err != nil {
			return nil, fmt.Errorf("trainer: %w", err)
		}
		champion = ""
		w.demote(ctx, champID)
	}
	if promote && champID != id {
		// Compare-and-swap on the champion key: a concurrent promotion
		// makes this job retry and decide again against the new champion.
		if err := reg.Promote(ctx, job.Interval, job.Symbol, id, champ); err != nil {
			return nil, fmt.Errorf("trainer: %w", err)
		}
		champion = id
		if champID != "" {
			w.demote(ctx, champID)
		}
	}
	label := "rejected"
	if promote {
		label = "promoted"
	}
	w.models.WithLabelValues(label).Inc()
	w.duration.Observe(time.Since(began).Seconds())
	w.log.Info("model trained", "model", id, "symbol", job.Symbol, "interval", job.Interval, "decision", decision,
		"test_mse", rep.Test.MSE, "baseline_zero_mse", rep.BaselineZero.MSE, "baseline_last_mse", rep.BaselineLast.MSE,
		"dm_no_change", dec.Verdict.VsNoChange.Stat, "p_no_change", dec.Verdict.AdjustedPNoChange, "candidates", max(len(sets), 1))
	note := streams.ModelUpdated{ModelID: id, Symbol: job.Symbol, Interval: job.Interval, Promoted: promote, Champion: champion, Decision: decision, At: now}
	if _, err := streams.Publish(ctx, w.deps.JS, &note); err != nil {
		return nil, fmt.Errorf("trainer: models.updated: %w", err)
	}
	return map[string]string{
		"model_id": id, "promoted": strconv.FormatBool(promote), "decision": decision, "champion": champion,
		"test_mse": fmtF(rep.Test.MSE), "baseline_zero_mse": fmtF(rep.BaselineZero.MSE), "baseline_last_mse": fmtF(rep.BaselineLast.MSE),
		"dm_no_change": fmtF(dec.Verdict.VsNoChange.Stat), "p_no_change": fmtF(dec.Verdict.AdjustedPNoChange), "candidates": strconv.Itoa(max(len(sets), 1)),
	}, nil
}

func fmtF(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }

// champion returns the series' current champion key and the champion as
// the promotion rule judges it (nil when there is none). A record that
// no longer describes a linear model is a champion that cannot forecast:
// the rule then judges the candidate against no-change alone.
func (w *Worker) champion(ctx context.Context, job streams.Job) (registry.Champion, *Champion, error) {
	champ, err := w.registry.Champion(ctx, job.Interval, job.Symbol)
	if errors.Is(err, registry.ErrNoChampion) {
		return registry.Champion{}, nil, nil
	}
	if err != nil {
		return registry.Champion{}, nil, fmt.Errorf("trainer: %w", err)
	}
	rec, _, err := w.registry.Get(ctx, champ.ID)
	if err != nil {
		return registry.Champion{}, nil, fmt.Errorf("trainer: %w", err)
	}
	c := &Champion{ID: champ.ID, Horizon: rec.Horizon, TrainTo: rec.TrainTo}
	if m, err := FromRecord(rec); err == nil {
		c.Model = &m
	}
	return champ, c, nil
}

// demote clears the champion flag of the previous champion's record; the
// champion key is the truth, the flag is for display, so a failure is only
// logged.
func (w *Worker) demote(ctx context.Context, id string) {
	err := w.registry.Modify(ctx, id, func(rec *streams.ModelRecord) error {
		rec.Champion = false
		return nil
	})
	if err != nil {
		w.log.Warn("demote previous champion", "model", id, "err", err)
	}
}

// Score runs a score job: the series' champion (or params model_id) on the
// latest held-out-sized stretch of vectors, stored as the model's "scored"
// metrics.
func (w *Worker) Score(ctx context.Context, job streams.Job) (map[string]string, error) {
	id, err := w.registry.JobModel(ctx, job)
	if err != nil {
		return nil, err
	}
	var s streams.Metrics
	// The predictor may write its live figures meanwhile: Modify reads
	// the record again and this scores it again.
	err = w.registry.Modify(ctx, id, func(rec *streams.ModelRecord) error {
		m, err := FromRecord(*rec)
		if err != nil {
			return streams.Permanent(err)
		}
		n := w.cfg.Split.TestSize
		if v, err := strconv.Atoi(job.Params["rows"]); err == nil && v > 0 {
			n = v
		}
		ds, err := w.dataset(ctx, job, n+2*rec.Horizon+1, rec.Horizon)
		if err != nil {
			return err
		}
		if s, err = Score(m, ds.Names, ds.Rows); err != nil {
			return streams.Permanent(err)
		}
		if rec.Metrics == nil {
			rec.Metrics = map[string]streams.Metrics{}
		}
		rec.Metrics["scored"] = s
		return nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, streams.Permanent(err)
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"model_id": id, "n": strconv.Itoa(s.N), "mse": fmtF(s.MSE), "mae": fmtF(s.MAE),
		"r2": fmtF(s.R2), "direction_accuracy": fmtF(s.DirectionAccuracy)}, nil
}
