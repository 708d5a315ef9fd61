package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// TestPredictionRoles runs the features, trainer and predictor roles as
// their own commands against one external server, queues a training with
// the train command, and stops every role cleanly.
func TestPredictionRoles(t *testing.T) {
	external := natstest.Server(t)
	url := external.ClientURL()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	roles := map[string][]string{
		"features":  nil,
		"trainer":   {"--train-size", "800", "--test-size", "300", "--folds", "2", "--train-every", "0"},
		"predictor": nil,
	}
	done := map[string]chan error{}
	for name, extra := range roles {
		args := append([]string{name, "--nats-url", url, "--http-addr", "127.0.0.1:0", "--replicas", "1", "--log-level", "error"}, extra...)
		ch := make(chan error, 1)
		done[name] = ch
		go func() { ch <- run(ctx, args, testEnv(nil)) }()
	}
	_, js := natstest.Connect(t, external)
	natstest.WaitFor(t, 30*time.Second, "the topology", func() bool {
		_, err := js.Stream(ctx, streams.StreamFeatures)
		return err == nil
	})
	candles := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 6600)[5000:]
	for _, c := range candles {
		if _, err := streams.Publish(ctx, js, &c); err != nil {
			t.Fatal(err)
		}
	}
	// The features role works through the backlog one candle in flight:
	// wait while the vectors keep coming, however slowly.
	natstest.WaitProgress(t, 2*time.Minute, "the vectors", func() (bool, string) {
		s, err := js.Stream(ctx, streams.StreamFeatures)
		if err != nil {
			return false, err.Error()
		}
		// The vectors, not the features owners' fence markers.
		n, err := streams.DataMsgs(ctx, s)
		if err != nil {
			return false, err.Error()
		}
		return n >= uint64(len(candles)-features80), strconv.FormatUint(n, 10)
	})

	e := testEnv(nil)
	// --timeout 0 waits for the job as long as it takes: a fit on a busy
	// machine is slow, not stuck. A job nobody takes would wait forever:
	// the test's deadline bounds it.
	tctx := ctx
	if d, ok := natstest.Deadline(t); ok {
		var stopTrain context.CancelFunc
		tctx, stopTrain = context.WithDeadline(ctx, d)
		defer stopTrain()
	}
	if err := run(tctx, []string{"train", "--nats-url", url, "--symbol", "BTC/USD", "--interval", "1m", "--timeout", "0"}, e); err != nil {
		t.Fatalf("train: %v\n%s", err, e.stdout.(*bytes.Buffer))
	}
	out := e.stdout.(*bytes.Buffer).String()
	var st streams.JobStatus
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &st); err != nil {
		t.Fatalf("train output %q: %v", out, err)
	}
	if st.State != streams.JobDone || st.Result["model_id"] == "" || st.Result["decision"] == "" {
		t.Fatalf("job status %+v", st)
	}

	cancel()
	for name, ch := range done {
		if err := <-ch; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// features80 bounds the candles the features need before their first
// vector (the default lookback is 78 intervals).
const features80 = 80

func TestTrainNeedsNATSURL(t *testing.T) {
	if err := run(t.Context(), []string{"train"}, testEnv(nil)); err == nil || !strings.Contains(err.Error(), "nats-url") {
		t.Errorf("train without --nats-url: %v", err)
	}
}
