package readmodel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// OrderedConsumers is the part of jetstream.JetStream that Latest follows
// the streams with.
type OrderedConsumers interface {
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
}

// Latest answers LatestCandle and LatestPrediction from memory, kept current
// by an ordered consumer on every candle and every prediction subject, and
// passes every other question to the Reader it wraps. Without it each
// asset_latest made a JetStream round trip to learn whether the series was
// current; with it a request costs no I/O.
//
// What it serves, per series:
//   - the event with the newest start time among those delivered; an event
//     of the same start delivered later (a revision) replaces it, one of an
//     older start (a late backfill) never does, so an answer never goes back
//     to an older candle after a newer one;
//   - a stored event once the consumer has delivered it, which is the
//     consumer's delivery delay after the store (the bound of staleness);
//   - across a lost connection or a consumer reset, the ordered consumer
//     resumes after the last sequence it delivered, so nothing stored
//     meanwhile is skipped; if it stops for good it is recreated from the
//     last message per subject, merged by the same rule.
//
// The consumer starts on the last message of each subject, which is the
// newest stored, not always the newest start (a backfill stored after a
// live candle). So the first question about a series also asks the wrapped
// reader, once, and keeps the newer start of the two. Until that first
// delivery has been read through, every question goes to the wrapped
// reader, as without Latest.
type Latest struct {
	Reader
	js  OrderedConsumers
	log *slog.Logger

	candles     latestSet[streams.Candle]
	predictions latestSet[streams.Prediction]
}

// NewLatest wraps inner; Run follows the streams. log may be nil.
func NewLatest(js OrderedConsumers, inner Reader, log *slog.Logger) *Latest {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Latest{Reader: inner, js: js, log: log.With("worker", "latest")}
	l.candles.init(streams.StreamMarket, streams.CandleFilter(0, ""), func(c streams.Candle) time.Time { return c.Start },
		func(b []byte) (streams.Candle, error) {
			c, err := streams.Decode[streams.Candle](b)
			c.Trace = nil
			return c, err
		})
	l.predictions.init(streams.StreamPredictions, streams.PredictionFilter(), func(p streams.Prediction) time.Time { return p.Start },
		func(b []byte) (streams.Prediction, error) {
			p, err := streams.Decode[streams.Prediction](b)
			p.Trace = nil
			return p, err
		})
	return l
}

// LatestCandle implements Reader.
func (l *Latest) LatestCandle(ctx context.Context, symbol string, iv streams.Interval) (streams.Candle, error) {
	if err := streams.ValidateSymbol(symbol); err != nil || !iv.Valid() {
		return streams.Candle{}, fmt.Errorf("%w: %s %s", ErrBadQuery, symbol, iv)
	}
	return l.candles.latest(ctx, streams.SubjectKey{Interval: iv, Symbol: symbol}, func(ctx context.Context) (streams.Candle, error) {
		return l.Reader.LatestCandle(ctx, symbol, iv)
	})
}

// LatestPrediction implements Reader.
func (l *Latest) LatestPrediction(ctx context.Context, symbol string, iv streams.Interval) (streams.Prediction, error) {
	if err := streams.ValidateSymbol(symbol); err != nil || !iv.Valid() {
		return streams.Prediction{}, fmt.Errorf("%w: %s %s", ErrBadQuery, symbol, iv)
	}
	return l.predictions.latest(ctx, streams.SubjectKey{Interval: iv, Symbol: symbol}, func(ctx context.Context) (streams.Prediction, error) {
		return l.Reader.LatestPrediction(ctx, symbol, iv)
	})
}

// CachedCandle is LatestCandle when memory alone answers it, with no I/O
// and so no deadline to set up: ok is false when LatestCandle must be
// asked instead (not synced yet, or the series' one question to the
// wrapped reader not asked yet), found is false for ErrNotFound.
func (l *Latest) CachedCandle(symbol string, iv streams.Interval) (c streams.Candle, found, ok bool) {
	return l.candles.cached(streams.SubjectKey{Interval: iv, Symbol: symbol})
}

// CachedPrediction is CachedCandle for LatestPrediction.
func (l *Latest) CachedPrediction(symbol string, iv streams.Interval) (p streams.Prediction, found, ok bool) {
	return l.predictions.cached(streams.SubjectKey{Interval: iv, Symbol: symbol})
}

// Delivered is the stream sequence of the last candle and the last
// prediction applied: a test waits on it.
func (l *Latest) Delivered() (candles, predictions uint64) {
	return l.candles.delivered(), l.predictions.delivered()
}

// Synced reports whether both first deliveries were read through, so that
// answers come from memory.
func (l *Latest) Synced() bool { return l.candles.isSynced() && l.predictions.isSynced() }

// Run follows both streams until ctx ends.
func (l *Latest) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){l.candles.follower(l.js, l.log), l.predictions.follower(l.js, l.log)} {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	wg.Wait()
	return nil
}

// latestSet is the newest event of each subject of one stream.
type latestSet[T any] struct {
	stream, filter string
	start          func(T) time.Time
	decode         func([]byte) (T, error)

	mu     sync.RWMutex
	synced bool
	seq    uint64                                 // stream sequence of the last message applied
	m      map[streams.SubjectKey]*latestEntry[T] // by series, which the subject names
}

type latestEntry[T any] struct {
	v T
	// checked: the wrapped reader was asked once (see Latest).
	checked bool
}

func (s *latestSet[T]) init(stream, filter string, start func(T) time.Time, decode func([]byte) (T, error)) {
	s.stream, s.filter, s.start, s.decode = stream, filter, start, decode
	s.m = map[streams.SubjectKey]*latestEntry[T]{}
}

func (s *latestSet[T]) delivered() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq
}

func (s *latestSet[T]) isSynced() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.synced
}

func (s *latestSet[T]) cached(key streams.SubjectKey) (v T, found, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.synced {
		return v, false, false
	}
	e, held := s.m[key]
	switch {
	case !held:
		return v, false, true
	case !e.checked:
		return v, false, false
	}
	return e.v, true, true
}

func (s *latestSet[T]) latest(ctx context.Context, key streams.SubjectKey, inner func(context.Context) (T, error)) (T, error) {
	s.mu.RLock()
	synced := s.synced
	e, ok := s.m[key]
	var v T
	var checked bool
	if ok {
		v, checked = e.v, e.checked
	}
	s.mu.RUnlock()
	var zero T
	switch {
	case !synced:
		return inner(ctx)
	case !ok:
		// Read through: nothing was ever stored on the subject (or it
		// was stored after the delivery this answer reflects).
		return zero, ErrNotFound
	case checked:
		return v, nil
	}
	iv, err := inner(ctx)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return zero, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e = s.m[key]
	// Only a strictly newer start wins here: at an equal start the
	// delivered version is at least as new as the one the reader read.
	if err == nil && s.start(iv).After(s.start(e.v)) {
		e.v = iv
	}
	e.checked = true
	return e.v, nil
}

// apply records one delivered message.
func (s *latestSet[T]) apply(key streams.SubjectKey, seq uint64, v T, lastOfFirst bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.seq {
		s.seq = seq
	}
	if lastOfFirst {
		s.synced = true
	}
	e, ok := s.m[key]
	switch {
	case !ok:
		s.m[key] = &latestEntry[T]{v: v}
	case !s.start(v).Before(s.start(e.v)):
		e.v = v
	}
}

func (s *latestSet[T]) markSynced() {
	s.mu.Lock()
	s.synced = true
	s.mu.Unlock()
}

// follower returns the loop that follows the stream: an ordered consumer
// from the last message per subject, recreated after a pause when it stops
// for good (the stream gone, say). ctx ends it.
func (s *latestSet[T]) follower(js OrderedConsumers, log *slog.Logger) func(ctx context.Context) {
	return func(ctx context.Context) {
		for {
			err := s.follow(ctx, js)
			if ctx.Err() != nil {
				return
			}
			log.Warn("latest: following stopped; starting over from the last message per subject", "stream", s.stream, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

func (s *latestSet[T]) follow(ctx context.Context, js OrderedConsumers) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := js.OrderedConsumer(cctx, s.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.filter},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("readmodel: follow %s: %w", s.stream, err)
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		s.markSynced()
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		md, err := msg.Metadata()
		if err != nil {
			return
		}
		key, err := streams.ParseSeriesSubject(msg.Subject())
		var v T
		if err == nil {
			v, err = s.decode(msg.Data())
		}
		if err != nil {
			// Nothing invalid is published (Publish validates), so this
			// is foreign data on our subject; the sequence still counts.
			s.mu.Lock()
			s.seq = max(s.seq, md.Sequence.Stream)
			s.synced = s.synced || md.NumPending == 0
			s.mu.Unlock()
			return
		}
		s.apply(key, md.Sequence.Stream, v, md.NumPending == 0)
	})
	if err != nil {
		return fmt.Errorf("readmodel: follow %s: %w", s.stream, err)
	}
	select {
	case <-ctx.Done():
		cc.Stop()
		return nil
	case <-cc.Closed():
		return fmt.Errorf("readmodel: follow %s: consumer closed", s.stream)
	}
}
