package pipeline_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/pipeline"
)

// TestRunnerFewFlowAcks: a backlog's outputs are confirmed by a flow ack
// every several outputs, not one each (a flow ack costs the server about
// what storing the output does), and a trickle of inputs, each in a
// flight that no flow ack will cover, is confirmed by ending its batch:
// nothing waits for the publish timeout, nothing is cut or republished,
// and every output is stored once, in order.
func TestRunnerFewFlowAcks(t *testing.T) {
	s, js := setup(t)
	keys := []string{"a", "b", "c"}
	const backlog = 600
	inputs(t, js, keys, 0, backlog)

	// Every answer of a fast batch goes to its publisher's inbox: a
	// second connection on every inbox sees them as well.
	spy, _ := natstest.Connect(t, s)
	var flowAcks atomic.Int64
	if _, err := spy.Subscribe("_INBOX.>", func(m *nats.Msg) {
		if strings.HasSuffix(m.Subject, ".$FI") && bytes.HasPrefix(m.Data, []byte(`{"type":"ack"`)) {
			flowAcks.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	nc, _ := natstest.Connect(t, s)
	rjs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	// A publish timeout no answer on this server takes: a flight left
	// waiting for a flow ack that never comes would be cut and its output
	// republished, which the counters below would show.
	r, err := pipeline.New(pipeline.Config{Name: "sum", Stream: "IN", Consumer: "sum", Batch: batch, Pinned: true, PublishTimeout: 30 * time.Second},
		newSummer(), pipeline.Deps{JS: rjs, Log: discard, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
	})

	stored := func(n uint64) func() (bool, string) {
		return func() (bool, string) {
			c := count(t, js, "OUT")
			return c >= n, strconv.FormatUint(c, 10)
		}
	}
	natstest.WaitProgress(t, time.Minute, "the backlog's outputs", stored(backlog))
	acks := flowAcks.Load()
	// 16 outputs a flow ack at most, and a few more where a flight's end
	// ended its batch; one per output before.
	if acks > backlog/4 {
		t.Errorf("%d flow acks for %d outputs, want at most %d", acks, backlog, backlog/4)
	}
	// Then one input at a time, each waited for.
	const live = 3
	for i := backlog; i < backlog+live; i++ {
		inputs(t, js, keys, i, 1)
		natstest.WaitProgress(t, time.Minute, "a live output", stored(uint64(i+1)))
	}
	stop()
	check(t, outputs(t, js), want(keys, backlog+live, nil))
	for _, name := range []string{"cryptostream_pipeline_batches_cut_total", "cryptostream_pipeline_republished_total"} {
		if got := opstest.Value(t, reg, name, nil); got != 0 {
			t.Errorf("%s = %v, want 0", name, got)
		}
	}
	t.Logf("%d flow acks for %d backlog outputs", acks, backlog)
}
