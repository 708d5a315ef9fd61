package backtest

import (
	"context"
	"fmt"
	"iter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/pipeline"
	"cryptostream/streams"
)

// ReadStart is where a read of MARKET for cfg starts, in stream time: a
// candle is stored at the earliest MaxClockSkew before it starts (a later
// one is refused as from the future), so nothing stored before this can
// be a candle of the range or of its warm-up. An imported or backfilled
// candle is stored long after it starts; it is still delivered, since
// only the storage time bounds the read.
func ReadStart(cfg Config) time.Time {
	_ = cfg.validate() // for its defaults: Replay reports what is invalid
	return cfg.From.Add(-time.Duration(cfg.Warmup)*cfg.Interval.Duration() - streams.MaxClockSkew)
}

// Market reads one series' candles from MARKET with an ordered consumer by
// start time, from start to the last message the stream held when the read
// began. The stream may hold candles of the series out of start order
// (a backfill, an import): Replay takes them in stream order, as the live
// features worker does.
func Market(ctx context.Context, js streams.StreamLookup, iv streams.Interval, symbol string, start time.Time) iter.Seq2[pipeline.Msg, error] {
	return readMarket(ctx, js, streams.CandleSubject(iv, symbol), start)
}

// readMarket reads the candles on filter from start to the last message
// the stream held when the read began.
func readMarket(ctx context.Context, js streams.StreamLookup, filter string, start time.Time) iter.Seq2[pipeline.Msg, error] {
	return func(yield func(pipeline.Msg, error) bool) {
		fail := func(err error) { yield(pipeline.Msg{}, fmt.Errorf("backtest: read MARKET: %w", err)) }
		st, err := js.Stream(ctx, streams.StreamMarket)
		if err != nil {
			fail(err)
			return
		}
		cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{filter},
			DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
			OptStartTime:   &start,
			// The default retries a lost consumer forever.
			MaxResetAttempts: 3,
		})
		if err != nil {
			fail(err)
			return
		}
		if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
			return
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(1024))
		if err != nil {
			fail(err)
			return
		}
		defer it.Stop()
		for {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				fail(err)
				return
			}
			meta, err := msg.Metadata()
			if err != nil {
				fail(err)
				return
			}
			m := pipeline.Msg{Stream: streams.StreamMarket, Subject: msg.Subject(), Seq: meta.Sequence.Stream, Time: meta.Timestamp, Data: msg.Data()}
			if !yield(m, nil) || meta.NumPending == 0 {
				return
			}
		}
	}
}
