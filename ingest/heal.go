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
	rows   Series
	bad    []error // REST rows refused by validation
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
		rows, bad, err := s.w.heal(ctx, s.iv, sym, since, delay)
		select {
		case s.heals <- healResult{sym, rows, bad, err}:
		case <-ctx.Done():
		}
	}()
}

func (s *session) applyHeal(ctx context.Context, h healResult) error {
	delete(s.healing, h.symbol)
	if h.err != nil {
		s.log.Warn("heal from REST failed", "symbol", h.symbol, "err", h.err)
	}
	for _, err := range h.bad {
		reason := ReasonInvalidCandle
		if errors.Is(err, streams.ErrFutureCandle) {
			reason = ReasonFuture
		}
		s.rejected(reason, fmt.Errorf("REST %s: %w", h.symbol, err))
	}
	e := s.asm.HealedSeries(h.symbol, h.rows)
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
func (w *Worker) heal(ctx context.Context, iv streams.Interval, sym string, since time.Time, delay time.Duration) (Series, []error, error) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Series{}, nil, ctx.Err()
		}
	}
	wait := w.cfg.HealRetry
	for attempt := 0; ; attempt++ {
		rows, bad, err := w.fetch(ctx, iv, sym, since)
		if err == nil || ctx.Err() != nil || attempt >= 4 {
			return rows, bad, err
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
			return Series{}, nil, ctx.Err()
		}
		wait = min(2*wait, time.Minute)
	}
}

func (w *Worker) fetch(ctx context.Context, iv streams.Interval, sym string, since time.Time) (Series, []error, error) {
	pair, err := w.pairFor(ctx, sym)
	if err != nil {
		return Series{}, nil, err
	}
	if err := w.limiter.Wait(ctx); err != nil {
		return Series{}, nil, err
	}
	res, err := w.deps.REST.OHLC(ctx, pair, iv, since)
	if err != nil {
		return Series{}, nil, fmt.Errorf("ingest: heal %s %s: %w", iv, sym, err)
	}
	s, bad := RESTSeries(sym, iv, res.Committed(), streams.QualityBackfilled, w.cfg.Now())
	return s, bad, nil
}

// RESTSeries turns REST rows into candles of one quality. A row that fails
// validation (on the clock now) is refused and returned in bad, and the gap
// it leaves is marked broken, so that no policy fills it with invented
// candles.
func RESTSeries(sym string, iv streams.Interval, rows []krakenrest.Row, q streams.Quality, now time.Time) (s Series, bad []error) {
	s.Candles = make([]streams.Candle, 0, len(rows))
	broken := false
	for _, r := range rows {
		c := streams.Candle{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: sym, Interval: iv, Start: r.Start,
			Open: r.Open, High: r.High, Low: r.Low, Close: r.Close, VWAP: r.VWAP, Volume: r.Volume, Trades: r.Trades, Quality: q}
		probe := c
		if IsFiller(c) {
			// Its prices are rebuilt from the previous close: check the rest.
			c.Quality = streams.QualityFilled
			probe.Open, probe.High, probe.Low, probe.Close, probe.VWAP = 1, 1, 1, 1, 0
		}
		if err := probe.ValidateAt(now); err != nil {
			bad = append(bad, fmt.Errorf("row at %s: %w", r.Start.UTC().Format(time.RFC3339), err))
			broken = true
			continue
		}
		if broken {
			if s.Broken == nil {
				s.Broken = map[time.Time]bool{}
			}
			s.Broken[c.Start] = true
			broken = false
		}
		s.Candles = append(s.Candles, c)
	}
	return s, bad
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
