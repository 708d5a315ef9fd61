package readmodel

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// gatedStream answers GetLastMsgForSubject with its current last sequence
// once let through, and counts the requests.
type gatedStream struct {
	jetstream.Stream
	calls atomic.Int32
	gate  chan struct{}
	last  atomic.Uint64
}

func (g *gatedStream) GetLastMsgForSubject(ctx context.Context, _ string) (*jetstream.RawStreamMsg, error) {
	g.calls.Add(1)
	seq := g.last.Load() // what is stored when the request leaves
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &jetstream.RawStreamMsg{Sequence: seq}, nil
}

// Queries that wait while a request is in flight share the next one, which
// leaves after all of them arrived: they see what was stored after the
// first one left, and the ten make one request, not ten.
func TestLastSeqsShareTheNextRequest(t *testing.T) {
	st := &gatedStream{gate: make(chan struct{})}
	st.last.Store(5)
	var l lastSeqs
	first := make(chan uint64)
	go func() {
		seq, err := l.get(t.Context(), st, "market.candle.1m.BTC-USD")
		if err != nil {
			t.Error(err)
		}
		first <- seq
	}()
	for st.calls.Load() == 0 {
		// The first request has left with sequence 5 in the stream.
		waitABit()
	}
	const n = 10
	var wg sync.WaitGroup
	got := make([]uint64, n)
	for i := range n {
		wg.Go(func() {
			seq, err := l.get(t.Context(), st, "market.candle.1m.BTC-USD")
			if err != nil {
				t.Error(err)
			}
			got[i] = seq
		})
	}
	for joined := 0; joined < n; {
		l.mu.Lock()
		if l.next != nil {
			joined = l.next.joined
		}
		l.mu.Unlock()
		waitABit()
	}
	st.last.Store(7) // stored after the first request left, before the joiners' one
	close(st.gate)
	if seq := <-first; seq != 5 {
		t.Fatalf("the first query saw %d, want 5", seq)
	}
	wg.Wait()
	for i, seq := range got {
		if seq != 7 {
			t.Fatalf("query %d saw %d, want 7: it was answered by a request that left before it came", i, seq)
		}
	}
	if c := st.calls.Load(); c != 2 {
		t.Fatalf("%d requests for 11 queries, want 2", c)
	}
}

// waitABit yields while a test polls a state (no deadline but the test's).
func waitABit() { runtime.Gosched() }
