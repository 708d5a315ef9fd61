package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/ingest/ohlcfile"
	"cryptostream/streams"
)

// AsyncPublisher is the part of jetstream.JetStream the import uses.
type AsyncPublisher interface {
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Importer loads history into MARKET. Every candle carries the same message
// id the live path gives it, and candles already stored are skipped, so
// importing a file twice, or a file that overlaps what the ingester
// stored, stores each candle once. A stored filled candle is the one
// exception: a real row for its interval replaces it (see Replaces).
type Importer struct {
	Pub AsyncPublisher
	// Stored returns the quality of what is stored for each start of a
	// series (nil: none known, rely on the server's 24 h deduplication
	// alone).
	Stored func(ctx context.Context, iv streams.Interval, symbol string) (map[int64]streams.Quality, error)
	// MaxPending bounds unacknowledged publishes (default 1024): it must
	// stay below the client's own bound (jetstream's PublishAsyncMaxPending,
	// 4,000 by default), past which an async publish fails after a stall.
	MaxPending int
	// MaxFill bounds the gap, in intervals, that the empty-interval policy
	// fills between two accepted rows (default DefaultMaxFill; negative:
	// fill nothing). A longer gap is left open and reported: a mistyped
	// timestamp must not become a year of invented minutes.
	MaxFill int
	// Progress, when set, is called with the number of candles handled.
	Progress func(n int)
	Log      *slog.Logger
}

// DefaultMaxPending is the import's bound on unacknowledged publishes.
const DefaultMaxPending = 1024

// DefaultMaxFill is the longest gap an import fills: an hour of minutes.
const DefaultMaxFill = 60

// ImportStats says what an import did.
type ImportStats struct {
	Rows       int   // good rows read
	Published  int   // candles sent
	Filled     int   // of which filled by the empty-interval policy
	Replaced   int   // of which replace a stored filled candle
	Skipped    int   // already stored before the import
	Duplicates int   // the server already had the id
	Open       []Gap // gaps left unfilled
	Elapsed    time.Duration
}

// Rejection reasons beside ohlcfile's.
const (
	ReasonRowInvalid = "invalid candle"
	ReasonRowFuture  = "future candle"
)

// BadRowError is a row the import skipped, with where it was and why.
type BadRowError struct {
	File   string
	Line   int
	Reason string
	Err    error
}

func (e *BadRowError) Error() string {
	return fmt.Sprintf("%s:%d: %s: %v", e.File, e.Line, e.Reason, e.Err)
}
func (e *BadRowError) Unwrap() error { return e.Err }

// ErrCadence is a file whose rows are spaced by another interval than the
// one given.
var ErrCadence = errors.New("ingest: the file's cadence is not the interval given")

// ReadFile reads one history file into candles of symbol and interval,
// marked imported, in ascending order; a candle starting after now plus
// the skew bound is refused. Bad rows go to bad, each with its file, line
// and reason, and reading goes on. A file whose rows lie on a coarser or
// finer grid than iv (a 5-minute file read as 1-minute) is refused as a
// whole with ErrCadence, before anything is stored.
func ReadFile(name string, r io.Reader, symbol string, iv streams.Interval, now time.Time, bad func(*BadRowError)) (Series, error) {
	rd := ohlcfile.NewReader(r)
	s := Series{Broken: map[time.Time]bool{}}
	var rejectedAt []time.Time // starts of rejected rows whose time was read
	var starts []time.Time     // every row whose time was read
	breakNext := false         // the row before in the file was rejected
	for {
		row, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var le *ohlcfile.LineError
			if !errors.As(err, &le) {
				return s, fmt.Errorf("ingest: read %s: %w", name, err)
			}
			bad(&BadRowError{File: name, Line: le.Line, Reason: le.Reason, Err: le.Err})
			breakNext = true
			continue
		}
		starts = append(starts, row.Start)
		c := streams.Candle{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: symbol, Interval: iv, Start: row.Start,
			Open: row.Open, High: row.High, Low: row.Low, Close: row.Close, Volume: row.Volume, Trades: max(row.Trades, 0),
			Quality: streams.QualityImported}
		if row.Trades < 0 && row.Volume > 0 {
			// A file without trade counts: one trade at least happened.
			c.Trades = 1
		}
		if err := c.ValidateAt(now); err != nil {
			reason := ReasonRowInvalid
			if errors.Is(err, streams.ErrFutureCandle) {
				reason = ReasonRowFuture
			}
			bad(&BadRowError{File: name, Line: row.Line, Reason: reason, Err: err})
			// Its time may be the mistake: it cuts the file where it sits
			// as well as where it says.
			rejectedAt = append(rejectedAt, row.Start)
			breakNext = true
			continue
		}
		if breakNext {
			s.Broken[c.Start] = true
			breakNext = false
		}
		s.Candles = append(s.Candles, c)
	}
	if err := checkCadence(name, starts, iv); err != nil {
		return Series{}, err
	}
	sort.SliceStable(s.Candles, func(i, j int) bool { return s.Candles[i].Start.Before(s.Candles[j].Start) })
	sort.Slice(rejectedAt, func(i, j int) bool { return rejectedAt[i].Before(rejectedAt[j]) })
	for i := 1; i < len(s.Candles); i++ {
		prev, c := s.Candles[i-1].Start, s.Candles[i].Start
		j := sort.Search(len(rejectedAt), func(j int) bool { return rejectedAt[j].After(prev) })
		if j < len(rejectedAt) && rejectedAt[j].Before(c) {
			s.Broken[c] = true
		}
	}
	return s, nil
}

// checkCadence refuses a file whose rows say it holds another interval than
// iv: most rows off iv's grid, or every row on a coarser grid with no two
// rows closer than that grid's step (a 5-minute file read as minutes would
// get four invented flat candles between each pair of rows). "Most" is 90%,
// so a few mistyped times do not move it; two rows prove nothing.
func checkCadence(name string, starts []time.Time, iv streams.Interval) error {
	if len(starts) < 3 || iv > streams.Interval1d {
		return nil
	}
	sorted := slices.SortedFunc(slices.Values(starts), time.Time.Compare)
	step := time.Duration(0)
	for i := 1; i < len(sorted); i++ {
		if d := sorted[i].Sub(sorted[i-1]); d > 0 && (step == 0 || d < step) {
			step = d
		}
	}
	detected := streams.Interval(0)
	for _, cand := range streams.Intervals() {
		if cand > streams.Interval1d {
			break
		}
		on := 0
		for _, t := range starts {
			if cand.Floor(t).Equal(t) {
				on++
			}
		}
		if on*10 >= len(starts)*9 {
			detected = cand
		}
	}
	switch {
	case detected == 0:
		return nil // off every grid: validation refuses each row
	case detected < iv:
		return fmt.Errorf("%w: %s: the rows are %s candles, not %s: give --interval %s", ErrCadence, name, detected, iv, detected)
	case detected > iv && step >= detected.Duration():
		return fmt.Errorf("%w: %s: the rows are %s candles, not %s: give --interval %s", ErrCadence, name, detected, iv, detected)
	}
	return nil
}

// Replaces reports whether a candle of quality q replaces a stored one of
// quality stored: only a real candle replaces a filled one, so an operator
// can correct what the empty-interval policy once invented, and nothing
// else is ever stored twice.
func Replaces(q, stored streams.Quality) bool {
	return stored == streams.QualityFilled && q != streams.QualityFilled
}

// replacementMsgID is the message id of a candle that replaces a stored
// filled one: distinct from the candle's own id, which the server may still
// hold as a duplicate, and deterministic, so a retried replacement is
// still stored once.
func replacementMsgID(c *streams.Candle) string { return c.MsgID() + ":" + string(c.Quality) }

// Import regularises a series (RegularizeSeries) and publishes it. After a
// failure, importing the same series again resumes: what was stored is
// skipped.
func (im *Importer) Import(ctx context.Context, s Series) (ImportStats, error) {
	begin := time.Now()
	var st ImportStats
	st.Rows = len(s.Candles)
	if len(s.Candles) == 0 {
		return st, nil
	}
	maxFill := im.MaxFill
	if maxFill == 0 {
		maxFill = DefaultMaxFill
	}
	grid, open := RegularizeSeries(nil, s, maxFill)
	st.Open = open
	if len(grid) == 0 {
		return st, nil
	}
	var stored map[int64]streams.Quality
	if im.Stored != nil {
		var err error
		if stored, err = im.Stored(ctx, grid[0].Interval, grid[0].Symbol); err != nil {
			return st, err
		}
	}
	maxPending := im.MaxPending
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	type inflight struct {
		fut jetstream.PubAckFuture
		msg *nats.Msg
	}
	queue := make([]inflight, 0, maxPending)
	head := 0
	settle := func(f inflight) error {
		select {
		case ack := <-f.fut.Ok():
			if ack.Duplicate {
				st.Duplicates++
			}
			return nil
		case <-f.fut.Err():
			// Retry in order, synchronously: the id makes it safe.
			ack, err := im.Pub.PublishMsg(ctx, f.msg)
			if err != nil {
				return fmt.Errorf("ingest: import publish %s: %w", f.msg.Header.Get(jetstream.MsgIDHeader), err)
			}
			if ack.Duplicate {
				st.Duplicates++
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	handled := 0
	for i := range grid {
		c := &grid[i]
		handled++
		was, ok := stored[c.Start.Unix()]
		if ok && !Replaces(c.Quality, was) {
			st.Skipped++
			continue
		}
		msg, err := streams.NewMsg(c)
		if err != nil {
			return st, fmt.Errorf("ingest: import %s: %w", c.MsgID(), err)
		}
		if ok {
			msg.Header.Set(jetstream.MsgIDHeader, replacementMsgID(c))
			st.Replaced++
		}
		if len(queue)-head >= maxPending {
			if err := settle(queue[head]); err != nil {
				return st, err
			}
			head++
		}
		fut, err := im.Pub.PublishMsgAsync(msg)
		for errors.Is(err, jetstream.ErrTooManyStalledMsgs) && head < len(queue) {
			// The client's bound is lower than ours: wait for the oldest
			// ack rather than fail.
			if err := settle(queue[head]); err != nil {
				return st, err
			}
			head++
			fut, err = im.Pub.PublishMsgAsync(msg)
		}
		if err != nil {
			return st, fmt.Errorf("ingest: import publish: %w", err)
		}
		if head >= len(queue)/2 && head > 0 {
			// Keep the settled prefix from growing with the import.
			queue = append(queue[:0], queue[head:]...)
			head = 0
		}
		queue = append(queue, inflight{fut, msg})
		st.Published++
		if c.Quality == streams.QualityFilled {
			st.Filled++
		}
		if im.Progress != nil && handled%1024 == 0 {
			im.Progress(handled)
		}
	}
	for ; head < len(queue); head++ {
		if err := settle(queue[head]); err != nil {
			return st, err
		}
	}
	if im.Progress != nil {
		im.Progress(handled)
	}
	st.Elapsed = time.Since(begin)
	return st, nil
}

// StoredStarts reads the start and quality of every stored candle of a
// series from MARKET, so an import can skip them even after the server's
// deduplication window has passed (and replace a filled one). Of two
// versions of a start, the better one counts.
func StoredStarts(js jetstream.JetStream) func(ctx context.Context, iv streams.Interval, symbol string) (map[int64]streams.Quality, error) {
	return func(ctx context.Context, iv streams.Interval, symbol string) (map[int64]streams.Quality, error) {
		st, err := js.Stream(ctx, streams.StreamMarket)
		if err != nil {
			return nil, fmt.Errorf("ingest: market stream: %w", err)
		}
		subj := streams.CandleSubject(iv, symbol)
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			return nil, fmt.Errorf("ingest: market info: %w", err)
		}
		n := int(info.State.Subjects[subj])
		out := make(map[int64]streams.Quality, n)
		if n == 0 {
			return out, nil
		}
		cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
		if err != nil {
			return nil, fmt.Errorf("ingest: read stored %s: %w", subj, err)
		}
		for read := 0; read < n; {
			batch, err := cons.Fetch(min(n-read, 10000), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				return nil, fmt.Errorf("ingest: read stored %s: %w", subj, err)
			}
			got := 0
			for m := range batch.Messages() {
				got++
				c, err := streams.Decode[streams.Candle](m.Data())
				if err != nil {
					continue
				}
				if was, ok := out[c.Start.Unix()]; !ok || Replaces(c.Quality, was) {
					out[c.Start.Unix()] = c.Quality
				}
			}
			if got == 0 {
				break
			}
			read += got
		}
		return out, nil
	}
}
