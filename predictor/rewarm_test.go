package predictor_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/forecast"
	"cryptostream/pipeline"
	"cryptostream/pipeline/pipelinetest"
	"cryptostream/predictor"
	"cryptostream/streams"
)

// The features stage's hole (f8201e2) in the predictor: after a takeover
// the runner warms a series at the first input it holds, which may be one
// delivered again, and the vectors after it that the previous owner
// handled (acked) are never stepped here. Each forecast must still be the
// one an uninterrupted run makes.
func TestStepPastHandledVectorsRewarms(t *testing.T) {
	vs := vectorsOf(t, randomWalk(3300, 9))
	stored := featureMsgs(t, vs)
	ref, err := forecast.NewSeries(forecast.DefaultConfig(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := map[time.Time][]float64{}
	for _, v := range vs {
		st, err := ref.Add(v.Start, v.Close, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range st.Forecasts {
			want[v.Start] = append(want[v.Start], f.Sigma)
		}
	}
	// Held after the takeover: 3100 (handled before, delivered again),
	// then 3112 on; 3101 to 3111 were handled and acked.
	held := append([]pipeline.Msg{stored[3100]}, stored[3112:]...)
	p := predictor.NewPredictions(predictor.PredictionsConfig{}, nil, discard, prometheus.NewRegistry())
	n := 0
	for out, err := range pipeline.Replay(t.Context(), p, pipeline.Msgs(held), pipeline.ReplayConfig{History: pipeline.MemoryHistory(stored)}) {
		if err != nil {
			t.Fatal(err)
		}
		got, ok := out.Event.(*streams.Prediction)
		if !ok {
			continue
		}
		for k, f := range got.Forecasts {
			if w := want[got.Start]; f.Sigma != w[k] {
				t.Fatalf("forecast at %s (seq %d) horizon %d: sigma %v, the uninterrupted model says %v", got.Start, out.In.Seq, f.Horizon, f.Sigma, w[k])
			}
		}
		n++
	}
	if n != len(held) {
		t.Fatalf("%d predictions for %d inputs", n, len(held))
	}
}

// A gap in the market is a gap in FEATURES: the check that no stored
// vector was skipped costs one direct get (the history's Next), not a Tail
// per gap, which through JetStream is a stream info and an ordered
// consumer (it took the chain benchmark from 149 to 331 allocations a
// candle). A history that cannot answer Next still gets the Tail.
func TestVectorGapCostsNoTail(t *testing.T) {
	vs := vectorsOf(t, randomWalk(1500, 11))
	stored := featureMsgs(t, vs)
	gaps := 0
	for i := 201; i < len(vs); i++ {
		if vs[i].Start.Sub(vs[i-1].Start) > time.Minute {
			gaps++
		}
	}
	if gaps < 5 {
		t.Fatalf("only %d gaps in the vectors: the test does not test", gaps)
	}
	for _, tt := range []struct {
		name      string
		next      bool
		wantTails func(int) bool
	}{
		// The warm-up's own reads only, whatever the gaps.
		{"next", true, func(n int) bool { return n < gaps/4 }},
		{"no next", false, func(n int) bool { return n >= gaps }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &pipelinetest.TailCounter{MemoryHistory: stored}
			var hist pipeline.History = h
			if !tt.next {
				hist = pipelinetest.NoNext{H: h}
			}
			p := predictor.NewPredictions(predictor.PredictionsConfig{}, nil, discard, prometheus.NewRegistry())
			n := 0
			for _, err := range pipeline.Replay(t.Context(), p, pipeline.Msgs(stored[200:]), pipeline.ReplayConfig{History: hist}) {
				if err != nil {
					t.Fatal(err)
				}
				n++
			}
			if n == 0 {
				t.Fatal("no prediction")
			}
			if !tt.wantTails(h.Tails) {
				t.Errorf("%d tails read over %d gaps", h.Tails, gaps)
			}
		})
	}
}
