package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// JetStreamSink stores candles in MARKET and ticks in TICKS.
type JetStreamSink struct {
	JS  jetstream.JetStream
	Log *slog.Logger
}

// PublishCandle stores c with its message id and waits for the ack,
// retrying a failed publish until ctx ends: the id makes a retry of a
// stored candle a duplicate, which is success.
func (s *JetStreamSink) PublishCandle(ctx context.Context, c streams.Candle) error {
	msg, err := streams.NewMsg(&c)
	if err != nil {
		return fmt.Errorf("ingest: encode candle: %w", err)
	}
	wait := 50 * time.Millisecond
	for {
		_, err := s.JS.PublishMsg(ctx, msg)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("ingest: publish %s: %w", msg.Subject, err)
		}
		if s.Log != nil {
			s.Log.Warn("publish candle failed, retrying", "subject", msg.Subject, "err", err, "in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("ingest: publish %s: %w", msg.Subject, err)
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// PublishTick publishes without waiting for an acknowledgement: TICKS still
// stores it (and deduplicates its id), but a tick is replaced by the next
// one, so an ack per tick would only queue ahead of the candle publishes
// that do wait for theirs.
func (s *JetStreamSink) PublishTick(ctx context.Context, t streams.Tick) error {
	msg, err := streams.NewMsg(&t)
	if err != nil {
		return fmt.Errorf("ingest: encode tick: %w", err)
	}
	if err := s.JS.Conn().PublishMsg(msg); err != nil {
		return fmt.Errorf("ingest: publish tick: %w", err)
	}
	return nil
}

// LastCandle returns the newest valid candle of a series stored in MARKET:
// the point the ingester resumes after. A stored message that does not
// decode or validate (a candle from the future, written before validation
// refused them) is skipped with a warning, and the series is read back
// until a valid one: resuming after such a message would drop every new
// candle, silently.
func (s *JetStreamSink) LastCandle(ctx context.Context, iv streams.Interval, symbol string) (streams.Candle, bool, error) {
	st, err := s.JS.Stream(ctx, streams.StreamMarket)
	if err != nil {
		return streams.Candle{}, false, fmt.Errorf("ingest: market stream: %w", err)
	}
	subj := streams.CandleSubject(iv, symbol)
	m, err := st.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return streams.Candle{}, false, nil
	}
	if err != nil {
		return streams.Candle{}, false, fmt.Errorf("ingest: last candle %s %s: %w", iv, symbol, err)
	}
	c, err := streams.Decode[streams.Candle](m.Data)
	if err == nil {
		return c, true, nil
	}
	s.warn("newest stored candle refused, reading the series back to a valid one", "subject", subj, "seq", m.Sequence, "err", err)
	info, err := st.Info(ctx)
	if err != nil {
		return streams.Candle{}, false, fmt.Errorf("ingest: market info: %w", err)
	}
	// Windows growing 16-fold: a few bad candles cost one small read, a
	// long run of them a few reads, never more than the whole series.
	first := max(info.State.FirstSeq, 1)
	for span := uint64(256); ; span *= 16 {
		from := first
		if m.Sequence > span && m.Sequence-span > first {
			from = m.Sequence - span
		}
		c, ok, err := s.newestValid(ctx, st, subj, from, m.Sequence)
		if err != nil || ok || from == first {
			return c, ok, err
		}
	}
}

// newestValid reads the candles of subj stored at sequences from..upto and
// returns the valid one that starts last.
func (s *JetStreamSink) newestValid(ctx context.Context, st jetstream.Stream, subj string, from, upto uint64) (streams.Candle, bool, error) {
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj},
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return streams.Candle{}, false, fmt.Errorf("ingest: read back %s: %w", subj, err)
	}
	var best streams.Candle
	found, skipped := false, 0
	for {
		// Everything up to upto is stored already: take what is there.
		batch, err := cons.FetchNoWait(1024)
		if err != nil {
			return streams.Candle{}, false, fmt.Errorf("ingest: read back %s: %w", subj, err)
		}
		got, done := 0, false
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				continue
			}
			if meta.Sequence.Stream >= upto {
				done = true
			}
			if meta.Sequence.Stream > upto {
				continue
			}
			c, err := streams.Decode[streams.Candle](msg.Data())
			if err != nil {
				skipped++
				continue
			}
			if !found || c.Start.After(best.Start) {
				best, found = c, true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return streams.Candle{}, false, fmt.Errorf("ingest: read back %s: %w", subj, err)
		}
		if done || got == 0 {
			break
		}
	}
	if found {
		s.warn("resuming after the newest valid stored candle", "subject", subj, "start", best.Start, "refused", skipped)
	}
	return best, found, nil
}

func (s *JetStreamSink) warn(msg string, args ...any) {
	if s.Log != nil {
		s.Log.Warn(msg, args...)
	}
}

// KVAssets watches the assets bucket.
type KVAssets struct {
	KV  jetstream.KeyValue
	Log *slog.Logger
}

// Seed puts symbols into the bucket when it is empty, so a first start
// tracks something; an operator's later choices are never overwritten.
func (a *KVAssets) Seed(ctx context.Context, symbols []string, now time.Time) error {
	keys, err := a.KV.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("ingest: list assets: %w", err)
	}
	for range keys.Keys() {
		keys.Stop()
		return nil
	}
	for _, s := range symbols {
		sym, err := streams.NormalizeSymbol(s)
		if err != nil {
			return fmt.Errorf("ingest: seed asset: %w", err)
		}
		b, err := json.Marshal(streams.Asset{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: sym, AddedBy: "ingest --assets", AddedAt: now.UTC()})
		if err != nil {
			return err
		}
		if _, err := a.KV.Create(ctx, streams.AssetKey(sym), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("ingest: seed asset %s: %w", sym, err)
		}
	}
	return nil
}

// WatchAssets implements AssetWatcher. A watch ends when its ordered
// consumer cannot be made again (the bucket deleted and declared anew, a
// JetStream error other than a timeout): it is then watched again, until
// ctx ends, and the set a new watch sends replaces the old one, so that a
// key deleted while no watch ran stops its subscription too. The first
// watch is made here, so that a bucket that is not there at the start is
// an error of the start.
func (a *KVAssets) WatchAssets(ctx context.Context) (<-chan []string, error) {
	first, err := a.KV.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("ingest: watch assets: %w", err)
	}
	out := make(chan []string, 1)
	log := a.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	go func() {
		defer close(out)
		streams.Rewatch(ctx, log, "assets watch ended; the tracked assets stay as they were until it resumes", nil, func(ctx context.Context) error {
			w := first
			first = nil
			if w == nil {
				var err error
				if w, err = a.KV.WatchAll(ctx); err != nil {
					return fmt.Errorf("ingest: watch assets: %w", err)
				}
			}
			defer func() { _ = w.Stop() }()
			return a.follow(ctx, w, out)
		}, nil)
	}()
	return out, nil
}

// follow sends the set of symbols w shows, once its first pass is read and
// after every change from then on, until ctx or the watch ends.
func (a *KVAssets) follow(ctx context.Context, w jetstream.KeyWatcher, out chan []string) error {
	set := map[string]bool{}
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("ingest: assets watch closed")
			}
			if e != nil {
				a.apply(set, e)
				if initial {
					continue
				}
			}
			initial = false
			syms := make([]string, 0, len(set))
			for s := range set {
				syms = append(syms, s)
			}
			sort.Strings(syms)
			// Only the newest set matters: replace an unread one.
			select {
			case <-out:
			default:
			}
			out <- syms
		}
	}
}

func (a *KVAssets) apply(set map[string]bool, e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		sym, err := streams.SymbolFromToken(e.Key())
		if err == nil {
			delete(set, sym)
		}
		return
	}
	var asset streams.Asset
	if err := json.Unmarshal(e.Value(), &asset); err != nil {
		if a.Log != nil {
			a.Log.Warn("asset entry unreadable, ignored", "key", e.Key(), "err", err)
		}
		return
	}
	sym, err := streams.NormalizeSymbol(asset.Symbol)
	if err != nil {
		if a.Log != nil {
			a.Log.Warn("asset entry has a bad symbol, ignored", "key", e.Key(), "err", err)
		}
		return
	}
	set[sym] = true
}
