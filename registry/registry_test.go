package registry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/natstest"
	"cryptostream/registry"
	"cryptostream/streams"
)

func bus(t *testing.T) jetstream.JetStream {
	t.Helper()
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	return js
}

const sym = "BTC/USD"

func TestDecodeChampion(t *testing.T) {
	for in, want := range map[string]string{"m-1": "m-1", `"m-1"`: "m-1", " m-1\n": "m-1", string(registry.EncodeChampion("m-2")): "m-2"} {
		if got := registry.DecodeChampion([]byte(in)); got != want {
			t.Errorf("DecodeChampion(%q) = %q, want %q", in, got, want)
		}
	}
	iv, s, err := registry.ParseChampionKey(streams.ChampionKey(streams.Interval1m, sym))
	if err != nil || iv != streams.Interval1m || s != sym {
		t.Fatalf("ParseChampionKey: %v %q %v", iv, s, err)
	}
	for _, bad := range []string{"model.x", "champion.1m", "champion.7q.BTC-USD", "champion.1m.BTC-USD.x"} {
		if _, _, err := registry.ParseChampionKey(bad); !errors.Is(err, streams.ErrPermanent) {
			t.Errorf("ParseChampionKey(%q): %v", bad, err)
		}
	}
}

// TestChampionCompareAndSwap: promotion and demotion only replace the
// champion they were decided against, and the watch sees every change.
func TestChampionCompareAndSwap(t *testing.T) {
	js := bus(t)
	ctx := t.Context()
	m, err := registry.OpenModels(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Champion(ctx, streams.Interval1m, sym); !errors.Is(err, registry.ErrNoChampion) {
		t.Fatalf("champion of an empty registry: %v", err)
	}
	changes := make(chan registry.ChampionChange, 16)
	ready := make(chan struct{})
	go func() {
		_ = m.WatchChampions(ctx, func() { close(ready) }, func(c registry.ChampionChange) { changes <- c })
	}()
	<-ready
	if err := m.Promote(ctx, streams.Interval1m, sym, "a", registry.Champion{}); err != nil {
		t.Fatal(err)
	}
	// Decided against "no champion" too, but a arrived first.
	if err := m.Promote(ctx, streams.Interval1m, sym, "b", registry.Champion{}); err == nil {
		t.Fatal("a second promotion against no champion succeeded")
	}
	a, err := m.Champion(ctx, streams.Interval1m, sym)
	if err != nil || a.ID != "a" {
		t.Fatalf("champion %+v, %v", a, err)
	}
	if err := m.Promote(ctx, streams.Interval1m, sym, "c", a); err != nil {
		t.Fatal(err)
	}
	if err := m.Demote(ctx, streams.Interval1m, sym, a); err == nil {
		t.Fatal("a demotion of a replaced champion succeeded")
	}
	c, _ := m.Champion(ctx, streams.Interval1m, sym)
	if err := m.Demote(ctx, streams.Interval1m, sym, c); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a", "c", ""} {
		if got := <-changes; got.ModelID != want || got.Symbol != sym || got.Interval != streams.Interval1m {
			t.Fatalf("change %+v, want champion %q", got, want)
		}
	}
	// A champion written as a JSON string by hand reads the same.
	kv, _ := js.KeyValue(ctx, streams.BucketModelRegistry)
	if _, err := kv.Put(ctx, streams.ChampionKey(streams.Interval1m, sym), []byte(`"d"`)); err != nil {
		t.Fatal(err)
	}
	if got := <-changes; got.ModelID != "d" {
		t.Fatalf("change %+v, want d", got)
	}
}

// TestModifyConcurrent: two writers modifying one record lose no write.
func TestModifyConcurrent(t *testing.T) {
	js := bus(t)
	ctx := t.Context()
	m, err := registry.OpenModels(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, streams.ModelRecord{ID: "m", Symbol: sym, Interval: streams.Interval1m}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for range 10 {
				err := m.Modify(ctx, "m", func(r *streams.ModelRecord) error {
					if r.Metrics == nil {
						r.Metrics = map[string]streams.Metrics{}
					}
					k := fmt.Sprint("w", w)
					s := r.Metrics[k]
					s.N++
					r.Metrics[k] = s
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	rec, _, err := m.Get(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Metrics["w0"].N != 10 || rec.Metrics["w1"].N != 10 {
		t.Fatalf("metrics %+v: a write was lost", rec.Metrics)
	}
	if _, _, err := m.Get(ctx, "missing"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("missing model: %v", err)
	}
}

// TestJobLifecycle: submitted jobs are queued and published once; a
// transient failure queues them again, a permanent one fails them, and
// Wait returns the last state.
func TestJobLifecycle(t *testing.T) {
	js := bus(t)
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	jobs, err := registry.OpenJobs(ctx, js, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	job := streams.Job{ID: "j1", Kind: streams.JobTrain, Symbol: sym, Interval: streams.Interval1m, RequestedAt: now}
	for range 2 {
		if err := jobs.Submit(ctx, &job); err != nil {
			t.Fatal(err)
		}
	}
	st, err := jobs.Get(ctx, "j1")
	if err != nil || st.State != streams.JobQueued || !st.UpdatedAt.Equal(now) {
		t.Fatalf("status %+v, %v", st, err)
	}
	s, _ := js.Stream(ctx, streams.StreamJobs)
	if info, _ := s.Info(ctx); info.State.Msgs != 1 {
		t.Fatalf("%d jobs published, want 1", info.State.Msgs)
	}
	bad := streams.Job{ID: "", Kind: streams.JobTrain}
	if err := jobs.Submit(ctx, &bad); !errors.Is(err, streams.ErrPermanent) {
		t.Fatalf("invalid job: %v", err)
	}
	done := make(chan streams.JobStatus, 1)
	go func() {
		st, err := jobs.Wait(ctx, "j1")
		if err != nil {
			t.Error(err)
		}
		done <- st
	}()
	steps := []struct {
		err  error
		want streams.JobState
	}{{errors.New("bus down"), streams.JobQueued}, {streams.Permanent(errors.New("too little data")), streams.JobFailed}}
	for _, step := range steps {
		if err := jobs.Start(ctx, job); err != nil {
			t.Fatal(err)
		}
		if err := jobs.Finish(ctx, job, nil, step.err); err != nil {
			t.Fatal(err)
		}
		if st, _ := jobs.Get(ctx, "j1"); st.State != step.want || st.Error == "" {
			t.Fatalf("after %v: %+v", step.err, st)
		}
	}
	if st := <-done; st.State != streams.JobFailed {
		t.Fatalf("Wait returned %+v", st)
	}
	if err := jobs.Finish(ctx, job, map[string]string{"k": "v"}, nil); err != nil {
		t.Fatal(err)
	}
	if st, err := jobs.Wait(ctx, "j1"); err != nil || st.State != streams.JobDone || st.Result["k"] != "v" {
		t.Fatalf("Wait on a finished job: %+v, %v", st, err)
	}
}

// failingPublisher is a JOBS stream that cannot be reached.
type failingPublisher struct{}

func (failingPublisher) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return nil, errors.New("test: no responders")
}

// TestSubmitNotQueued: a job whose publish fails is not left queued,
// where nothing would ever take it: its status says it failed.
func TestSubmitNotQueued(t *testing.T) {
	js := bus(t)
	ctx := t.Context()
	kv, err := js.KeyValue(ctx, streams.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	jobs := registry.NewJobs(kv, failingPublisher{}, nil)
	job := streams.Job{ID: "j2", Kind: streams.JobScore, Symbol: sym, Interval: streams.Interval1m, RequestedAt: time.Now()}
	if err := jobs.Submit(ctx, &job); err == nil {
		t.Fatal("submit succeeded with no JOBS stream")
	}
	if st, err := jobs.Get(ctx, "j2"); err != nil || st.State != streams.JobFailed || st.Error == "" {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// countingKV counts the reads of a bucket.
type countingKV struct {
	jetstream.KeyValue
	gets int
}

func (c *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	c.gets++
	return c.KeyValue.Get(ctx, key)
}

// TestModifyReadsOnlyWhatOthersWrote: a Modify after its own Modify does
// not read the record again, and one after another writer's (another
// Models: the trainer's, or a Put) reads it and keeps that write.
func TestModifyReadsOnlyWhatOthersWrote(t *testing.T) {
	js := bus(t)
	ctx := t.Context()
	kv, err := js.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingKV{KeyValue: kv}
	mine, other := registry.NewModels(counted), registry.NewModels(kv)
	if err := other.Put(ctx, streams.ModelRecord{ID: "m", Symbol: sym, Interval: streams.Interval1m, Features: []string{"ret_1"}}); err != nil {
		t.Fatal(err)
	}
	add := func(m *registry.Models, key string) {
		t.Helper()
		err := m.Modify(ctx, "m", func(r *streams.ModelRecord) error {
			if r.Metrics == nil {
				r.Metrics = map[string]streams.Metrics{}
			}
			s := r.Metrics[key]
			s.N++
			r.Metrics[key] = s
			r.Features = append(r.Features, key)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		add(mine, "mine")
	}
	if counted.gets != 1 {
		t.Fatalf("%d reads for 5 modifies of its own record, want 1", counted.gets)
	}
	add(other, "other")
	add(mine, "mine")
	if counted.gets != 2 {
		t.Fatalf("%d reads after another writer, want 2", counted.gets)
	}
	if err := other.Put(ctx, streams.ModelRecord{ID: "m", Symbol: sym, Interval: streams.Interval1m}); err != nil {
		t.Fatal(err)
	}
	add(mine, "mine")
	rec, _, err := other.Get(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Metrics["mine"].N != 1 || rec.Metrics["other"].N != 0 || len(rec.Features) != 1 {
		t.Fatalf("after a Put and a Modify: %+v %v", rec.Metrics, rec.Features)
	}
	add(other, "other")
	add(mine, "mine")
	rec, _, _ = other.Get(ctx, "m")
	if rec.Metrics["mine"].N != 2 || rec.Metrics["other"].N != 1 || len(rec.Features) != 3 {
		t.Fatalf("a write was lost: %+v %v", rec.Metrics, rec.Features)
	}
}
