package pipeline_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// sidePartitions is a second stream partitioned by the same symbols as
// sumPartitions: side.<interval>.<SYMBOL-TOKEN>.
var sidePartitions = func() streams.Partitioned {
	p := sumPartitions
	p.Stage, p.Stream, p.Root = "side", "SIDE", "side"
	return p
}()

// sideRecorder is the companion's stage: it records each step in the
// ledger under the symbol's partition and publishes nothing; like
// recorder, it steps nothing once its instance is killed.
type sideRecorder struct {
	rec  *recorder
	seen *seqSet
}

// seqSet is the SIDE sequences stepped, by any instance.
type seqSet struct {
	mu sync.Mutex
	m  map[uint64]bool
}

func (s *seqSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (s sideRecorder) Key(pipeline.Msg) string { return "" }
func (s sideRecorder) Warm(context.Context, pipeline.History, string, pipeline.Msg) error {
	return nil
}
func (s sideRecorder) Reset(string) {}
func (s sideRecorder) Step(_ context.Context, m pipeline.Msg) ([]streams.Event, error) {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	if s.rec.killed {
		return nil, context.Canceled
	}
	p, _ := sidePartitions.Partition(m.Subject)
	s.rec.l.add(s.rec.name, p, "step", m.Seq)
	s.seen.mu.Lock()
	s.seen.m[m.Seq] = true
	s.seen.mu.Unlock()
	return nil, nil
}

func runWithCompanion(t *testing.T, s *server.Server, name string, l *ledger, seen *seqSet) *partInstance {
	t.Helper()
	nc, js := natstest.Connect(t, s)
	kv, err := js.KeyValue(t.Context(), streams.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{summer: newSummer(), name: name, l: l}
	in := &instance{nc: nc, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	spec := sumPartitions
	r, err := pipeline.New(pipeline.Config{Name: "sum", Stream: "IN", Batch: batch, PublishTimeout: time.Second, Partitioned: &spec,
		LeaseTTL: 2 * time.Second, With: []pipeline.Companion{{Name: "side", Partitioned: sidePartitions, Stage: sideRecorder{rec, seen}}}},
		rec, pipeline.Deps{JS: js, Log: discard, Registry: in.reg, Leases: kv, Instance: name,
			OnOwner: func(p string, owned bool) {
				if rec.isKilled() {
					return
				}
				kind := "own"
				if !owned {
					kind = "release"
				}
				l.add(name, p, kind, 0)
			}})
	if err != nil {
		t.Fatal(err)
	}
	in.start(t, r)
	return &partInstance{instance: in, rec: rec}
}

// TestPartitionCompanionsFollow: a companion stream's partitions go with
// the stage's. Each symbol's inputs on SIDE are stepped by the instance
// that owns the symbol on IN, and only while it owns it; when that
// instance is killed, the survivor takes the symbol on both streams and
// gets what the dead one held of SIDE unacked at once (AckWait is a
// minute), so every SIDE input is stepped.
func TestPartitionCompanionsFollow(t *testing.T) {
	s, js := setup(t)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SIDE", Subjects: []string{"side.>"}, Duplicates: time.Hour, AllowBatchPublish: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BucketLeases, History: 1}); err != nil {
		t.Fatal(err)
	}
	parts := []string{"AAA-USD", "BBB-USD", "CCC-USD", "DDD-USD"}
	var keys []string
	for _, p := range parts {
		keys = append(keys, "1m."+p)
	}
	inputs(t, js, keys, 0, len(keys)) // the symbols, for discovery
	l := &ledger{}
	seen := &seqSet{m: map[uint64]bool{}}
	runWithCompanion(t, s, "a", l, seen)
	b := runWithCompanion(t, s, "b", l, seen)
	ownedBy := func(name string) int { return l.ownedBy(name, parts) }
	natstest.WaitProgress(t, time.Minute, "the symbols shared", func() (bool, string) {
		return ownedBy("a") == 2 && ownedBy("b") == 2, strconv.Itoa(ownedBy("a")) + "/" + strconv.Itoa(ownedBy("b"))
	})
	var seqs []uint64
	side := func(from, n int) {
		for i := from; i < from+n; i++ {
			ack, err := js.Publish(ctx, "side."+keys[i%len(keys)], []byte(strconv.Itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, ack.Sequence)
		}
	}
	side(0, 200)
	natstest.WaitProgress(t, time.Minute, "SIDE stepped", func() (bool, string) {
		n := seen.len()
		return n == len(seqs), strconv.Itoa(n)
	})
	b.kill(parts)
	side(200, 200)
	natstest.WaitProgress(t, time.Minute, "a owns every symbol", func() (bool, string) {
		return ownedBy("a") == len(parts), strconv.Itoa(ownedBy("a"))
	})
	natstest.WaitProgress(t, time.Minute, "every SIDE input stepped", func() (bool, string) {
		n := seen.len()
		return n == len(seqs), strconv.Itoa(n)
	})
	// Each SIDE step was made by the owner of its symbol on IN.
	checkOneOwner(t, l, parts)
}
