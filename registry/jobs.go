package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// JobQueue is what the jobs registry needs from the bus.
type JobQueue interface {
	Buckets
	streams.Publisher
}

// JobBucket is the part of the jobs bucket the registry uses
// (jetstream.KeyValue is one).
type JobBucket interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
	ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error)
}

// Jobs is the jobs bucket and the JOBS stream: a job's life from submit to
// its last state.
type Jobs struct {
	kv  JobBucket
	pub streams.Publisher
	now func() time.Time
}

// OpenJobs opens the jobs bucket; now is the clock for status times
// (time.Now when nil).
func OpenJobs(ctx context.Context, js JobQueue, now func() time.Time) (*Jobs, error) {
	kv, err := js.KeyValue(ctx, streams.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("registry: open %s: %w", streams.BucketJobs, err)
	}
	return NewJobs(kv, js, now), nil
}

// NewJobs is Jobs over a jobs bucket already open, publishing to JOBS
// through pub; now is the clock for status times (time.Now when nil).
func NewJobs(kv JobBucket, pub streams.Publisher, now func() time.Time) *Jobs {
	if now == nil {
		now = time.Now
	}
	return &Jobs{kv: kv, pub: pub, now: now}
}

// Submit records job as queued, then publishes it to JOBS: a worker that
// takes it at once finds a status to move forward. Submitting the same id
// again is a retry (the publish is deduplicated by id). When the publish
// fails the status says the job failed, unless a worker has moved it on
// meanwhile (the publish may have been stored with its ack lost).
func (j *Jobs) Submit(ctx context.Context, job *streams.Job) error {
	rev, err := j.queue(ctx, *job)
	if err != nil {
		return err
	}
	if _, err := streams.Publish(ctx, j.pub, job); err != nil {
		st := j.status(streams.JobStatus{Job: *job, State: streams.JobFailed, Error: "could not queue the job"})
		if b, merr := json.Marshal(st); merr == nil {
			_, _ = j.kv.Update(ctx, job.ID, b, rev) // a revision mismatch: a worker has it
		}
		return fmt.Errorf("registry: submit %s: %w", job.ID, err)
	}
	return nil
}

// Queue records job as queued without publishing it: for a stage whose
// runner publishes the job as its output.
func (j *Jobs) Queue(ctx context.Context, job streams.Job) error {
	_, err := j.queue(ctx, job)
	return err
}

func (j *Jobs) queue(ctx context.Context, job streams.Job) (uint64, error) {
	if err := job.Validate(); err != nil {
		return 0, err
	}
	return j.write(ctx, streams.JobStatus{Job: job, State: streams.JobQueued})
}

// Start marks a job running.
func (j *Jobs) Start(ctx context.Context, job streams.Job) error {
	return j.put(ctx, streams.JobStatus{Job: job, State: streams.JobRunning})
}

// Progress records how far a running job has come, in result.
func (j *Jobs) Progress(ctx context.Context, job streams.Job, result map[string]string) error {
	return j.put(ctx, streams.JobStatus{Job: job, State: streams.JobRunning, Result: result})
}

// List returns the statuses of the jobs of kind, newest request first,
// at most limit of them. It reads every key of the bucket, whose TTL
// bounds it to a week of jobs.
func (j *Jobs) List(ctx context.Context, kind streams.JobKind, limit int) ([]streams.JobStatus, error) {
	keys, err := j.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry: list jobs: %w", err)
	}
	defer func() { _ = keys.Stop() }()
	var out []streams.JobStatus
	for key := range keys.Keys() {
		st, err := j.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired since listed
		}
		if err != nil {
			return nil, err
		}
		if st.Job.Kind == kind {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b streams.JobStatus) int {
		if c := b.Job.RequestedAt.Compare(a.Job.RequestedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Job.ID, b.Job.ID)
	})
	return out[:min(len(out), limit)], nil
}

// Finish records how a job ended: done with result when err is nil, failed
// for good when err is permanent, queued again (to be retried) otherwise.
func (j *Jobs) Finish(ctx context.Context, job streams.Job, result map[string]string, err error) error {
	st := streams.JobStatus{Job: job}
	switch {
	case err == nil:
		st.State, st.Result = streams.JobDone, result
	case errors.Is(err, streams.ErrPermanent):
		st.State, st.Error = streams.JobFailed, err.Error()
	default:
		st.State, st.Error = streams.JobQueued, "retrying: "+err.Error()
	}
	return j.put(ctx, st)
}

// Get reads a job's status.
func (j *Jobs) Get(ctx context.Context, id string) (streams.JobStatus, error) {
	e, err := j.kv.Get(ctx, id)
	if err != nil {
		return streams.JobStatus{}, fmt.Errorf("registry: job %s: %w", id, err)
	}
	return decodeStatus(id, e.Value())
}

// Wait blocks until the job is done or failed, or ctx ends, and returns
// its last status.
func (j *Jobs) Wait(ctx context.Context, id string) (streams.JobStatus, error) {
	w, err := j.kv.Watch(ctx, id)
	if err != nil {
		return streams.JobStatus{}, fmt.Errorf("registry: watch job %s: %w", id, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return streams.JobStatus{}, fmt.Errorf("registry: job %s: %w", id, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return streams.JobStatus{}, fmt.Errorf("registry: watch job %s ended", id)
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			st, err := decodeStatus(id, e.Value())
			if err != nil {
				return st, err
			}
			if st.State == streams.JobDone || st.State == streams.JobFailed {
				return st, nil
			}
		}
	}
}

func (j *Jobs) put(ctx context.Context, st streams.JobStatus) error {
	_, err := j.write(ctx, st)
	return err
}

func (j *Jobs) write(ctx context.Context, st streams.JobStatus) (uint64, error) {
	b, err := json.Marshal(j.status(st))
	if err != nil {
		return 0, fmt.Errorf("registry: encode job status: %w", err)
	}
	rev, err := j.kv.Put(ctx, st.Job.ID, b)
	if err != nil {
		return 0, fmt.Errorf("registry: job status %s: %w", st.Job.ID, err)
	}
	return rev, nil
}

// status stamps st with the schema version and the time.
func (j *Jobs) status(st streams.JobStatus) streams.JobStatus {
	st.V = streams.SchemaVersion
	st.Job.V = streams.SchemaVersion
	st.UpdatedAt = j.now().UTC()
	return st
}

func decodeStatus(id string, b []byte) (streams.JobStatus, error) {
	var st streams.JobStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return st, streams.Permanent(fmt.Errorf("registry: decode job %s: %w", id, err))
	}
	return st, nil
}

// Submit opens the jobs bucket and submits job: for a one-off caller (the
// CLI, a test) that holds no Jobs.
func Submit(ctx context.Context, js JobQueue, job *streams.Job) error {
	j, err := OpenJobs(ctx, js, nil)
	if err != nil {
		return err
	}
	return j.Submit(ctx, job)
}
