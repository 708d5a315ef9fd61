package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// inbox holds what the server delivered and the runner has not settled:
// the batch being handled and the inputs queued behind it. All of it is
// kept alive, so that an input waiting behind a slow batch is not
// redelivered (and, after MaxDeliver such waits, dropped by the server).
type inbox struct {
	mu    sync.Mutex
	queue []jetstream.Msg
	// busy are the batches taken and not settled: one being stepped and
	// one awaiting its PubAcks, at most.
	busy   [][]jetstream.Msg
	signal chan struct{}
}

func newInbox() *inbox { return &inbox{signal: make(chan struct{}, 1)} }

// put is the consume callback.
func (b *inbox) put(m jetstream.Msg) {
	b.mu.Lock()
	b.queue = append(b.queue, m)
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

func (b *inbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// heldSeqs are the different inputs (by stream sequence) of held.
func heldSeqs(held []jetstream.Msg) map[uint64]struct{} {
	seen := make(map[uint64]struct{}, len(held))
	for _, m := range held {
		seen[streamSeq(m)] = struct{}{}
	}
	return seen
}

// take moves up to n queued inputs (all when n <= 0) into dst, which joins
// the busy batches.
func (b *inbox) take(n int, dst []jetstream.Msg) []jetstream.Msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n <= 0 || n > len(b.queue) {
		n = len(b.queue)
	}
	dst = append(dst, b.queue[:n]...)
	k := copy(b.queue, b.queue[n:])
	clear(b.queue[k:])
	b.queue = b.queue[:k]
	b.busy = append(b.busy, dst)
	return dst
}

// setBusy makes batches the busy ones, dropping those settled.
func (b *inbox) setBusy(batches ...[]jetstream.Msg) {
	b.mu.Lock()
	clear(b.busy)
	b.busy = append(b.busy[:0], batches...)
	b.mu.Unlock()
}

// keepAlive tells the server every third of AckWait that whatever the
// inbox holds is still being worked on, until ctx ends, while alive says
// it may still be.
func (b *inbox) keepAlive(ctx context.Context, ackWait time.Duration, alive func() bool) {
	t := time.NewTicker(max(ackWait/3, 100*time.Millisecond))
	defer t.Stop()
	var held []jetstream.Msg
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !alive() {
			continue
		}
		b.mu.Lock()
		held = held[:0]
		for _, batch := range b.busy {
			held = append(held, batch...)
		}
		held = append(held, b.queue...)
		b.mu.Unlock()
		for _, m := range held {
			_ = m.InProgress() // already acked: refused, harmless
		}
		clear(held)
	}
}
