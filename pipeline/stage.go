// Package pipeline owns the stage runner: the one consumer loop of every
// worker that turns a stream into outputs. A Stage is plain code over plain
// values (a series key, a warm-up from history, a step from one input to its
// outputs, a reset) and never sees NATS; a Runner moves its messages (the
// durable consumer, batches handled in order, outputs published with their
// msg-ids as fast-ingest batches that a stream stores only in order
// (batch.go), the ack after every output is stored, the retry,
// the drain, the pinned ownership, the partitions a stage shares by symbol
// between its instances (partition.go says how and why), the fences that
// keep an owner whose lease may be another's from publishing: its own
// deadline (partition_fence.go) and the server's check of an owner marker
// on every batch it starts (server_fence.go), the warm-up after
// a start or failover, lag and throughput metrics). Replay drives the same
// stages from stored events with no NATS at all, for the backtest, rule
// previews and tests.
package pipeline

import (
	"context"
	"time"

	"cryptostream/streams"
)

// Msg is one stored input event as a stage sees it.
type Msg struct {
	// Stream and Seq locate the event: a stage's outputs should be a
	// function of the stream position, so that a redelivery or a
	// failover recomputes exactly what was published the first time.
	Stream  string
	Subject string
	Seq     uint64
	// Time is when the stream stored the event.
	Time time.Time
	Data []byte
	// Value, when set, is the event already decoded, as a pointer (what
	// a stage returns): Replay hands one stage's outputs to the next this
	// way, and a backtest its candles, with no encode and decode between
	// them. Stages read their input with Decode, which takes Value when it
	// holds the type asked and Data otherwise; the Runner sets only Data.
	// The pointee belongs to the sender and may be reused once the step
	// returns: a stage copies what it keeps.
	Value any
}

// Decode is m's event: Value when it is a T (validated as a decoded one
// would be), else Data decoded by streams.Decode.
func Decode[T any, PT interface {
	*T
	streams.Event
}](m Msg) (T, error) {
	if v, ok := m.Value.(PT); ok && v != nil {
		if err := v.Validate(); err != nil {
			var zero T
			return zero, err
		}
		return *v, nil
	}
	return streams.Decode[T, PT](m.Data)
}

// History reads events stored before the ones a stage is about to handle.
// The Runner answers from the streams; Replay from what it is given.
type History interface {
	// Tail returns, oldest first, the last n events on subject in stream
	// whose sequence is below before (0: no bound).
	Tail(ctx context.Context, stream, subject string, n int, before uint64) ([]Msg, error)
}

// NextFinder is a History that can also say, in one cheap request, where
// the next event on a subject is stored: a stage that must know whether
// events were stored between two it handled asks it before reading a
// Tail. StreamHistory and MemoryHistory are NextFinders.
type NextFinder interface {
	// Next returns the sequence of the first event on subject in stream
	// at or after from, 0 when none is known (which does not prove
	// there is none: a replica that answers may lag).
	Next(ctx context.Context, stream, subject string, from uint64) (uint64, error)
}

// StoredBetween says whether events on subject may be stored in stream
// after the sequence after and before seq: false only when h is a
// NextFinder and proves the first one after after is seq itself. A stage
// that may have missed inputs after a takeover asks it at every gap in
// its series (a minute with no trade is common), where a Tail costs a
// stream info and an ordered consumer; an error or no answer proves
// nothing, and the stage reads its Tail as before.
func StoredBetween(ctx context.Context, h History, stream, subject string, after, seq uint64) bool {
	nf, ok := h.(NextFinder)
	if !ok || after == 0 || after >= seq {
		return true
	}
	next, err := nf.Next(ctx, stream, subject, after+1)
	return err != nil || next != seq
}

// Stage is the domain logic of a worker. The runner calls it from one
// goroutine at a time, in stream order.
type Stage interface {
	// Key names the series m belongs to: state is kept, warmed and reset
	// per key. An empty key means m needs no state (no Warm).
	Key(m Msg) string
	// Warm builds key's state as an uninterrupted run would hold it when
	// first arrives, from the history before it. The runner calls it the
	// first time it sees key after a start, a change of owner or a reset.
	Warm(ctx context.Context, h History, key string, first Msg) error
	// Step handles one input and returns the events it produces, in the
	// order they must be stored. A streams.Permanent error rejects the
	// input (it is logged, counted and terminated, and the stream goes
	// on); any other error is retried.
	Step(ctx context.Context, m Msg) ([]streams.Event, error)
	// Reset forgets key's state: the next input of key is warmed again.
	Reset(key string)
}

// Stateless gives a stage that keeps no state per series (a job handler)
// its Key, Warm and Reset: every input has the empty key, so nothing is
// warmed or reset. Embed it and write Step.
type Stateless struct{}

func (Stateless) Key(Msg) string                                   { return "" }
func (Stateless) Warm(context.Context, History, string, Msg) error { return nil }
func (Stateless) Reset(string)                                     {}
