package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/gateway/hub"
	"cryptostream/streams"
)

// firings knows when each alert rule last fired, from the ALERTS stream:
// the rules API serves it as last_fired_at for every rule, where a rule's
// own fired_at is only the mark of a spent once-rule. It reads the stream
// from its start (the alerts of the last quarter at most) and then follows
// it, so that it holds whatever instance of the notifier fired a rule, and
// a restart of the notifier or of the gateway loses nothing. The index is a
// time per rule id seen: rules deleted since stay in it, bounded by the
// rules that fired within the stream's age.
type firings struct {
	src hub.Source
	log *slog.Logger

	mu   sync.RWMutex
	last map[string]time.Time
	seq  uint64 // the last stream sequence applied
	// caught is closed once the index has read up to the stream's last
	// sequence at the time it started.
	caught  chan struct{}
	upTo    uint64
	started bool
}

func newFirings(src hub.Source, log *slog.Logger) *firings {
	return &firings{src: src, log: log, last: map[string]time.Time{}, caught: make(chan struct{})}
}

// LastFired is when rule id last fired, as far as the index has read.
func (f *firings) LastFired(id string) (time.Time, bool) {
	if f == nil {
		return time.Time{}, false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	t, ok := f.last[id]
	return t, ok
}

// Run reads and then follows ALERTS until ctx ends, starting again after
// the stream or its consumer cannot be opened.
func (f *firings) Run(ctx context.Context) error {
	streams.Rewatch(ctx, f.log, "alerts index: cannot read ALERTS; rules' last fired times stop moving until it can", nil, f.follow, nil)
	return nil
}

func (f *firings) follow(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := f.src.Stream(octx, streams.StreamAlerts)
	if err != nil {
		return err
	}
	info, err := st.Info(octx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	from := f.seq + 1
	if !f.started {
		f.started, f.upTo = true, info.State.LastSeq
		if f.upTo < from {
			close(f.caught)
		}
	}
	f.mu.Unlock()
	// An ordered consumer recreates itself past what it delivered when
	// the server or the connection goes away.
	cons, err := st.OrderedConsumer(octx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
	})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(f.apply, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		f.log.Debug("alerts index consumer", "err", err)
	}))
	if err != nil {
		return err
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
	case <-cc.Closed():
	}
	return ctx.Err()
}

func (f *firings) apply(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	var a struct {
		RuleID string    `json:"rule_id"`
		At     time.Time `json:"at"`
	}
	if err := json.Unmarshal(msg.Data(), &a); err != nil || a.RuleID == "" {
		// The sink and the history route count and skip what does not
		// decode; for this index it simply fired nothing known.
		f.log.Debug("alerts index: undecodable alert", "seq", meta.Sequence.Stream, "err", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if meta.Sequence.Stream <= f.seq {
		return
	}
	f.seq = meta.Sequence.Stream
	if a.RuleID != "" {
		if cur, ok := f.last[a.RuleID]; !ok || a.At.After(cur) {
			f.last[a.RuleID] = a.At.UTC()
		}
	}
	if f.seq >= f.upTo {
		select {
		case <-f.caught:
		default:
			close(f.caught)
		}
	}
}

// Caught reports whether the index has read the whole stream as it was
// when the gateway started.
func (f *firings) Caught() bool {
	select {
	case <-f.caught:
		return true
	default:
		return false
	}
}
