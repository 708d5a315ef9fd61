package predictor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/predictor"
	"cryptostream/registry"
	"cryptostream/streams"
)

// TestHotSwap: a new champion in the registry takes over from the next
// vectors, without a restart.
func TestHotSwap(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	vs := vectorsOf(t, meanReverting(400, 3))
	reg, err := js.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		t.Fatal(err)
	}
	put := func(id string, coef float64) {
		rec := streams.ModelRecord{ID: id, Symbol: symbol, Interval: streams.Interval1m, Horizon: 1,
			Features: []string{"ret_1"}, Coefficients: []float64{0, coef}, ResidualStd: 0.001}
		b, _ := json.Marshal(rec)
		if _, err := reg.Put(ctx, streams.ModelKey(id), b); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Put(ctx, streams.ChampionKey(streams.Interval1m, symbol), []byte(id)); err != nil {
			t.Fatal(err)
		}
	}
	put("a", -0.4)
	promReg := prometheus.NewRegistry()
	w, err := predictor.New(predictor.Config{}, predictor.Deps{JS: js, Log: discard, Registry: promReg})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-done })

	publish := func(vs []streams.FeatureVector) {
		for _, v := range vs {
			if _, err := streams.Publish(ctx, js, &v); err != nil {
				t.Fatal(err)
			}
		}
	}
	wait := func(n int) map[time.Time][]streams.Prediction {
		var got map[time.Time][]streams.Prediction
		natstest.WaitAtLeast(t, 30*time.Second, "predictions", n, func() int {
			got, _ = predictionsByStart(t, js)
			return len(got)
		})
		return got
	}
	publish(vs[:100])
	wait(100)
	put("b", 0.2)
	natstest.WaitAtLeast(t, 30*time.Second, "the swap", 2, func() float64 {
		return opstest.Value(t, promReg, "cryptostream_predictor_champion_swaps_total", nil)
	})
	publish(vs[100:200])
	got := wait(200)
	for i, v := range vs[:200] {
		want := "a"
		if i >= 100 {
			want = "b"
		}
		if p := got[v.Start]; len(p) != 1 || p[0].ModelID != want {
			t.Fatalf("vector %d: predictions %+v, want one by %s", i, p, want)
		}
	}

	// A predict job answers from the latest vector with the champion,
	// and publishes nothing.
	job := streams.Job{ID: "predict-1", Kind: streams.JobPredict, Symbol: symbol, Interval: streams.Interval1m, RequestedAt: time.Now()}
	if err := registry.Submit(ctx, js, &job); err != nil {
		t.Fatal(err)
	}
	jobs, err := js.KeyValue(ctx, streams.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	var st streams.JobStatus
	natstest.WaitProgress(t, 30*time.Second, "the predict job", func() (bool, string) {
		e, err := jobs.Get(ctx, "predict-1")
		return err == nil && json.Unmarshal(e.Value(), &st) == nil && st.State == streams.JobDone, string(st.State)
	})
	if st.Result["model_id"] != "b" || st.Result["start"] != vs[199].Start.Format(time.RFC3339) || st.Result["predicted_close"] == "" {
		t.Fatalf("predict job result %+v", st.Result)
	}
	if _, n := predictionsByStart(t, js); n != 200 {
		t.Fatalf("%d predictions stored after the predict job, want 200", n)
	}
}
