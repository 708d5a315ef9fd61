package readmodel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/registry"
	"cryptostream/streams"
)

// Page sizes shared by every Reader, so that both implementations page alike.
const (
	DefaultLimit = 500
	MaxLimit     = 1000
)

// PageLimit applies the default and the cap to a requested page size.
func PageLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

// FormatCursor and ParseCursor define the cursor every Reader uses: the
// decimal unix seconds of the first candle of the next page. It is plain on
// purpose: a client may also build it from a candle's time.
func FormatCursor(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

// ParseCursor is the inverse of FormatCursor.
func ParseCursor(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("readmodel: bad cursor %q", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// ErrBadQuery reports a query that cannot be answered as asked.
var ErrBadQuery = errors.New("readmodel: bad query")

// Normalize validates q and folds its cursor into From.
func (q CandleQuery) Normalize() (CandleQuery, error) {
	if err := streams.ValidateSymbol(q.Symbol); err != nil {
		return q, fmt.Errorf("%w: %w", ErrBadQuery, err)
	}
	if !q.Interval.Valid() {
		return q, fmt.Errorf("%w: unknown interval", ErrBadQuery)
	}
	if q.After != "" {
		after, err := ParseCursor(q.After)
		if err != nil {
			return q, fmt.Errorf("%w: %w", ErrBadQuery, err)
		}
		if after.After(q.From) {
			q.From = after
		}
		q.After = ""
	}
	if !q.To.IsZero() && !q.From.IsZero() && !q.To.After(q.From) {
		return q, fmt.Errorf("%w: to %s is not after from %s", ErrBadQuery, q.To.Format(time.RFC3339), q.From.Format(time.RFC3339))
	}
	q.Limit = PageLimit(q.Limit)
	return q, nil
}

// JetStream answers from the streams themselves. A message's store time is
// not its candle time (a backfill or an import arrives late), so it cannot
// seek by time on the server; instead it keeps, per series asked about, an
// index of every event by start time, and on each query reads only what the
// stream gained since the last one.
type JetStream struct {
	js jetstream.JetStream

	mu          sync.Mutex
	handles     map[string]jetstream.Stream
	candles     map[string]*series[streams.Candle]
	predictions map[string]*series[streams.Prediction]
	alerts      map[string]*series[streams.Alert]
}

// NewJetStream returns a Reader over js.
func NewJetStream(js jetstream.JetStream) *JetStream {
	return &JetStream{
		js:          js,
		handles:     map[string]jetstream.Stream{},
		candles:     map[string]*series[streams.Candle]{},
		predictions: map[string]*series[streams.Prediction]{},
		alerts:      map[string]*series[streams.Alert]{},
	}
}

// Candles implements Reader.
func (r *JetStream) Candles(ctx context.Context, q CandleQuery) (CandlePage, error) {
	q, err := q.Normalize()
	if err != nil {
		return CandlePage{}, err
	}
	s := r.candleSeries(q.Interval, q.Symbol)
	var page CandlePage
	err = readSeries(ctx, r, s, func(sorted []streams.Candle) {
		page.Candles, page.Next = pageOf(sorted, func(c streams.Candle) time.Time { return c.Start }, q.From, q.To, q.Limit)
	})
	return page, err
}

// pageOf is the page of sorted (ascending by start) from from (inclusive)
// to to (exclusive), either open when zero, at most limit long, and the
// cursor of the next page. The page is a copy: the index moves on.
func pageOf[T any](sorted []T, start func(T) time.Time, from, to time.Time, limit int) ([]T, string) {
	byStart := func(v T, t time.Time) int { return start(v).Compare(t) }
	lo, hi := 0, len(sorted)
	if !from.IsZero() {
		lo, _ = slices.BinarySearchFunc(sorted, from, byStart)
	}
	if !to.IsZero() {
		hi, _ = slices.BinarySearchFunc(sorted, to, byStart)
	}
	if lo >= hi {
		return []T{}, ""
	}
	end := min(hi, lo+limit)
	if end < hi {
		return slices.Clone(sorted[lo:end]), FormatCursor(start(sorted[end]))
	}
	return slices.Clone(sorted[lo:end]), ""
}

// LatestCandle implements Reader: the candle with the newest start time.
func (r *JetStream) LatestCandle(ctx context.Context, symbol string, iv streams.Interval) (streams.Candle, error) {
	if err := streams.ValidateSymbol(symbol); err != nil || !iv.Valid() {
		return streams.Candle{}, fmt.Errorf("%w: %s %s", ErrBadQuery, symbol, iv)
	}
	return latest(ctx, r, r.candleSeries(iv, symbol))
}

// LatestPrediction implements Reader: the prediction made at the newest candle.
func (r *JetStream) LatestPrediction(ctx context.Context, symbol string, iv streams.Interval) (streams.Prediction, error) {
	if err := streams.ValidateSymbol(symbol); err != nil || !iv.Valid() {
		return streams.Prediction{}, fmt.Errorf("%w: %s %s", ErrBadQuery, symbol, iv)
	}
	return latest(ctx, r, r.predictionSeries(iv, symbol))
}

// Predictions implements Reader from the same index as LatestPrediction:
// the series is read from the PREDICTIONS stream once and caught up on
// each query, so a page costs a binary search, not a read of the stream.
func (r *JetStream) Predictions(ctx context.Context, q PredictionQuery) (PredictionPage, error) {
	q, err := q.Normalize()
	if err != nil {
		return PredictionPage{}, err
	}
	var page PredictionPage
	err = readSeries(ctx, r, r.predictionSeries(q.Interval, q.Symbol), func(sorted []streams.Prediction) {
		page.Predictions, page.Next = pageOf(sorted, func(p streams.Prediction) time.Time { return p.Start }, q.From, q.To, q.Limit)
	})
	return page, err
}

func (r *JetStream) predictionSeries(iv streams.Interval, symbol string) *series[streams.Prediction] {
	return index(r, r.predictions, streams.PredictionSubject(iv, symbol), func(subj string) *series[streams.Prediction] {
		return newSeries(streams.StreamPredictions, subj, func(b []byte) (streams.Prediction, error) {
			p, err := streams.Decode[streams.Prediction](b)
			p.Trace = nil // hops are transport detail, not history
			return p, err
		}, func(a, b streams.Prediction) int { return a.Start.Compare(b.Start) })
	})
}

// Champion implements Reader from the model-registry bucket, which the
// trainer writes through registry.
func (r *JetStream) Champion(ctx context.Context, symbol string, iv streams.Interval) (streams.ModelRecord, error) {
	if err := streams.ValidateSymbol(symbol); err != nil || !iv.Valid() {
		return streams.ModelRecord{}, fmt.Errorf("%w: %s %s", ErrBadQuery, symbol, iv)
	}
	kv, err := r.js.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		return streams.ModelRecord{}, fmt.Errorf("readmodel: registry: %w", err)
	}
	e, err := kv.Get(ctx, streams.ChampionKey(iv, symbol))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return streams.ModelRecord{}, ErrNotFound
	}
	if err != nil {
		return streams.ModelRecord{}, fmt.Errorf("readmodel: champion: %w", err)
	}
	id := registry.DecodeChampion(e.Value())
	me, err := kv.Get(ctx, streams.ModelKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return streams.ModelRecord{}, ErrNotFound
	}
	if err != nil {
		return streams.ModelRecord{}, fmt.Errorf("readmodel: model %s: %w", id, err)
	}
	var m streams.ModelRecord
	if err := json.Unmarshal(me.Value(), &m); err != nil {
		return streams.ModelRecord{}, fmt.Errorf("readmodel: model %s: %w", id, err)
	}
	return m, nil
}

// Alerts implements Reader.
func (r *JetStream) Alerts(ctx context.Context, q AlertQuery) ([]streams.Alert, error) {
	if err := streams.ValidateSymbol(q.Symbol); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadQuery, err)
	}
	s := index(r, r.alerts, streams.AlertSubject(q.Symbol), func(subj string) *series[streams.Alert] {
		return newSeries(streams.StreamAlerts, subj, func(b []byte) (streams.Alert, error) {
			a, err := streams.Decode[streams.Alert](b)
			a.Trace = nil
			return a, err
		}, func(a, b streams.Alert) int {
			if c := a.At.Compare(b.At); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
	})
	out := []streams.Alert{}
	err := readSeries(ctx, r, s, func(sorted []streams.Alert) {
		for _, a := range sorted {
			if (!q.From.IsZero() && a.At.Before(q.From)) || (!q.To.IsZero() && !a.At.Before(q.To)) {
				continue
			}
			if out = append(out, a); len(out) == PageLimit(q.Limit) {
				return
			}
		}
	})
	return out, err
}

func (r *JetStream) candleSeries(iv streams.Interval, symbol string) *series[streams.Candle] {
	return index(r, r.candles, streams.CandleSubject(iv, symbol), func(subj string) *series[streams.Candle] {
		return newSeries(streams.StreamMarket, subj, func(b []byte) (streams.Candle, error) {
			c, err := streams.Decode[streams.Candle](b)
			c.Trace = nil // hops are transport detail, not history
			return c, err
		}, func(a, b streams.Candle) int { return a.Start.Compare(b.Start) })
	})
}

// index returns the series of subj kept in m, or a new one that
// readSeries keeps in m once a read finds the subject holds something. A
// query of a subject with nothing stored (any symbol a client can spell)
// leaves nothing behind: the reader grows with the streams, not with what
// clients ask for.
func index[T any](r *JetStream, m map[string]*series[T], subj string, mk func(subj string) *series[T]) *series[T] {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := m[subj]; ok {
		return s
	}
	s := mk(subj)
	s.keep = func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, ok := m[subj]; !ok {
			m[subj] = s
		}
	}
	return s
}

// Series is how many series the reader indexes (its memory grows with
// them): those of subjects that held something when asked about.
func (r *JetStream) Series() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.candles) + len(r.predictions) + len(r.alerts)
}

// stream returns a cached handle: looking a stream up costs a round trip
// that every query would otherwise pay.
func (r *JetStream) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	r.mu.Lock()
	h, ok := r.handles[name]
	r.mu.Unlock()
	if ok {
		return h, nil
	}
	h, err := r.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("readmodel: stream %s: %w", name, err)
	}
	r.mu.Lock()
	r.handles[name] = h
	r.mu.Unlock()
	return h, nil
}

func readSeries[T any](ctx context.Context, r *JetStream, s *series[T], fn func(sorted []T)) error {
	stream, err := r.stream(ctx, s.stream)
	if err != nil {
		return err
	}
	if err := s.read(ctx, r.js, stream, fn); err != nil {
		return err
	}
	if s.keep != nil {
		s.mu.RLock()
		held := s.lastSeq > 0
		s.mu.RUnlock()
		if held {
			s.keep()
		}
	}
	return nil
}

func latest[T any](ctx context.Context, r *JetStream, s *series[T]) (T, error) {
	var out T
	var found bool
	err := readSeries(ctx, r, s, func(sorted []T) {
		if len(sorted) > 0 {
			out, found = sorted[len(sorted)-1], true
		}
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	return out, err
}

// series indexes one subject's events in their order (by start time, or
// for alerts by time and id); events the order calls equal are one event,
// and the newest stored version wins, as it does in the SQL projection.
type series[T any] struct {
	stream, subject string
	decode          func([]byte) (T, error)
	order           func(a, b T) int

	// keep puts the series in the reader's index unless one is there
	// already; set before the series is shared.
	keep func()

	last lastSeqs

	mu      sync.RWMutex
	lastSeq uint64
	sorted  []T
}

func newSeries[T any](stream, subject string, decode func([]byte) (T, error), order func(a, b T) int) *series[T] {
	return &series[T]{stream: stream, subject: subject, decode: decode, order: order}
}

// read catches the index up with the stream and hands fn the sorted events.
// fn must not keep the slice. The one round trip that asks for the
// subject's last sequence happens outside the lock (shared with the
// queries of the series waiting at the same time, see lastSeqs), and a series already
// up to date is read under a shared lock, so concurrent queries of one
// series do not queue behind each other.
func (s *series[T]) read(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, fn func(sorted []T)) error {
	lastSeq, err := s.last.get(ctx, stream, s.subject)
	if err != nil {
		return err
	}
	s.mu.RLock()
	if lastSeq <= s.lastSeq {
		fn(s.sorted)
		s.mu.RUnlock()
		return nil
	}
	s.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if lastSeq > s.lastSeq {
		if err := s.catchUp(ctx, js, lastSeq); err != nil {
			return err
		}
	}
	fn(s.sorted)
	return nil
}

// catchUp reads the subject from just after the indexed sequence up to last.
func (s *series[T]) catchUp(ctx context.Context, js jetstream.JetStream, last uint64) error {
	cons, err := js.OrderedConsumer(ctx, s.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.subject},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    s.lastSeq + 1,
	})
	if err != nil {
		return fmt.Errorf("readmodel: read %s: %w", s.subject, err)
	}
	// seq advances locally and is committed with the merge, so a read cut
	// short by ctx leaves the index consistent for the next one.
	seq := s.lastSeq
	var fresh []T
	for idle := 0; seq < last; {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return fmt.Errorf("readmodel: fetch %s: %w", s.subject, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("readmodel: metadata: %w", err)
			}
			seq = md.Sequence.Stream
			// Nothing invalid is published (Publish validates), so a
			// decode failure is foreign data on our subject: skip it.
			if v, err := s.decode(msg.Data()); err == nil {
				fresh = append(fresh, v)
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("readmodel: fetch %s: %w", s.subject, err)
		}
		if n > 0 {
			idle = 0
			continue
		}
		// A consumer that was just created may not have its messages
		// ready yet; give it a moment, within the caller's deadline.
		if idle++; idle > 200 {
			return fmt.Errorf("readmodel: read %s: stalled at sequence %d of %d", s.subject, seq, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.merge(fresh)
	s.lastSeq = seq
	return nil
}

// merge folds events in stream order into the sorted index; a later event
// the order calls equal replaces the earlier one.
func (s *series[T]) merge(fresh []T) {
	if len(fresh) == 0 {
		return
	}
	byStart := s.order
	// A stable sort keeps stream order among equal starts, so the last of
	// each run is the newest version.
	slices.SortStableFunc(fresh, byStart)
	dedup := fresh[:0]
	for i, v := range fresh {
		if i+1 < len(fresh) && s.order(fresh[i+1], v) == 0 {
			continue
		}
		dedup = append(dedup, v)
	}
	// The common case is live data: everything new is after everything old.
	if len(s.sorted) == 0 || s.order(s.sorted[len(s.sorted)-1], dedup[0]) < 0 {
		s.sorted = append(s.sorted, dedup...)
		return
	}
	merged := make([]T, 0, len(s.sorted)+len(dedup))
	i, j := 0, 0
	for i < len(s.sorted) && j < len(dedup) {
		switch c := byStart(s.sorted[i], dedup[j]); {
		case c < 0:
			merged = append(merged, s.sorted[i])
			i++
		case c > 0:
			merged = append(merged, dedup[j])
			j++
		default: // the fresh version replaces the old one
			merged = append(merged, dedup[j])
			i++
			j++
		}
	}
	merged = append(merged, s.sorted[i:]...)
	merged = append(merged, dedup[j:]...)
	s.sorted = merged
}
