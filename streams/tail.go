package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamLookup is the part of jetstream.JetStream that reading history needs.
type StreamLookup interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// StoredMsg is one message read back from a stream.
type StoredMsg struct {
	Seq  uint64
	Data []byte
}

// Tail returns, oldest first, the last n messages on subject in stream whose
// sequence is below before (0: no bound). A stateful worker rebuilds its
// window with it after a restart or a failover. JetStream cannot iterate
// backwards, so Tail reads forward from a guessed start and moves the start
// back until it has n messages or reaches the stream's beginning.
func Tail(ctx context.Context, js StreamLookup, stream, subject string, n int, before uint64) ([]StoredMsg, error) {
	if n <= 0 {
		return nil, nil
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("streams: tail %s: %w", subject, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("streams: tail %s: stream info: %w", subject, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if before == 0 || before > last+1 {
		before = last + 1
	}
	onSubject := info.State.Subjects[subject]
	if onSubject == 0 || before <= first {
		return nil, nil
	}
	span := uint64(4 * n)
	if onSubject <= uint64(n) {
		// The whole subject is wanted: one pass from the start, rather
		// than widening the window over a stream where it is sparse.
		span = before
	}
	for {
		start := first
		if before > span && before-span > first {
			start = before - span
		}
		msgs, err := readRange(ctx, s, subject, start, before)
		if err != nil {
			return nil, fmt.Errorf("streams: tail %s: %w", subject, err)
		}
		if len(msgs) >= n || start == first {
			if len(msgs) > n {
				msgs = msgs[len(msgs)-n:]
			}
			return msgs, nil
		}
		span *= 4
	}
}

// readRange reads subject's messages with start <= seq < before.
func readRange(ctx context.Context, s jetstream.Stream, subject string, start, before uint64) ([]StoredMsg, error) {
	return readFrom(ctx, s, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
	}, before, 0)
}

// readFrom reads the messages an ordered consumer of cfg delivers, up to
// sequence before (exclusive); more than max (0: no bound) is
// ErrTooManyMessages.
func readFrom(ctx context.Context, s jetstream.Stream, cfg jetstream.OrderedConsumerConfig, before uint64, max int) ([]StoredMsg, error) {
	// The default retries a lost consumer forever, which on a dead
	// connection blocks Fetch for good.
	cfg.MaxResetAttempts = 3
	c, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	// The consumer starts on the first matching message at or after start;
	// when there is none below before, the range is empty.
	info := c.CachedInfo()
	if info != nil && info.NumPending == 0 {
		return nil, nil
	}
	var out []StoredMsg
	for {
		batch, err := c.FetchNoWait(512)
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		got := 0
		msgs := batch.Messages()
		for {
			// A batch on a connection that dies does not always end:
			// ctx bounds the wait.
			var msg jetstream.Msg
			var ok bool
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case msg, ok = <-msgs:
			}
			if !ok {
				break
			}
			got++
			md, err := msg.Metadata()
			if err != nil {
				return nil, fmt.Errorf("metadata: %w", err)
			}
			if md.Sequence.Stream >= before {
				return out, nil
			}
			if max > 0 && len(out) == max {
				return nil, ErrTooManyMessages
			}
			out = append(out, StoredMsg{Seq: md.Sequence.Stream, Data: msg.Data()})
			if md.NumPending == 0 {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if got == 0 {
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// Unpin releases the pinned priority group of a durable consumer, so that a
// standby or a restarted instance takes over at once after a clean stop
// rather than when the pin expires.
func Unpin(ctx context.Context, js StreamLookup, stream, consumer string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("streams: unpin %s: %w", consumer, err)
	}
	if err := s.UnpinConsumer(ctx, consumer, PriorityGroup); err != nil {
		return fmt.Errorf("streams: unpin %s: %w", consumer, err)
	}
	return nil
}

// WatchLag reports a durable consumer's backlog (messages not yet
// delivered plus delivered and not yet acked) to set every interval until
// ctx ends: the figure that says a worker is falling behind.
func WatchLag(ctx context.Context, c jetstream.Consumer, every time.Duration, set func(pending float64)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, every)
		if info, err := c.Info(ictx); err == nil {
			set(float64(info.NumPending) + float64(info.NumAckPending))
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReadRange returns subject's messages in stream with start <= seq < before,
// oldest first: a bounded page of history by sequence.
func ReadRange(ctx context.Context, js StreamLookup, stream, subject string, start, before uint64) ([]StoredMsg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("streams: read %s: %w", subject, err)
	}
	msgs, err := readRange(ctx, s, subject, start, before)
	if err != nil {
		return nil, fmt.Errorf("streams: read %s: %w", subject, err)
	}
	return msgs, nil
}

// ErrTooManyMessages is ReadSince's answer when the range holds more than
// asked for.
var ErrTooManyMessages = errors.New("streams: more messages than the bound")

// ReadSince returns, oldest first, subject's messages in stream stored at
// or after since and before the read began: history by time, for a reader
// that needs every event of a time range (an event is stored no earlier
// than it happened, so this covers every event from since on, and the
// caller drops those after its range). More than max (0: no bound) is
// ErrTooManyMessages.
func ReadSince(ctx context.Context, js StreamLookup, stream, subject string, since time.Time, max int) ([]StoredMsg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("streams: read %s: %w", subject, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("streams: read %s: %w", subject, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	msgs, err := readFrom(ctx, s, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	}, info.State.LastSeq+1, max)
	if errors.Is(err, ErrTooManyMessages) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("streams: read %s: %w", subject, err)
	}
	return msgs, nil
}
