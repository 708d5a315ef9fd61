package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// Progress reports how many stream messages the sink has settled out of
// how many there were when it started catching up.
type Progress struct {
	Done, Total uint64
}

// left sums what the sink consumers still have to settle: pending in the
// stream or delivered and not yet acked.
func (s *Sink) left(ctx context.Context) (uint64, error) {
	var n uint64
	for _, proj := range projections {
		cons, err := s.bus.Consumer(ctx, proj.stream, proj.consumer)
		if err != nil {
			return 0, fmt.Errorf("store: consumer %s: %w", proj.consumer, err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("store: consumer %s info: %w", proj.consumer, err)
		}
		n += info.NumPending + uint64(info.NumAckPending)
	}
	return n, nil
}

// Synced reports whether the projection reflects everything in the streams
// and buckets so far: every sink consumer has nothing pending or unacked,
// and every bucket's initial values are written.
func (s *Sink) Synced(ctx context.Context) (bool, error) {
	if int(s.loaded.Load()) < len(buckets) {
		return false, nil
	}
	for _, b := range buckets {
		kv, err := s.bus.KeyValue(ctx, b.bucket)
		if err != nil {
			return false, fmt.Errorf("store: bucket %s: %w", b.bucket, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			return false, fmt.Errorf("store: bucket %s status: %w", b.bucket, err)
		}
		bs, ok := st.(*jetstream.KeyValueBucketStatus)
		if !ok {
			return false, fmt.Errorf("store: bucket %s status is a %T", b.bucket, st)
		}
		if s.settled[b.bucket].Load() < bs.StreamInfo().State.LastSeq {
			return false, nil
		}
	}
	for _, proj := range projections {
		// The stream's last sequence is read first: a consumer's pending
		// counts can trail a message stored a moment before, so "nothing
		// pending" alone could report synced before that message is
		// projected. Every sink consumer covers its whole stream, so its
		// ack floor reaches the stream's last sequence once all is written.
		stream, err := s.bus.Stream(ctx, proj.stream)
		if err != nil {
			return false, fmt.Errorf("store: stream %s: %w", proj.stream, err)
		}
		last := stream.CachedInfo().State.LastSeq
		cons, err := s.bus.Consumer(ctx, proj.stream, proj.consumer)
		if err != nil {
			return false, fmt.Errorf("store: consumer %s: %w", proj.consumer, err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false, fmt.Errorf("store: consumer %s info: %w", proj.consumer, err)
		}
		if info.NumPending > 0 || info.NumAckPending > 0 || info.AckFloor.Stream < last {
			return false, nil
		}
	}
	return true, nil
}

// ConsumerAdmin is what a rebuild needs of JetStream to reset the sink's
// durable consumers.
type ConsumerAdmin interface {
	DeleteConsumer(ctx context.Context, stream, consumer string) error
	CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
}

// Reset drops the projection, recreates the empty schema and rewinds the
// sink's consumers, so that the next sink run replays everything. No sink
// may be running meanwhile.
func Reset(ctx context.Context, db *pgxpool.Pool, js ConsumerAdmin) error {
	if err := Drop(ctx, db); err != nil {
		return err
	}
	if err := Migrate(ctx, db); err != nil {
		return err
	}
	return Rewind(ctx, js)
}

// Rewind recreates the sink's durable consumers at the start of their
// streams, as declared in streams.
func Rewind(ctx context.Context, js ConsumerAdmin) error {
	top := streams.Declare(1)
	for _, p := range projections {
		spec, ok := top.Consumer(p.consumer)
		if !ok {
			return fmt.Errorf("store: consumer %s is not declared in streams", p.consumer)
		}
		if err := js.DeleteConsumer(ctx, p.stream, p.consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("store: rewind consumer %s: %w", p.consumer, err)
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, spec.Stream, spec.Config); err != nil {
			return fmt.Errorf("store: rewind consumer %s: %w", p.consumer, err)
		}
	}
	return nil
}

// RunUntilSynced runs the sink until it has caught up with everything
// there was, calling report with its progress on the way.
func (s *Sink) RunUntilSynced(ctx context.Context, every time.Duration, report func(Progress)) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx) }()
	stop := func(err error) error {
		cancel()
		if runErr := <-done; err == nil {
			err = runErr
		}
		return err
	}
	total, err := s.left(ctx)
	if err != nil {
		return stop(err)
	}
	if report != nil {
		report(Progress{Total: total})
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-t.C:
		}
		if left, err := s.left(ctx); err == nil && report != nil {
			total = max(total, left) // messages published meanwhile
			report(Progress{Done: total - left, Total: total})
		}
		ok, err := s.Synced(ctx)
		if err != nil {
			return stop(err)
		}
		if ok {
			if report != nil {
				report(Progress{Done: total, Total: total})
			}
			return stop(nil)
		}
	}
}
