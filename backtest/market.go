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
//
// The candles are read and decoded on a goroutine of their own, ahead of
// the loop over what Market returns: each message comes with its candle
// as its Value (and its Data), unless it does not decode or is invalid,
// when it comes with its Data alone for the stage to reject as the live
// worker does. Decoding on the goroutine that reads leaves the features
// stage's goroutine the stage alone.
func Market(ctx context.Context, js streams.StreamLookup, iv streams.Interval, symbol string, start time.Time) iter.Seq2[pipeline.Msg, error] {
	return ahead(decodeCandles(readMarket(ctx, js, streams.CandleSubject(iv, symbol), start)))
}

// decodeCandles sets each message's Value to its candle, with
// streams.CandleDecoder (Decode's values and errors, without its
// allocations). The candles are held in slabs of aheadBatch, one
// allocation per batch rather than one per candle; a message's Value
// is never written again once yielded.
func decodeCandles(seq iter.Seq2[pipeline.Msg, error]) iter.Seq2[pipeline.Msg, error] {
	return func(yield func(pipeline.Msg, error) bool) {
		var d streams.CandleDecoder
		var slab []streams.Candle
		for m, err := range seq {
			if err == nil && m.Value == nil {
				if c, derr := d.Decode(m.Data); derr == nil {
					if len(slab) == 0 {
						slab = make([]streams.Candle, aheadBatch)
					}
					slab[0] = c
					m.Value = &slab[0]
					slab = slab[1:]
				}
			}
			if !yield(m, err) {
				return
			}
		}
	}
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
