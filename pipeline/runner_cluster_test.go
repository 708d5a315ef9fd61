package pipeline_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
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
	const n = 4000
	for i := range n {
		if _, err := js.PublishAsync("in."+keys[i%len(keys)], []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
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

	// Step the leader down each time some outputs were stored under the
	// last one, until all are: progress, not time, paces the changes.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	stepdowns := 0
	wg.Go(func() {
		last := uint64(0)
		for {
			select {
			case <-stop:
				return
			default:
			}
			got := countOf(js, "OUT")
			if got < last+100 {
				time.Sleep(5 * time.Millisecond) // polling the count, not waiting for it
				continue
			}
			_, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN.OUT", nil, 5*time.Second)
			if err == nil {
				stepdowns++
			}
			last = got
		}
	})
	natstest.WaitProgress(t, 60*time.Second, "every output", func() (bool, string) {
		got := countOf(js, "OUT")
		return got >= n, strconv.FormatUint(got, 10)
	})
	close(stop)
	wg.Wait()
	in.stop()
	t.Logf("%d leader changes", stepdowns)
	if stepdowns < 5 {
		t.Fatalf("only %d leader changes: the test did not test", stepdowns)
	}
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
