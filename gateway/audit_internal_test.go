package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/streams"
)

// recordingPublisher keeps what is published.
type recordingPublisher struct {
	mu  sync.Mutex
	evs []streams.AuditEvent
}

func (p *recordingPublisher) PublishMsg(_ context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ev, err := streams.Decode[streams.AuditEvent](m.Data)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evs = append(p.evs, ev)
	return &jetstream.PubAck{}, nil
}

func (p *recordingPublisher) events() []streams.AuditEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]streams.AuditEvent(nil), p.evs...)
}

// Refused attempts are written once per key and flush period, counted, and
// a flood of distinct keys is folded into one overflow event rather than
// held without bound (issue 11 item 2).
func TestRefusedAttemptsAggregated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &recordingPublisher{}
		g := &Gateway{cfg: Config{IOTimeout: time.Second}, d: Deps{Publisher: pub}, now: time.Now,
			refused: newAuditAgg(4), m: newMetrics(prometheus.NewRegistry())}
		g.log = slog.New(slog.DiscardHandler)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- g.flushRefusedEvery(ctx, 10*time.Second) }()

		for range 100 {
			g.refusedAttempt("auth.login", "victim", "10.0.0.1")
		}
		synctest.Wait()
		if n := len(pub.events()); n != 0 {
			t.Fatalf("%d events before the flush period", n)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		evs := pub.events()
		if len(evs) != 1 || evs[0].Count != 100 || evs[0].Target != "victim" || evs[0].Outcome != "rate_limited" || evs[0].Until.Before(evs[0].At) {
			t.Fatalf("after one period: %+v", evs)
		}
		// 50 distinct addresses: four keys, the rest in the overflow.
		for i := range 50 {
			g.refusedAttempt("auth.login", "victim", fmt.Sprint("10.1.0.", i))
		}
		cancel() // a stop flushes what is pending
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		evs = pub.events()[1:]
		total, overflowN := 0, 0
		for _, e := range evs {
			total += e.Count
			if e.Remote == overflow {
				overflowN = e.Count
			}
		}
		if len(evs) != 5 || total != 50 || overflowN != 46 {
			t.Fatalf("flood of 50 addresses: %d events, %d counted, %d in the overflow: %+v", len(evs), total, overflowN, evs)
		}
	})
}
