package trainer

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// JobWatcher is what waiting for a job needs: the jobs bucket's watch.
type JobWatcher interface {
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// WaitJob watches the jobs bucket until the job is done or failed and
// returns its last status; a failed job is a status, not an error. It ends
// with ctx's error when ctx ends first.
func WaitJob(ctx context.Context, kv JobWatcher, id string) (streams.JobStatus, error) {
	w, err := kv.Watch(ctx, id)
	if err != nil {
		return streams.JobStatus{}, fmt.Errorf("trainer: watch job %s: %w", id, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return streams.JobStatus{}, fmt.Errorf("trainer: job %s: %w", id, ctx.Err())
		case entry, ok := <-w.Updates():
			if !ok {
				return streams.JobStatus{}, fmt.Errorf("trainer: job %s: watch ended", id)
			}
			// nil marks the end of the initial values.
			if entry == nil || entry.Operation() != jetstream.KeyValuePut {
				continue
			}
			var st streams.JobStatus
			if err := json.Unmarshal(entry.Value(), &st); err != nil {
				return streams.JobStatus{}, fmt.Errorf("trainer: job %s status: %w", id, err)
			}
			if st.State == streams.JobDone || st.State == streams.JobFailed {
				return st, nil
			}
		}
	}
}
