package pipeline_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/pipeline"
)

// TestRunnerLeaderChanges: the output stream is replicated on a three-node
// cluster and its leader is stepped down again and again while a backlog
// flows through the stage. A leader change loses the publishes the old
// leader had not replicated while the new one stores those sent after, so
// with publishes in flight a later output can be stored before an earlier
// one, which a retry cannot undo. Every output must still be stored once,
// in input order.
func TestRunnerLeaderChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster")
	}
	_, urls := natstest.Cluster(t, 3)
	nc, js := natstest.ConnectURL(t, urls)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "IN", Subjects: []string{"in.>"}, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "OUT", Subjects: []string{"out.>"}, Replicas: 3, Duplicates: time.Hour,
		AllowBatchPublish: true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, "IN", jetstream.ConsumerConfig{
		Durable: "sum", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second, MaxDeliver: -1,
		MaxAckPending: batch,
	}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"a", "b", "c", "d"}
	const n, chunks = 4000, 10
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := js.PublishAsync("in."+keys[i%len(keys)], []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}

	// The runner on its own connection, as a process of its own.
	rnc, rjs := natstest.ConnectURL(t, urls)
	reg := prometheus.NewRegistry()
	r, err := pipeline.New(pipeline.Config{Name: "sum", Stream: "IN", Consumer: "sum", Batch: batch, PublishTimeout: time.Second},
		newSummer(), pipeline.Deps{JS: rjs, Log: discard, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{nc: rnc, done: make(chan error, 1)}
	in.start(t, r)

	// The inputs come in chunks, and the leader steps down once in each,
	// as soon as some of the chunk's outputs are stored: progress, not
	// time, paces the changes, so that a fast machine (which once ran the
	// whole backlog past all but 4 changes) changes leaders as often as a
	// slow one.
	stepdowns := 0
	const size = n / chunks
	for c := range chunks {
		publish(c*size, (c+1)*size)
		mid := uint64(c*size + size/8)
		natstest.WaitAtLeast(t, 60*time.Second, "outputs of the chunk", mid, func() uint64 { return countOf(js, "OUT") })
		for {
			if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN.OUT", nil, 5*time.Second); err == nil {
				stepdowns++
				break
			}
			if ctx.Err() != nil {
				t.Fatal(ctx.Err())
			}
			time.Sleep(5 * time.Millisecond) // between tries while the last change elects
		}
	}
	natstest.WaitProgress(t, 60*time.Second, "every output", func() (bool, string) {
		got := countOf(js, "OUT")
		return got >= n, strconv.FormatUint(got, 10)
	})
	in.stop()
	t.Logf("%d leader changes", stepdowns)
	// The last change may still be electing a leader.
	natstest.WaitAtLeast(t, 30*time.Second, "a settled leader", uint64(n), func() uint64 { return countOf(js, "OUT") })
	check(t, storedOutputs(t, js), want(keys, n, nil))
	// The changes did cut batches short: the order above held through them.
	if got := opstest.Value(t, reg, "cryptostream_pipeline_batches_cut_total", nil); got == 0 {
		t.Fatal("no batch was cut short by a leader change")
	}
}

// countOf is count without a test to fail: the leader may be changing.
func countOf(js jetstream.JetStream, stream string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// storedOutputs reads every output stored in OUT, in stream order, with a
// direct get per sequence: the stream may still be settling on a leader,
// and a get that finds none is tried again.
func storedOutputs(t *testing.T, js jetstream.JetStream) []sum {
	t.Helper()
	n := countOf(js, "OUT")
	out := make([]sum, 0, n)
	for seq := uint64(1); seq <= n; seq++ {
		var m *jetstream.RawStreamMsg
		natstest.WaitFor(t, 30*time.Second, "output "+strconv.FormatUint(seq, 10), func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			st, err := js.Stream(ctx, "OUT")
			if err == nil {
				m, err = st.GetMsg(ctx, seq)
			}
			return err == nil
		})
		var s sum
		if err := json.Unmarshal(m.Data, &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}
