package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cryptostream/ingest/krakenrest"
	"cryptostream/streams"
)

// The REST heal: after every subscription ack, and whenever the assembler
// asks, the committed candles after the newest stored one are fetched in
// the background (at most one REST call per RESTInterval) and handed to the
// assembler on the session's loop.

// healResult is a heal's answer, handed back to the session's loop.
type healResult struct {
	symbol string
	rows   []streams.Candle
	err    error
}

// startHeal fetches REST OHLC for sym in the background after delay.
func (s *session) startHeal(ctx context.Context, sym string, delay time.Duration) {
	if s.healing[sym] {
		return
	}
	s.healing[sym] = true
	since := s.asm.SinceForHeal(sym)
	go func() {
		rows, err := s.w.heal(ctx, s.iv, sym, since, delay)
		select {
		case s.heals <- healResult{sym, rows, err}:
		case <-ctx.Done():
		}
	}()
}

func (s *session) applyHeal(ctx context.Context, h healResult) error {
	delete(s.healing, h.symbol)
	if h.err != nil {
		s.log.Warn("heal from REST failed", "symbol", h.symbol, "err", h.err)
	}
	e := s.asm.Healed(h.symbol, h.rows)
	backfilled := 0
	for _, c := range e.Final {
		if c.Quality == streams.QualityBackfilled {
			backfilled++
		}
	}
	if backfilled > 0 {
		s.w.m.gapsHealed.WithLabelValues(s.ivs).Inc()
		s.log.Info("healed from REST", "symbol", h.symbol, "candles", len(e.Final))
	}
	if err := s.publish(ctx, e, s.w.cfg.Now()); err != nil {
		return err
	}
	if e.Heal {
		s.startHeal(ctx, h.symbol, s.w.cfg.HealRetry)
	}
	return nil
}

// heal fetches the committed candles of sym after since from REST.
func (w *Worker) heal(ctx context.Context, iv streams.Interval, sym string, since time.Time, delay time.Duration) ([]streams.Candle, error) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	wait := w.cfg.HealRetry
	for attempt := 0; ; attempt++ {
		rows, err := w.fetch(ctx, iv, sym, since)
		if err == nil || ctx.Err() != nil || attempt >= 4 {
			return rows, err
		}
		w.log.Warn("REST OHLC failed, retrying", "symbol", sym, "err", err, "in", wait)
		if errors.Is(err, krakenrest.ErrRateLimited) {
			wait *= 2
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		wait = min(2*wait, time.Minute)
	}
}

func (w *Worker) fetch(ctx context.Context, iv streams.Interval, sym string, since time.Time) ([]streams.Candle, error) {
	pair, err := w.pairFor(ctx, sym)
	if err != nil {
		return nil, err
	}
	if err := w.limiter.Wait(ctx); err != nil {
		return nil, err
	}
	res, err := w.deps.REST.OHLC(ctx, pair, iv, since)
	if err != nil {
		return nil, fmt.Errorf("ingest: heal %s %s: %w", iv, sym, err)
	}
	return RESTCandles(sym, iv, res.Committed(), streams.QualityBackfilled), nil
}

// RESTCandles turns REST rows into candles of one quality, dropping rows
// that fail validation.
func RESTCandles(sym string, iv streams.Interval, rows []krakenrest.Row, q streams.Quality) []streams.Candle {
	out := make([]streams.Candle, 0, len(rows))
	for _, r := range rows {
		c := streams.Candle{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: sym, Interval: iv, Start: r.Start,
			Open: r.Open, High: r.High, Low: r.Low, Close: r.Close, VWAP: r.VWAP, Volume: r.Volume, Trades: r.Trades, Quality: q}
		if IsFiller(c) {
			c.Quality = streams.QualityFilled
		} else if c.Validate() != nil {
			continue
		}
		out = append(out, c)
	}
	return out
}

// pairFor maps a v2 symbol to its REST pair name through AssetPairs, asked
// once and again when a symbol is missing.
func (w *Worker) pairFor(ctx context.Context, sym string) (string, error) {
	w.pairsMu.Lock()
	defer w.pairsMu.Unlock()
	if p, ok := w.pairs[sym]; ok {
		return p, nil
	}
	if err := w.limiter.Wait(ctx); err != nil {
		return "", err
	}
	pairs, err := w.deps.REST.AssetPairs(ctx)
	if err != nil {
		return "", fmt.Errorf("ingest: asset pairs: %w", err)
	}
	w.pairs = make(map[string]string, len(pairs))
	for _, p := range pairs {
		w.pairs[p.Symbol] = p.Key
	}
	if p, ok := w.pairs[sym]; ok {
		return p, nil
	}
	return "", fmt.Errorf("ingest: %s is not a Kraken pair", sym)
}
