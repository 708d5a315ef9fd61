package predictor_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/pipeline"
	"cryptostream/predictor"
	"cryptostream/streams"
)

// seriesYears is how many series of a year of 1-minute candles the
// streams that keep one event per candle are sized for (MARKET's 8 GiB
// holds about 25).
const seriesYears = 25

// TestPredictionFitsItsStream: a prediction at its largest (three
// horizons, each with two intervals and their measured coverage, and a
// trace of every hop) is stored and read back whole by PREDICTIONS, and
// the stream's bounds hold a year of predictions of as many series as
// MARKET holds candles of.
func TestPredictionFitsItsStream(t *testing.T) {
	vs := vectorsOf(t, randomWalk(3300, 5))
	msgs := featureMsgs(t, vs)
	stage := predictor.NewPredictions(predictor.PredictionsConfig{}, nil, discard, prometheus.NewRegistry())
	var last *streams.Prediction
	for out, err := range pipeline.Replay(t.Context(), stage, pipeline.Msgs(msgs), pipeline.ReplayConfig{}) {
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := out.Event.(*streams.Prediction); ok {
			last = p
		}
	}
	if last == nil || len(last.Forecasts) != 3 {
		t.Fatalf("last prediction %+v", last)
	}
	for _, f := range last.Forecasts {
		if !f.Ready || len(f.Intervals) != 2 || f.Intervals[0].Coverage == nil {
			t.Fatalf("not a full forecast: %+v", f)
		}
	}
	// Replay stamps the predictor's hop; live, the ingest's and the
	// features' come before it.
	now := time.Now()
	for _, stage := range []string{"ingest", "features"} {
		last.Trace = last.Trace.Stamp(stage, now)
	}
	msg, err := streams.NewMsg(last)
	if err != nil {
		t.Fatal(err)
	}
	var hdr bytes.Buffer
	for k, vs := range msg.Header {
		for _, v := range vs {
			hdr.WriteString(k + ": " + v + "\r\n")
		}
	}
	// The file store's own record: a header of about 22 bytes and a hash.
	stored := int64(len(msg.Subject) + hdr.Len() + len(msg.Data) + 64)
	t.Logf("a prediction is %d bytes of JSON, %d stored", len(msg.Data), stored)

	topo := streams.Declare(1)
	for _, sc := range topo.Streams {
		if sc.Name != streams.StreamPredictions {
			continue
		}
		if sc.MaxMsgSize > 0 && int64(sc.MaxMsgSize) < stored {
			t.Errorf("PREDICTIONS refuses messages over %d bytes, a prediction is %d", sc.MaxMsgSize, stored)
		}
		if need := seriesYears * 365 * 1440 * stored; sc.MaxBytes < need {
			t.Errorf("PREDICTIONS holds %d MiB, a year of %d series needs %d MiB", sc.MaxBytes>>20, seriesYears, need>>20)
		}
	}

	s := natstest.Server(t)
	nc, js := natstest.Connect(t, s)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	if int64(nc.MaxPayload()) < stored {
		t.Fatalf("the server's max payload %d is below a prediction", nc.MaxPayload())
	}
	if _, err := streams.Publish(ctx, js, last); err != nil {
		t.Fatal(err)
	}
	back, err := streams.Tail(ctx, js, streams.StreamPredictions, last.Subject(), 1, 0)
	if err != nil || len(back) != 1 || !bytes.Equal(back[0].Data, msg.Data) {
		t.Fatalf("read back %d messages (%v), not the prediction whole", len(back), err)
	}
}
