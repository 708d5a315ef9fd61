package readmodel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/streams"
)

// LatestStreams is the part of jetstream.JetStream that Latest uses: ordered
// consumers to follow the streams, and the streams' state to learn what
// their retention has deleted.
type LatestStreams interface {
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// LatestConfig tunes Latest; zero values take the defaults.
type LatestConfig struct {
	// MaxLag is how many stored messages may wait to be applied while
	// Ready still calls the view current (default 100: a burst of a few
	// hundred series closing the same minute, applied within moments).
	MaxLag uint64
	// SampleEvery is the period of the lag sample and of the retention
	// sweep (default 10 s).
	SampleEvery time.Duration
	Log         *slog.Logger
	Metrics     prometheus.Registerer
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
//
// It holds what a Latest started now would: a series whose every stored
// message the stream's retention (MaxAge, MaxBytes, MaxMsgs) or a purge has
// deleted is dropped at the next sweep (every SampleEvery), and answered
// ErrNotFound, as the JetStream reader answers it. While a consumer is being
// recreated, questions go to the wrapped reader, as before the first sync.
//
// Ready says whether the view is current: both first deliveries read
// through, both consumers following, and at most MaxLag stored messages not
// yet applied on either (the consumer's NumPending, plus what it delivered
// that is still in flight, asked then).
type Latest struct {
	Reader
	js  LatestStreams
	cfg LatestConfig
	log *slog.Logger

	candles     latestSet[streams.Candle]
	predictions latestSet[streams.Prediction]
}

// NewLatest wraps inner; Run follows the streams.
func NewLatest(js LatestStreams, inner Reader, cfg LatestConfig) *Latest {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.MaxLag == 0 {
		cfg.MaxLag = 100
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = 10 * time.Second
	}
	l := &Latest{Reader: inner, js: js, cfg: cfg, log: cfg.Log.With("worker", "latest")}
	m := newLatestMetrics(cfg.Metrics)
	l.candles.met = m.forStream(streams.StreamMarket)
	l.predictions.met = m.forStream(streams.StreamPredictions)
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

// Ready is nil when the view is current (see Latest); it asks each
// consumer for its pending count.
func (l *Latest) Ready(ctx context.Context) error {
	for _, s := range []interface {
		ready(context.Context, uint64) error
	}{&l.candles, &l.predictions} {
		if err := s.ready(ctx, l.cfg.MaxLag); err != nil {
			return err
		}
	}
	return nil
}

// Sample exports each consumer's pending count and drops the series the
// streams no longer hold; Run calls it every SampleEvery.
func (l *Latest) Sample(ctx context.Context) {
	for _, s := range []interface {
		sample(context.Context, LatestStreams, *slog.Logger)
	}{&l.candles, &l.predictions} {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s.sample(cctx, l.js, l.log)
		cancel()
	}
}

// Run follows both streams until ctx ends.
func (l *Latest) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){l.candles.follower(l.js, l.log), l.predictions.follower(l.js, l.log)} {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(l.cfg.SampleEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				l.Sample(ctx)
			}
		}
	}()
	wg.Wait()
	return nil
}

type latestMetrics struct {
	updates, bad, evicted *prometheus.CounterVec
	pending, series       *prometheus.GaugeVec
}

func newLatestMetrics(reg prometheus.Registerer) latestMetrics {
	f := promauto.With(reg)
	return latestMetrics{
		updates: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_readmodel_latest_updates_total", Help: "Messages the latest view (asset_latest's memory) applied, by stream."}, []string{"stream"}),
		bad:     f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_readmodel_latest_bad_messages_total", Help: "Messages the latest view skipped: not a series subject, or not decodable."}, []string{"stream"}),
		evicted: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_readmodel_latest_evicted_total", Help: "Series the latest view dropped because the stream no longer holds any of their messages (retention or purge)."}, []string{"stream"}),
		pending: f.NewGaugeVec(prometheus.GaugeOpts{Name: "cryptostream_readmodel_latest_pending_messages", Help: "Stored messages the latest view has not applied yet (its consumer's NumPending plus what it delivered that is in flight), at the last sample or /readyz; /readyz fails above 100."}, []string{"stream"}),
		series:  f.NewGaugeVec(prometheus.GaugeOpts{Name: "cryptostream_readmodel_latest_series", Help: "Series the latest view holds."}, []string{"stream"}),
	}
}

// setMetrics are one stream's metrics.
type setMetrics struct {
	updates, bad, evicted prometheus.Counter
	pending, series       prometheus.Gauge
}

func (m latestMetrics) forStream(name string) setMetrics {
	return setMetrics{updates: m.updates.WithLabelValues(name), bad: m.bad.WithLabelValues(name), evicted: m.evicted.WithLabelValues(name),
		pending: m.pending.WithLabelValues(name), series: m.series.WithLabelValues(name)}
}

// latestSet is the newest event of each subject of one stream.
type latestSet[T any] struct {
	stream, filter string
	start          func(T) time.Time
	decode         func([]byte) (T, error)

	met setMetrics

	mu     sync.RWMutex
	synced bool
	seq    uint64                                 // stream sequence of the last message applied
	m      map[streams.SubjectKey]*latestEntry[T] // by series, which the subject names
	// cons is the consumer following now, nil while it is recreated;
	// stopped says why it stopped.
	cons    jetstream.Consumer
	stopped error
	// consSeq is the consumer sequence of the last message handled: the
	// server's delivered count beyond it is in flight, not yet applied.
	consSeq uint64
}

// testHookDeliver, when set, runs before each delivered message is handled.
var testHookDeliver func(stream string)

type latestEntry[T any] struct {
	v T
	// checked: the wrapped reader was asked once (see Latest).
	checked bool
	// subject and seq of the newest message delivered on it: the sweep
	// drops the entry once the stream holds nothing on subject, judged on
	// a state read after seq was stored.
	subject string
	seq     uint64
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
func (s *latestSet[T]) apply(key streams.SubjectKey, subject string, seq uint64, v T, lastOfFirst bool) {
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
		s.m[key] = &latestEntry[T]{v: v, subject: subject, seq: seq}
		s.met.series.Set(float64(len(s.m)))
	case !s.start(v).Before(s.start(e.v)):
		e.v = v
	}
	if ok {
		e.seq = max(e.seq, seq)
	}
	s.met.updates.Inc()
}

func (s *latestSet[T]) ready(ctx context.Context, maxLag uint64) error {
	s.mu.RLock()
	synced, cons, stopped := s.synced, s.cons, s.stopped
	s.mu.RUnlock()
	switch {
	case cons == nil && stopped != nil:
		return fmt.Errorf("latest %s: not following: %w", s.stream, stopped)
	case cons == nil:
		return fmt.Errorf("latest %s: not following", s.stream)
	case !synced:
		return fmt.Errorf("latest %s: first delivery not read through", s.stream)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("latest %s: consumer info: %w", s.stream, err)
	}
	lag := s.lag(cons, info)
	if lag > maxLag {
		return fmt.Errorf("latest %s: %d stored messages not yet applied (at most %d)", s.stream, lag, maxLag)
	}
	return nil
}

// lag is how many stored messages the view has not applied: those the
// server has not delivered yet, and those delivered but still in flight
// (the ordered consumer pulls hundreds at a time, so NumPending alone reads
// 0 while they wait for the callback). It exports the figure.
func (s *latestSet[T]) lag(cons jetstream.Consumer, info *jetstream.ConsumerInfo) uint64 {
	lag := info.NumPending
	s.mu.RLock()
	if s.cons == cons && info.Delivered.Consumer > s.consSeq {
		lag += info.Delivered.Consumer - s.consSeq
	}
	s.mu.RUnlock()
	s.met.pending.Set(float64(lag))
	return lag
}

// sample exports the consumer's pending count, then sweeps: an entry whose
// subject holds no message in a state read after the entry's message was
// stored is one the stream deleted (a message stored since is applied
// with a newer seq, and keeps the entry).
func (s *latestSet[T]) sample(ctx context.Context, js LatestStreams, log *slog.Logger) {
	s.mu.RLock()
	cons := s.cons
	s.mu.RUnlock()
	if cons != nil {
		if info, err := cons.Info(ctx); err == nil {
			s.lag(cons, info)
		}
	}
	st, err := js.Stream(ctx, s.stream)
	if err != nil {
		log.Warn("latest: sweep: open stream", "stream", s.stream, "err", err)
		return
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(s.filter))
	if err != nil {
		log.Warn("latest: sweep: stream info", "stream", s.stream, "err", err)
		return
	}
	held := info.State.Subjects
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for key, e := range s.m {
		if e.seq <= info.State.LastSeq && held[e.subject] == 0 {
			delete(s.m, key)
			n++
		}
	}
	if n > 0 {
		s.met.evicted.Add(float64(n))
		s.met.series.Set(float64(len(s.m)))
		log.Info("latest: dropped series the stream no longer holds", "stream", s.stream, "series", n)
	}
}

func (s *latestSet[T]) markSynced() {
	s.mu.Lock()
	s.synced = true
	s.mu.Unlock()
}

// following records the consumer in use (nil: none, for why).
func (s *latestSet[T]) following(cons jetstream.Consumer, why error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cons, s.stopped, s.consSeq = cons, why, 0
	if cons == nil {
		// Nothing is applied until a new consumer has read its first
		// delivery through: answers go to the wrapped reader meanwhile.
		s.synced = false
	}
}

// follower returns the loop that follows the stream: an ordered consumer
// from the last message per subject, recreated after a pause when it stops
// for good (the stream gone, say). ctx ends it.
func (s *latestSet[T]) follower(js LatestStreams, log *slog.Logger) func(ctx context.Context) {
	return func(ctx context.Context) {
		streams.Rewatch(ctx, log, "latest: following stopped; starting over from the last message per subject", []any{"stream", s.stream},
			func(ctx context.Context) error { return s.follow(ctx, js, log) },
			func(err error) { s.following(nil, err) })
	}
}

func (s *latestSet[T]) follow(ctx context.Context, js LatestStreams, log *slog.Logger) error {
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
	s.following(cons, nil)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		if testHookDeliver != nil {
			testHookDeliver(s.stream)
		}
		md, err := msg.Metadata()
		if err != nil {
			return
		}
		defer func() {
			s.mu.Lock()
			// In order; a reset consumer starts again at 1.
			s.consSeq = md.Sequence.Consumer
			s.mu.Unlock()
		}()
		key, err := streams.ParseSeriesSubject(msg.Subject())
		var v T
		if err == nil {
			v, err = s.decode(msg.Data())
		}
		if err != nil {
			// Nothing invalid is published (Publish validates), so this
			// is foreign data on our subject; the sequence still counts.
			s.met.bad.Inc()
			log.Warn("latest: skipped a message", "stream", s.stream, "subject", msg.Subject(), "seq", md.Sequence.Stream, "err", err)
			s.mu.Lock()
			s.seq = max(s.seq, md.Sequence.Stream)
			s.synced = s.synced || md.NumPending == 0
			s.mu.Unlock()
			return
		}
		s.apply(key, msg.Subject(), md.Sequence.Stream, v, md.NumPending == 0)
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
