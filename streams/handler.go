package streams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrPermanent marks an error that redelivery cannot fix: a malformed or
// invalid message. The adapter terminates such a message instead of
// redelivering it.
var ErrPermanent = errors.New("permanent")

// Permanent wraps err so that errors.Is(err, ErrPermanent) holds.
func Permanent(err error) error {
	if err == nil || errors.Is(err, ErrPermanent) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrPermanent, err)
}

// RetryAfter wraps err so that the adapter naks the message with delay
// rather than its own backoff: for handlers that own a retry schedule (a
// webhook's backoff with jitter).
func RetryAfter(err error, delay time.Duration) error {
	return &retryAfter{err: err, delay: delay}
}

type retryAfter struct {
	err   error
	delay time.Duration
}

func (r *retryAfter) Error() string { return r.err.Error() }
func (r *retryAfter) Unwrap() error { return r.err }

// Handler processes one message. It returns nil once its own output is
// stored, a Permanent error for a message that can never succeed, and any
// other error for one worth retrying.
type Handler func(ctx context.Context, msg jetstream.Msg) error

// Outcome is what the adapter did with a message, for the caller's metrics.
type Outcome string

// The outcomes.
const (
	OutcomeAck  Outcome = "ack"
	OutcomeTerm Outcome = "term"
	OutcomeNak  Outcome = "nak"
)

// Acker is the one ack policy: nil acks, a permanent error terminates with
// the reason, anything else naks with a backoff that grows with the delivery
// count. observe, when set, sees every outcome (for metrics and logs).
func Acker(ctx context.Context, log *slog.Logger, h Handler, observe func(Outcome, error)) jetstream.MessageHandler {
	return func(msg jetstream.Msg) {
		err := h(ctx, msg)
		var outcome Outcome
		var ackErr error
		switch {
		case err == nil:
			outcome, ackErr = OutcomeAck, msg.Ack()
		case errors.Is(err, ErrPermanent):
			log.Warn("message rejected", "subject", msg.Subject(), "err", err)
			outcome, ackErr = OutcomeTerm, msg.TermWithReason(truncate(err.Error(), 200))
		default:
			delay := time.Second
			var ra *retryAfter
			if errors.As(err, &ra) {
				delay = ra.delay
			} else if md, mdErr := msg.Metadata(); mdErr == nil {
				delay = NakDelay(md.NumDelivered)
			}
			log.Debug("message retried", "subject", msg.Subject(), "delay", delay, "err", err)
			outcome, ackErr = OutcomeNak, msg.NakWithDelay(delay)
		}
		if ackErr != nil {
			log.Debug("ack failed", "subject", msg.Subject(), "outcome", outcome, "err", ackErr)
		}
		if observe != nil {
			observe(outcome, err)
		}
	}
}

// NakDelay is the retry backoff for the n-th delivery: 1s doubling to 1m.
func NakDelay(numDelivered uint64) time.Duration {
	d := time.Second
	for i := uint64(1); i < numDelivered && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
