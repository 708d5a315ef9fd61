package predictor_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/forecast"
	"cryptostream/pipeline"
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
