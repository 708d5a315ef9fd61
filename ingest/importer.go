package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
// stored, stores each candle once.
type Importer struct {
	Pub AsyncPublisher
	// Stored returns the starts already stored for a series (nil: none
	// known, rely on the server's 24 h deduplication alone).
	Stored func(ctx context.Context, iv streams.Interval, symbol string) (map[int64]bool, error)
	// MaxPending bounds unacknowledged publishes (default 4096).
	MaxPending int
	// Progress, when set, is called with the number of candles handled.
	Progress func(n int)
	Log      *slog.Logger
}

// ImportStats says what an import did.
type ImportStats struct {
	Rows       int // good rows read
	BadRows    int // rows reported and skipped
	Published  int // candles sent
	Filled     int // of which filled by the empty-interval policy
	Skipped    int // already stored before the import
	Duplicates int // the server already had the id
	Elapsed    time.Duration
}

// BadRowError is a row the import skipped, with where it was.
type BadRowError struct {
	File string
	Line int
	Err  error
}

func (e *BadRowError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

// ReadFile reads one history file into candles of symbol and interval,
// marked imported, in ascending order. Bad rows go to bad, each with its
// file and line, and reading goes on.
func ReadFile(name string, r io.Reader, symbol string, iv streams.Interval, bad func(error)) []streams.Candle {
	rd := ohlcfile.NewReader(r)
	var out []streams.Candle
	for {
		row, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var le *ohlcfile.LineError
			if errors.As(err, &le) {
				bad(&BadRowError{File: name, Line: le.Line, Err: le.Err})
				continue
			}
			bad(&BadRowError{File: name, Err: err})
			break
		}
		c := streams.Candle{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: symbol, Interval: iv, Start: row.Start,
			Open: row.Open, High: row.High, Low: row.Low, Close: row.Close, Volume: row.Volume, Trades: max(row.Trades, 0),
			Quality: streams.QualityImported}
		if row.Trades < 0 && row.Volume > 0 {
			// A file without trade counts: one trade at least happened.
			c.Trades = 1
		}
		if err := c.Validate(); err != nil {
			bad(&BadRowError{File: name, Line: row.Line, Err: err})
			continue
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// Import regularises candles of one series (the empty-interval policy) and
// publishes them.
func (im *Importer) Import(ctx context.Context, candles []streams.Candle) (ImportStats, error) {
	begin := time.Now()
	var st ImportStats
	st.Rows = len(candles)
	if len(candles) == 0 {
		return st, nil
	}
	grid := Regularize(nil, candles)
	var stored map[int64]bool
	if im.Stored != nil {
		var err error
		if stored, err = im.Stored(ctx, grid[0].Interval, grid[0].Symbol); err != nil {
			return st, err
		}
	}
	maxPending := im.MaxPending
	if maxPending <= 0 {
		maxPending = 4096
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
		if stored[c.Start.Unix()] {
			st.Skipped++
			continue
		}
		msg, err := streams.NewMsg(c)
		if err != nil {
			return st, fmt.Errorf("ingest: import %s: %w", c.MsgID(), err)
		}
		if len(queue)-head >= maxPending {
			if err := settle(queue[head]); err != nil {
				return st, err
			}
			head++
			if head > maxPending {
				queue = append(queue[:0], queue[head:]...)
				head = 0
			}
		}
		fut, err := im.Pub.PublishMsgAsync(msg)
		if err != nil {
			return st, fmt.Errorf("ingest: import publish: %w", err)
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

// StoredStarts reads the starts of every stored candle of a series from
// MARKET, so an import can skip them even after the server's deduplication
// window has passed.
func StoredStarts(js jetstream.JetStream) func(ctx context.Context, iv streams.Interval, symbol string) (map[int64]bool, error) {
	return func(ctx context.Context, iv streams.Interval, symbol string) (map[int64]bool, error) {
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
		out := make(map[int64]bool, n)
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
				out[c.Start.Unix()] = true
			}
			if got == 0 {
				break
			}
			read += got
		}
		return out, nil
	}
}
