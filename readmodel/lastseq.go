package readmodel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// lastSeqs shares the round trip that asks a subject for its last
// sequence among the queries of one series that wait at the same time. A
// query never joins a request already in flight (it could have left before
// an event the query must see was stored): it waits for that one to end and
// joins the next, which leaves after every query that joined it arrived. So
// each query sees everything stored before it began, as with a request of
// its own, and 64 concurrent queries of one series make about two round
// trips instead of 64 (the request was a fifth of the gateway's CPU under
// asset_latest load).
type lastSeqs struct {
	mu      sync.Mutex
	running bool
	next    *lastSeqReq // the request that leaves when the running one ends
}

type lastSeqReq struct {
	done   chan struct{}
	seq    uint64
	err    error
	joined int // queries waiting for it, under lastSeqs.mu
}

// lastSeqTimeout bounds a request sent on behalf of queries that joined it
// (the one that started it may have gone).
const lastSeqTimeout = 5 * time.Second

func (l *lastSeqs) get(ctx context.Context, stream jetstream.Stream, subject string) (uint64, error) {
	l.mu.Lock()
	if !l.running {
		l.running = true
		l.mu.Unlock()
		r := &lastSeqReq{done: make(chan struct{})}
		l.run(ctx, stream, subject, r)
		return r.seq, r.err
	}
	if l.next == nil {
		l.next = &lastSeqReq{done: make(chan struct{})}
	}
	r := l.next
	r.joined++
	l.mu.Unlock()
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run sends r, then hands the request that queries joined meanwhile to a
// goroutine of its own, so that the query that started r is answered now.
func (l *lastSeqs) run(ctx context.Context, stream jetstream.Stream, subject string, r *lastSeqReq) {
	last, err := stream.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		r.err = fmt.Errorf("readmodel: last of %s: %w", subject, err)
	default:
		r.seq = last.Sequence
	}
	close(r.done)
	l.mu.Lock()
	next := l.next
	l.next = nil
	l.running = next != nil
	l.mu.Unlock()
	if next != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lastSeqTimeout)
			defer cancel()
			l.run(ctx, stream, subject, next)
		}()
	}
}
