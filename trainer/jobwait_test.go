package trainer_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/natstest"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// WaitJob returns the final status once the job is done or failed, skipping
// the states before it, and ends with ctx.
func TestWaitJob(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: streams.BucketJobs})
	if err != nil {
		t.Fatal(err)
	}
	job := streams.Job{ID: "j1", Kind: streams.JobTrain, Symbol: "BTC/USD", Interval: streams.Interval1m}
	if err := trainer.PutStatus(t.Context(), kv, streams.JobStatus{Job: job, State: streams.JobQueued}); err != nil {
		t.Fatal(err)
	}
	got := make(chan streams.JobStatus, 1)
	errs := make(chan error, 1)
	go func() {
		st, err := trainer.WaitJob(t.Context(), kv, job.ID)
		got <- st
		errs <- err
	}()
	for _, state := range []streams.JobState{streams.JobRunning, streams.JobFailed} {
		if err := trainer.PutStatus(t.Context(), kv, streams.JobStatus{Job: job, State: state, Error: "no data"}); err != nil {
			t.Fatal(err)
		}
	}
	if st := <-got; st.State != streams.JobFailed || st.Error != "no data" || <-errs != nil {
		t.Fatalf("WaitJob = %+v", st)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := trainer.WaitJob(ctx, kv, "never"); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitJob on a cancelled context = %v", err)
	}
}
