package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/natstest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// seen stands between a runner and its consumer and tells which inputs
// reached the runner's inbox.
type seen struct {
	pipeline.JetStream
	mu   sync.Mutex
	seqs map[uint64]bool
	more chan struct{}
}

func (s *seen) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c, err := s.JetStream.Consumer(ctx, stream, name)
	if err != nil {
		return nil, err
	}
	return &seenConsumer{Consumer: c, s: s}, nil
}

// has says whether every input of seqs from..to reached the inbox.
func (s *seen) has(from, to uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for q := from; q <= to; q++ {
		if !s.seqs[q] {
			return false
		}
	}
	return true
}

type seenConsumer struct {
	jetstream.Consumer
	s *seen
}

func (c *seenConsumer) Consume(h jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	return c.Consumer.Consume(func(m jetstream.Msg) {
		h(m)
		if md, err := m.Metadata(); err == nil {
			c.s.mu.Lock()
			c.s.seqs[md.Sequence.Stream] = true
			c.s.mu.Unlock()
			select {
			case c.s.more <- struct{}{}:
			default:
			}
		}
	}, opts...)
}

// TestRunnerTakeoverWaitsForTheLostOwner: the issue 12 miss, forced. A lost
// owner still holds the first inputs (unacked, not yet redelivered) when
// the new owner gets newer ones and asks the server what is in flight.
// Whatever happens to that answer (inputs delivered while it is on its
// way, so that counting them afterwards makes up for the lost owner's; or
// no answer at all), the new owner must wait for the lost inputs and step
// everything in stream order. Stepping the newer inputs first takes the
// lost ones into their series' warm-up from history, and their redelivery
// is then covered: their outputs are never published.
func TestRunnerTakeoverWaitsForTheLostOwner(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail bool
	}{
		{"answer overtaken by deliveries", false},
		{"no answer", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, js := setup(t)
			// A long AckWait: the lost owner's inputs come back only when
			// it hands them back, not when a timer says.
			if _, err := js.UpdateConsumer(t.Context(), "IN", jetstream.ConsumerConfig{
				Durable: "sum", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxDeliver: -1,
				MaxAckPending: batch, PriorityPolicy: jetstream.PriorityPolicyPinned,
				PriorityGroups: []string{streams.PriorityGroup}, PinnedTTL: time.Second,
			}); err != nil {
				t.Fatal(err)
			}
			keys := []string{"a", "b"}
			const lost, first, late = 8, 20, 8
			inputs(t, js, keys, 0, first)
			lostMsgs := owner(t, s, lost)

			handBack := make(chan struct{})
			var once sync.Once
			spy := &seen{seqs: map[uint64]bool{}, more: make(chan struct{}, 1)}
			in := runWith(t, s, newSummer(), func(_ *nats.Conn, js pipeline.JetStream) pipeline.JetStream {
				spy.JetStream = js
				return spy
			}, func(r *pipeline.Runner) {
				pipeline.SetConsumerInfo(r, func(ctx context.Context, c jetstream.Consumer) (*jetstream.ConsumerInfo, error) {
					hooked := false
					once.Do(func() { hooked = true })
					if !hooked {
						return c.Info(ctx)
					}
					defer close(handBack)
					if tc.fail {
						return nil, errors.New("test: no answer")
					}
					info, err := c.Info(ctx)
					if err != nil {
						t.Error(err)
						return nil, err
					}
					if info.NumAckPending < lost {
						t.Errorf("%d in flight when the new owner asks: the lost owner's %d are not", info.NumAckPending, lost)
					}
					// As many newer inputs as the lost owner holds reach
					// the new owner before the answer does.
					inputs(t, js, keys, first, late)
					for !spy.has(first+1, first+late) {
						select {
						case <-spy.more:
						case <-t.Context().Done():
							return nil, t.Context().Err()
						}
					}
					return info, nil
				})
			})
			// The lost owner's inputs come back once the new owner has
			// asked, in order, as its AckWait would bring them.
			<-handBack
			for _, m := range lostMsgs {
				if err := m.Nak(); err != nil {
					t.Fatal(err)
				}
			}
			total := first
			if !tc.fail {
				total += late
			}
			waitAcked(t, js, uint64(total))
			in.stop()
			check(t, outputs(t, js), want(keys, total, nil))
		})
	}
}

// owner is an owner of the consumer that takes its first n inputs and is
// lost with them: it never acks them and never pulls again, so that its pin
// expires and another instance takes over while the server still counts the
// inputs in flight.
func owner(t *testing.T, s *server.Server, n int) []jetstream.Msg {
	t.Helper()
	_, js := natstest.Connect(t, s)
	c, err := js.Consumer(t.Context(), "IN", "sum")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Fetch(n, jetstream.FetchPriorityGroup(streams.PriorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for m := range b.Messages() {
		out = append(out, m)
	}
	if err := b.Error(); err != nil {
		t.Fatal(err)
	}
	if len(out) != n {
		t.Fatalf("the lost owner took %d inputs, want %d", len(out), n)
	}
	return out
}

// waitAcked waits until the consumer has acked every input up to seq and
// holds none in flight.
func waitAcked(t *testing.T, js jetstream.JetStream, seq uint64) {
	t.Helper()
	natstest.WaitProgress(t, 60*time.Second, "every input acked", func() (bool, string) {
		c, err := js.Consumer(t.Context(), "IN", "sum")
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.AckFloor.Stream >= seq && info.NumAckPending == 0,
			fmt.Sprintf("ack floor %d, %d pending", info.AckFloor.Stream, info.NumAckPending)
	})
}
