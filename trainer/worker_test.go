package trainer_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/features"
	"cryptostream/natstest"
	"cryptostream/registry"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// meanReverting returns n 1-minute candles whose log returns follow
// r[t] = -0.4 r[t-1] + noise: a pattern the ret_1 feature exposes, so a
// model must beat the zero-return baseline on it.
func meanReverting(n int, seed uint64) []streams.Candle { return regimes(seed, n, 0) }

// regimes returns a mean-reverting stretch of n candles followed by a
// random walk of m candles, where nothing learnt on the first holds.
func regimes(seed uint64, n, m int) []streams.Candle {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	price, r := 40000.0, 0.0
	out := make([]streams.Candle, n+m)
	for i := range out {
		phi := -0.4
		if i >= n {
			phi = 0
		}
		r = phi*r + 0.001*rng.NormFloat64()
		open := price
		price *= math.Exp(r)
		hi, lo := math.Max(open, price)*1.0002, math.Min(open, price)*0.9998
		out[i] = streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: start.Add(time.Duration(i) * time.Minute),
			Open: open, High: hi, Low: lo, Close: price, Volume: 1 + rng.Float64(), Trades: 10, Quality: streams.QualityImported}
	}
	return out
}

func vectorsOf(t testing.TB, candles []streams.Candle) []streams.FeatureVector {
	t.Helper()
	calc, err := features.NewCalculator(features.DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	s := features.NewSeries(calc)
	var out []streams.FeatureVector
	for i, c := range candles {
		if v, o := s.Add(c, uint64(i+1)); o == features.Computed {
			out = append(out, v)
		}
	}
	return out
}

func jobStatus(t *testing.T, kv jetstream.KeyValue, id string) (streams.JobStatus, bool) {
	t.Helper()
	e, err := kv.Get(t.Context(), id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return streams.JobStatus{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var st streams.JobStatus
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.Fatal(err)
	}
	return st, true
}

// runWorker runs a trainer with cfg on js until the test ends.
func runWorker(t *testing.T, js jetstream.JetStream, cfg trainer.Config) {
	t.Helper()
	w, err := trainer.New(cfg, trainer.Deps{JS: js, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func bucket(t *testing.T, js jetstream.JetStream, name string) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestWorkerTrainsPromotesAndRejects(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	all := vectorsOf(t, regimes(7, 1800, 1500))
	firstRegime := 1800 - features.DefaultSpec().Need() + 1
	for _, v := range all[:firstRegime] {
		if _, err := streams.Publish(ctx, js, &v); err != nil {
			t.Fatal(err)
		}
	}
	runWorker(t, js, trainer.Config{Horizon: 1, Split: trainer.Split{TrainSize: 800, TestSize: 300, Folds: 2, Gap: 2}})

	jobsKV := bucket(t, js, streams.BucketJobs)
	reg := bucket(t, js, streams.BucketModelRegistry)
	updates, err := js.OrderedConsumer(ctx, streams.StreamModels, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	run := func(id string, params map[string]string) streams.JobStatus {
		t.Helper()
		job := streams.Job{ID: id, Kind: streams.JobTrain, Symbol: "BTC/USD", Interval: streams.Interval1m, Params: params, RequestedAt: time.Now()}
		if err := registry.Submit(ctx, js, &job); err != nil {
			t.Fatal(err)
		}
		var st streams.JobStatus
		natstest.WaitProgress(t, 60*time.Second, "job "+id, func() (bool, string) {
			var ok bool
			st, ok = jobStatus(t, jobsKV, id)
			return ok && (st.State == streams.JobDone || st.State == streams.JobFailed), string(st.State)
		})
		return st
	}
	champion := func() string {
		e, err := reg.Get(ctx, streams.ChampionKey(streams.Interval1m, "BTC/USD"))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(e.Value())
	}
	nextUpdate := func() streams.ModelUpdated {
		t.Helper()
		msg, err := updates.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		u, err := streams.Decode[streams.ModelUpdated](msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		return u
	}

	// A useless feature set first: nothing to beat but the baseline, and
	// it does not.
	st := run("useless-1", map[string]string{"features": "tod_sin,tod_cos"})
	if st.State != streams.JobDone || st.Result["promoted"] != "false" || champion() != "" {
		t.Fatalf("useless model: %+v, champion %q", st, champion())
	}
	if u := nextUpdate(); u.Promoted || u.ModelID != "m-useless-1" {
		t.Fatalf("update %+v", u)
	}

	st = run("full-1", nil)
	if st.State != streams.JobDone || st.Result["promoted"] != "true" || champion() != "m-full-1" {
		t.Fatalf("full model: %+v, champion %q", st, champion())
	}
	if u := nextUpdate(); !u.Promoted || u.Champion != "m-full-1" {
		t.Fatalf("update %+v", u)
	}
	rec, _, err := registry.NewModels(reg).Get(ctx, "m-full-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"train", "test", "baseline_zero", "baseline_last"} {
		if rec.Metrics[k].N == 0 {
			t.Fatalf("model has no %s metrics: %+v", k, rec.Metrics)
		}
	}
	if !rec.Champion || rec.ResidualStd <= 0 || len(rec.Coefficients) != len(rec.Features)+1 {
		t.Fatalf("record %+v", rec)
	}
	obj, err := js.ObjectStore(ctx, streams.ObjectStoreModels)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obj.GetBytes(ctx, rec.Artifact); err != nil {
		t.Fatalf("artifact %s: %v", rec.Artifact, err)
	}

	// The same model again cannot beat the champion on the same rows.
	st = run("full-2", nil)
	if st.Result["promoted"] != "false" || champion() != "m-full-1" {
		t.Fatalf("second full model: %+v, champion %q", st, champion())
	}
	// A job that cannot succeed fails, and says why.
	st = run("too-long", map[string]string{"train_size": "100000", "test_size": "100000"})
	if st.State != streams.JobFailed || st.Error == "" {
		t.Fatalf("impossible job: %+v", st)
	}
	st = run("bad-feature", map[string]string{"features": "no_such_feature"})
	if st.State != streams.JobFailed {
		t.Fatalf("unknown feature: %+v", st)
	}

	// The market changes: on a random walk the champion's forecasts are
	// worse than saying nothing, and the next training demotes it.
	for _, v := range all[firstRegime:] {
		if _, err := streams.Publish(ctx, js, &v); err != nil {
			t.Fatal(err)
		}
	}
	st = run("after-change", map[string]string{"features": "tod_sin,tod_cos"})
	if st.State != streams.JobDone || st.Result["promoted"] != "false" || !strings.Contains(st.Result["decision"], "demoted") || champion() != "" {
		t.Fatalf("after the change: %+v, champion %q", st, champion())
	}
	if rec, _, err := registry.NewModels(reg).Get(ctx, "m-full-1"); err != nil || rec.Champion {
		t.Fatalf("demoted record %+v, %v", rec, err)
	}

	// Scoring a model stores its scored figures.
	job := streams.Job{ID: "score-1", Kind: streams.JobScore, Symbol: "BTC/USD", Interval: streams.Interval1m,
		Params: map[string]string{"model_id": "m-full-1"}, RequestedAt: time.Now()}
	if err := registry.Submit(ctx, js, &job); err != nil {
		t.Fatal(err)
	}
	natstest.WaitProgress(t, 60*time.Second, "score job", func() (bool, string) {
		st, ok := jobStatus(t, jobsKV, "score-1")
		return ok && st.State == streams.JobDone, string(st.State)
	})
	rec, _, err = registry.NewModels(reg).Get(ctx, "m-full-1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Metrics["scored"].N == 0 {
		t.Fatalf("no scored metrics: %+v", rec.Metrics)
	}
}

func TestScheduleQueuesTraining(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	runWorker(t, js, trainer.Config{Horizon: 1, Every: 100, Split: trainer.Split{TrainSize: 200, TestSize: 50, Folds: 1, Gap: 1}})
	vs := vectorsOf(t, meanReverting(500, 3))
	for _, v := range vs[:350] {
		if _, err := streams.Publish(ctx, js, &v); err != nil {
			t.Fatal(err)
		}
	}
	jobsKV := bucket(t, js, streams.BucketJobs)
	// The vectors on the schedule's grid (a start a multiple of 100
	// minutes) each queue one training, on the vectors up to the one that
	// triggered it even though more are stored by the time it runs.
	reg := bucket(t, js, streams.BucketModelRegistry)
	var due []int
	for i, v := range vs[:350] {
		if v.Start.Unix()/60%100 == 0 {
			due = append(due, i)
		}
	}
	if len(due) < 3 {
		t.Fatalf("only %d vectors on the grid", len(due))
	}
	for _, i := range due {
		id := "sched-1m-BTC-USD-" + itoa(vs[i].Start.Unix())
		var st streams.JobStatus
		natstest.WaitProgress(t, 60*time.Second, "scheduled job "+id, func() (bool, string) {
			var ok bool
			st, ok = jobStatus(t, jobsKV, id)
			return ok && (st.State == streams.JobDone || st.State == streams.JobFailed), string(st.State)
		})
		if st.Job.Params["before_seq"] != itoa(int64(i+2)) {
			t.Fatalf("job %s params %v, want before_seq %d", id, st.Job.Params, i+2)
		}
		if st.State == streams.JobDone {
			rec, _, err := registry.NewModels(reg).Get(ctx, st.Result["model_id"])
			if err != nil {
				t.Fatal(err)
			}
			if !rec.TrainTo.Before(vs[i].Start) {
				t.Fatalf("model of %s trained up to %s, past its trigger %s", id, rec.TrainTo, vs[i].Start)
			}
		}
	}
	if _, ok := jobStatus(t, jobsKV, "sched-1m-BTC-USD-"+itoa(vs[due[0]+1].Start.Unix())); ok {
		t.Fatal("a job was queued off schedule")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
