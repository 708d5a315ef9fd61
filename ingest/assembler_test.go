package ingest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"cryptostream/ingest/krakenrest"
	"cryptostream/streams"
)

var t0 = time.Date(2026, 10, 6, 18, 0, 0, 0, time.UTC)

// wc is a WebSocket candle of BTC/USD 1m starting minute m after t0.
func wc(m int, close float64, trades int64) streams.Candle {
	return streams.Candle{Schema: streams.Schema{V: 1}, Symbol: "BTC/USD", Interval: streams.Interval1m,
		Start: t0.Add(time.Duration(m) * time.Minute), Open: 100, High: max(100, close), Low: min(100, close),
		Close: close, Volume: float64(trades), Trades: trades, Quality: streams.QualityLive}
}

func rest(m int, close float64, trades int64) streams.Candle {
	c := wc(m, close, trades)
	c.Quality = streams.QualityBackfilled
	if trades == 0 {
		c.Open, c.High, c.Low = close, close, close
	}
	return c
}

// brief renders final candles as "m:quality:close".
func brief(cs []streams.Candle) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%d:%s:%v", int(c.Start.Sub(t0)/time.Minute), c.Quality, c.Close)
	}
	return strings.Join(parts, " ")
}

func mustUpdate(t *testing.T, a *Assembler, c streams.Candle) Emit {
	t.Helper()
	e, err := a.Update(c)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestAssemblerLaterBeginFinalisesAndFills(t *testing.T) {
	a := NewAssembler(streams.Interval1m, 5*time.Second, 3)
	a.Seed(rest(0, 100, 3))
	if e := a.Begin("BTC/USD"); !e.Heal {
		t.Fatal("Begin did not ask for a heal")
	}
	if e := a.Healed("BTC/USD", nil); len(e.Final) != 0 || e.Heal {
		t.Fatalf("empty heal emitted %+v", e)
	}
	// Minute 1 runs: updates replace, nothing is final.
	for _, c := range []streams.Candle{wc(1, 101, 1), wc(1, 102, 2), wc(1, 103, 3)} {
		if e := mustUpdate(t, a, c); !e.Tick || len(e.Final) != 0 {
			t.Fatalf("update %v: %+v", c.Close, e)
		}
	}
	// Minute 4 trades: minute 1 is final, 2 and 3 had no trades.
	e := mustUpdate(t, a, wc(4, 99, 1))
	if got, want := brief(e.Final), "1:live:103 2:filled:103 3:filled:103"; got != want {
		t.Fatalf("finals %q, want %q", got, want)
	}
	for _, c := range e.Final[1:] {
		if c.Open != 103 || c.High != 103 || c.Low != 103 || c.Volume != 0 || c.Trades != 0 || c.Validate() != nil {
			t.Errorf("filled candle %+v", c)
		}
	}
	// A late update for a final candle is ignored.
	if e := mustUpdate(t, a, wc(1, 150, 9)); e.Tick || len(e.Final) != 0 {
		t.Fatalf("stale update accepted: %+v", e)
	}
	if _, err := a.Update(wc(5, 1, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update(streams.Candle{Symbol: "ETH/USD", Interval: streams.Interval1m, Start: t0}); ReasonOf(err) != ReasonUnknownSymbol {
		t.Errorf("unsubscribed symbol: %v", err)
	}
}

// TestAssemblerTimer drives the timer path with explicit clocks: a candle
// is final at end+grace by the server's clock, and only once a frame has
// arrived after its end.
func TestAssemblerTimer(t *testing.T) {
	a := NewAssembler(streams.Interval1m, 5*time.Second, 3)
	a.Begin("BTC/USD")
	a.Healed("BTC/USD", nil)
	// The server's clock runs 10 minutes ahead of ours (krakensim shifted).
	offset := 10 * time.Minute
	local := func(server time.Time) time.Time { return server.Add(-offset) }
	sent := t0.Add(20 * time.Second)
	a.Frame(local(sent), sent)
	mustUpdate(t, a, wc(0, 101, 1))
	end := t0.Add(time.Minute)
	if got := a.Expire(local(end.Add(4 * time.Second))); len(got) != 0 {
		t.Fatalf("final before grace: %+v", got)
	}
	// Grace passed, but the last frame predates the end: not proven.
	if got := a.Expire(local(end.Add(30 * time.Second))); len(got) != 0 {
		t.Fatalf("final without a frame after the end: %+v", got)
	}
	a.Frame(local(end.Add(time.Second)), time.Time{}) // a heartbeat
	got := a.Expire(local(end.Add(6 * time.Second)))
	if len(got) != 1 || brief(got[0].Final) != "0:live:101" {
		t.Fatalf("timer finals %+v", got)
	}
	if again := a.Expire(local(end.Add(time.Hour))); len(again) != 0 {
		t.Fatalf("finalised twice: %+v", again)
	}
	// The next trade comes two minutes later: the minute between is filled.
	e := mustUpdate(t, a, wc(3, 104, 1))
	if got, want := brief(e.Final), "1:filled:101 2:filled:101"; got != want {
		t.Fatalf("finals %q, want %q", got, want)
	}
	e = mustUpdate(t, a, wc(4, 105, 1))
	if got, want := brief(e.Final), "3:live:104"; got != want {
		t.Fatalf("finals %q, want %q", got, want)
	}
}

// TestAssemblerHealOrdering: WebSocket candles that become final before the
// heal has caught up wait, and come out after the healed ones, in order.
func TestAssemblerHealOrdering(t *testing.T) {
	a := NewAssembler(streams.Interval1m, 5*time.Second, 5)
	a.Seed(rest(0, 100, 1))
	a.Begin("BTC/USD")
	// The snapshot and updates arrive before REST answers.
	for _, c := range []streams.Candle{wc(3, 103, 1), wc(5, 105, 1), wc(6, 106, 1)} {
		if e := mustUpdate(t, a, c); len(e.Final) != 0 {
			t.Fatalf("published before the heal: %+v", e)
		}
	}
	// REST has committed up to minute 4 (filler at 2, row 3 and 4).
	e := a.Healed("BTC/USD", []streams.Candle{rest(1, 101, 1), rest(2, 101, 0), rest(3, 103, 1), rest(4, 103, 0)})
	if got, want := brief(e.Final), "1:backfilled:101 2:filled:101 3:backfilled:103 4:filled:103 5:live:105"; got != want {
		t.Fatalf("finals %q, want %q", got, want)
	}
	if e.Heal || e.Gap {
		t.Fatalf("heal %v gap %v", e.Heal, e.Gap)
	}
	if e := mustUpdate(t, a, wc(7, 107, 1)); brief(e.Final) != "6:live:106" {
		t.Fatalf("after anchoring: %q", brief(e.Final))
	}
}

// TestAssemblerHealLagging: REST has not committed up to the stream yet, so
// the heal is asked again, and after the last attempt the gap stays open
// rather than be invented.
func TestAssemblerHealLagging(t *testing.T) {
	a := NewAssembler(streams.Interval1m, 5*time.Second, 2)
	a.Seed(rest(0, 100, 1))
	a.Begin("BTC/USD")
	mustUpdate(t, a, wc(5, 105, 1))
	mustUpdate(t, a, wc(6, 106, 1))
	e := a.Healed("BTC/USD", []streams.Candle{rest(1, 101, 1)})
	if brief(e.Final) != "1:backfilled:101" || !e.Heal {
		t.Fatalf("first heal: %q heal=%v", brief(e.Final), e.Heal)
	}
	e = a.Healed("BTC/USD", []streams.Candle{rest(2, 102, 1)})
	if got, want := brief(e.Final), "2:backfilled:102 5:live:105"; got != want || !e.Gap || e.Heal {
		t.Fatalf("second heal: %q (want %q) gap=%v heal=%v", got, want, e.Gap, e.Heal)
	}
}

// TestAssemblerDropDiscardsRunning: a lost connection may have cut a
// candle short; it is not published, and REST supplies it later.
func TestAssemblerDropDiscardsRunning(t *testing.T) {
	a := NewAssembler(streams.Interval1m, 5*time.Second, 3)
	a.Seed(rest(0, 100, 1))
	a.Begin("BTC/USD")
	a.Healed("BTC/USD", nil)
	mustUpdate(t, a, wc(1, 101, 1))
	mustUpdate(t, a, wc(2, 102, 1)) // minute 1 final
	a.DropAll()
	if _, err := a.Update(wc(2, 102, 5)); ReasonOf(err) != ReasonUnknownSymbol {
		t.Fatalf("update after drop: %v", err)
	}
	a.Begin("BTC/USD")
	if got := a.SinceForHeal("BTC/USD"); !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("heal since %s", got)
	}
	mustUpdate(t, a, wc(4, 104, 1))
	e := a.Healed("BTC/USD", []streams.Candle{rest(2, 102, 7), rest(3, 103, 2)})
	if got, want := brief(e.Final), "2:backfilled:102 3:backfilled:103"; got != want {
		t.Fatalf("finals %q, want %q", got, want)
	}
}

// TestRegularizeUnknownGap: a gap between two REST answers that do not
// touch is not filled; a filler row after a known close is rebuilt.
func TestRegularize(t *testing.T) {
	prev := rest(0, 100, 1)
	got := Regularize(&prev, []streams.Candle{rest(1, 55, 0), rest(3, 103, 1), rest(3, 999, 1), rest(2, 1, 1)})
	if b := brief(got); b != "1:filled:100 2:filled:100 3:backfilled:103" {
		t.Fatalf("got %q", b)
	}
	if b := brief(Regularize(nil, []streams.Candle{rest(1, 55, 0), rest(2, 102, 1)})); b != "2:backfilled:102" {
		t.Fatalf("leading filler kept: %q", b)
	}
}

// TestHealNeverFillsARefusedRow (issue 11 item 10, the live path): a REST
// row that fails validation is refused and counted, and the gap it leaves
// is not filled with a flat candle.
func TestHealNeverFillsARefusedRow(t *testing.T) {
	row := func(m int, high, low float64) krakenrest.Row {
		return krakenrest.Row{Start: t0.Add(time.Duration(m) * time.Minute), Open: 100, High: high, Low: low, Close: 100, VWAP: 100, Volume: 1, Trades: 1}
	}
	s, bad := RESTSeries("BTC/USD", streams.Interval1m, []krakenrest.Row{row(1, 101, 99), row(2, 99, 101), row(4, 101, 99)},
		streams.QualityBackfilled, t0.Add(time.Hour))
	if len(bad) != 1 || len(s.Candles) != 2 || !s.Broken[t0.Add(4*time.Minute)] {
		t.Fatalf("series %+v, bad %v", s, bad)
	}
	_, future := RESTSeries("BTC/USD", streams.Interval1m, []krakenrest.Row{row(90, 101, 99)}, streams.QualityBackfilled, t0)
	if len(future) != 1 || !errors.Is(future[0], streams.ErrFutureCandle) {
		t.Fatalf("a row an hour and a half ahead: %v", future)
	}
	a := NewAssembler(streams.Interval1m, 5*time.Second, 5)
	a.Seed(rest(0, 100, 1))
	a.Begin("BTC/USD")
	e := a.HealedSeries("BTC/USD", s)
	if got, want := brief(e.Final), "1:backfilled:100 4:backfilled:100"; got != want {
		t.Fatalf("finals %q, want %q (no fill where the refused row was)", got, want)
	}
}
