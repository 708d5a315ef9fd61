package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
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
	info, err := streamInfo(ctx, js, stream, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("streams: tail %s: %w", subject, err)
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
		msgs, err := readFrom(ctx, js, stream, readSpec{subject: subject, start: start, before: before})
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

// streamInfo is stream's info, asked again while the cluster elects the
// stream's leader.
func streamInfo(ctx context.Context, js StreamLookup, stream string, opts ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error) {
	var info *jetstream.StreamInfo
	err := retried(ctx, func() error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		s, err := js.Stream(cctx, stream)
		if err != nil {
			return err
		}
		info, err = s.Info(cctx, opts...)
		return err
	})
	return info, err
}

// callTimeout bounds one JetStream API call or the wait for one message of
// a read: a request to a node that has just died gets no answer at all,
// and a read blocked on it must give up and go again.
const callTimeout = 10 * time.Second

// retryFor is how long a read goes on failing before it gives up: longer
// than a stream's leader election on a busy cluster, which a read that
// waits through sees as "no responders" and timeouts.
const retryFor = 2 * time.Minute

// retried runs op until it succeeds, ctx ends, the server's answer is
// final, or retryFor has passed since the first failure.
func retried(ctx context.Context, op func() error) error {
	var since time.Time
	wait := 50 * time.Millisecond
	for {
		err := op()
		if err == nil || ctx.Err() != nil || final(err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if since.IsZero() {
			since = time.Now()
		} else if time.Since(since) > retryFor {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// final says an error is an answer, not the silence of a cluster that
// elects a leader: trying again cannot change it.
func final(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, ErrTooManyMessages) ||
		errors.Is(err, errDecode)
}

var errDecode = errors.New("message metadata")

// readSpec is a forward read of one subject: from sequence start, or
// from the first message stored at or after since when it is set, up to
// sequence before (exclusive); more than max messages (0: no bound) is
// ErrTooManyMessages.
type readSpec struct {
	subject string
	start   uint64
	since   *time.Time
	before  uint64
	max     int
}

// readFrom reads what spec asks for with an ordered consumer. A read that
// fails part way (its consumer lost with the node that held it, the
// stream's leader gone) goes again from after the last message it has,
// so that a node loss costs a pause, not an error.
func readFrom(ctx context.Context, js StreamLookup, stream string, spec readSpec) ([]StoredMsg, error) {
	var out []StoredMsg
	err := retried(ctx, func() error {
		cfg := jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{spec.subject},
			// The default retries a lost consumer forever, which on a
			// dead connection blocks the read for good; retried goes
			// again instead, from a new stream lookup.
			MaxResetAttempts: 2,
			// A read leaves its consumer behind; the server drops it
			// soon rather than after the default five minutes.
			InactiveThreshold: 30 * time.Second,
		}
		switch {
		case len(out) > 0:
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, out[len(out)-1].Seq+1
		case spec.since != nil:
			cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, spec.since
		default:
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, max(spec.start, 1)
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		s, err := js.Stream(cctx, stream)
		if err != nil {
			return err
		}
		c, err := s.OrderedConsumer(cctx, cfg)
		if err != nil {
			return fmt.Errorf("ordered consumer: %w", err)
		}
		// The consumer starts on the first matching message at or after
		// start; when there is none, the range is empty. The count is
		// what says how many messages to wait for: a pull that answers
		// "no messages" from a consumer just made is not the end (the
		// FetchNoWait this read once used took it for one and returned
		// short).
		if info := c.CachedInfo(); info == nil || info.NumPending == 0 {
			return nil
		}
		it, err := c.Messages(jetstream.PullMaxMessages(512))
		if err != nil {
			return fmt.Errorf("messages: %w", err)
		}
		defer it.Stop()
		for {
			mctx, cancel := context.WithTimeout(ctx, callTimeout)
			msg, err := it.Next(jetstream.NextContext(mctx))
			cancel()
			if err != nil {
				return fmt.Errorf("next: %w", err)
			}
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("%w: %w", errDecode, err)
			}
			if md.Sequence.Stream >= spec.before {
				return nil
			}
			if spec.max > 0 && len(out) == spec.max {
				return ErrTooManyMessages
			}
			out = append(out, StoredMsg{Seq: md.Sequence.Stream, Data: msg.Data()})
			if md.NumPending == 0 {
				return nil
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
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
	if before <= start {
		return nil, nil
	}
	msgs, err := readFrom(ctx, js, stream, readSpec{subject: subject, start: start, before: before})
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
	info, err := streamInfo(ctx, js, stream)
	if err != nil {
		return nil, fmt.Errorf("streams: read %s: %w", subject, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	msgs, err := readFrom(ctx, js, stream, readSpec{subject: subject, since: &since, before: info.State.LastSeq + 1, max: max})
	if errors.Is(err, ErrTooManyMessages) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("streams: read %s: %w", subject, err)
	}
	return msgs, nil
}

// NextSeq is the sequence of the first message on subject in stream at or
// after from, 0 when there is none. It costs one request: a stateful
// worker asks it to learn whether candles were stored between two it
// handled, where Tail would make a consumer and read a window. A direct
// get may be answered by a replica that lags, so only an answer naming a
// message proves one is stored; none (0) may be the replica's lag.
func NextSeq(ctx context.Context, js StreamLookup, stream, subject string, from uint64) (uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if c, ok := js.(interface{ Conn() *nats.Conn }); ok && c.Conn() != nil {
		// The direct get API straight on the connection: through
		// js.Stream it would cost a stream info request as well.
		req, err := json.Marshal(struct {
			Seq  uint64 `json:"seq"`
			Next string `json:"next_by_subj"`
		}{max(from, 1), subject})
		if err != nil {
			return 0, fmt.Errorf("streams: next on %s: %w", subject, err)
		}
		r, err := c.Conn().RequestWithContext(cctx, "$JS.API.DIRECT.GET."+stream, req)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			// A stream without direct get, or one electing its
			// leader: the stream's own get below.
		case err != nil:
			return 0, fmt.Errorf("streams: next on %s: %w", subject, err)
		default:
			return directSeq(r, subject)
		}
	}
	s, err := js.Stream(cctx, stream)
	if err != nil {
		return 0, fmt.Errorf("streams: next on %s: %w", subject, err)
	}
	m, err := s.GetMsg(cctx, max(from, 1), jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("streams: next on %s: %w", subject, err)
	}
	return m.Sequence, nil
}

// directSeq is the sequence a direct get's answer names, 0 for "no
// message".
func directSeq(r *nats.Msg, subject string) (uint64, error) {
	if seq := r.Header.Get(jetstream.SequenceHeader); seq != "" {
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("streams: next on %s: sequence %q: %w", subject, seq, err)
		}
		return n, nil
	}
	if r.Header.Get("Status") == "404" {
		return 0, nil
	}
	return 0, fmt.Errorf("streams: next on %s: %s %s", subject, r.Header.Get("Status"), r.Header.Get("Description"))
}
