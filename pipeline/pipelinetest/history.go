// Package pipelinetest holds what the tests of several stages share about
// the runner's history: an in-memory history that counts its Tail reads,
// and one that cannot answer Next, to tell a cheap gap check from a read.
package pipelinetest

import (
	"context"

	"cryptostream/pipeline"
)

// TailCounter is a MemoryHistory that counts the Tail reads made of it:
// through JetStream each is a stream info and an ordered consumer.
type TailCounter struct {
	pipeline.MemoryHistory
	Tails int
}

// Tail implements pipeline.History.
func (h *TailCounter) Tail(ctx context.Context, stream, subject string, n int, before uint64) ([]pipeline.Msg, error) {
	h.Tails++
	return h.MemoryHistory.Tail(ctx, stream, subject, n, before)
}

// NoNext is h as a History with no NextFinder: a stage then has only Tail
// to learn what is stored.
type NoNext struct{ H *TailCounter }

// Tail implements pipeline.History.
func (p NoNext) Tail(ctx context.Context, stream, subject string, n int, before uint64) ([]pipeline.Msg, error) {
	return p.H.Tail(ctx, stream, subject, n, before)
}
