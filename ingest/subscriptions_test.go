package ingest

import (
	"slices"
	"testing"
	"time"
)

// TestSubTable (issue 9, the split of the worker): the subscription table's
// timing on an explicit clock: paced, sorted, bounded batches; a
// rate-limited request queued again after four paces; a refused pair tried
// again after a minute; a silent acked subscription queued again, and data
// keeping it alive; removal says whether to unsubscribe.
func TestSubTable(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	pace, silent := 250*time.Millisecond, 90*time.Second
	tb := newSubTable(2, pace, silent)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	state := func(sym string) subState { st, _ := tb.State(sym); return st }

	added, removed := tb.Reconcile([]string{"SOL/USD", "BTC/USD", "ETH/USD"}, at(0))
	if len(added) != 3 || removed != nil {
		t.Fatalf("added %v removed %v", added, removed)
	}
	if b := tb.NextBatch(at(0)); !slices.Equal(b, []string{"BTC/USD", "ETH/USD"}) {
		t.Fatalf("first batch %v, want the first two by name", b)
	}
	if b := tb.NextBatch(at(pace - time.Millisecond)); b != nil {
		t.Fatalf("batch %v before the pace elapsed", b)
	}
	if b := tb.NextBatch(at(pace)); !slices.Equal(b, []string{"SOL/USD"}) {
		t.Fatalf("second batch %v", b)
	}
	if b := tb.NextBatch(at(2 * pace)); b != nil {
		t.Fatalf("batch %v with everything pending", b)
	}

	// BTC acked; ETH refused by name; SOL's request rate-limited without a
	// symbol (every pending one is hit).
	if !tb.Acked("BTC/USD", at(time.Second)) || tb.Acked("BTC/USD", at(time.Second)) {
		t.Fatal("the first ack must start the series, a repeated one nothing")
	}
	if got := tb.Refused("ETH/USD", false, at(time.Second)); !slices.Equal(got, []string{"ETH/USD"}) || state("ETH/USD") != subFailed {
		t.Fatalf("refused %v, ETH state %v", got, state("ETH/USD"))
	}
	if got := tb.Refused("", true, at(time.Second)); !slices.Equal(got, []string{"SOL/USD"}) || state("SOL/USD") != subQueued {
		t.Fatalf("rate limited %v, SOL state %v", got, state("SOL/USD"))
	}
	if b := tb.NextBatch(at(time.Second + 4*pace - time.Millisecond)); b != nil {
		t.Fatalf("batch %v before the rate-limit back-off", b)
	}
	if b := tb.NextBatch(at(time.Second + 4*pace)); !slices.Equal(b, []string{"SOL/USD"}) {
		t.Fatalf("after the back-off %v, want SOL only (ETH waits a minute)", b)
	}
	if b := tb.NextBatch(at(time.Second + time.Minute)); !slices.Equal(b, []string{"ETH/USD"}) {
		t.Fatalf("after a minute %v, want ETH", b)
	}
	tb.Acked("SOL/USD", at(2*time.Second))
	if n := tb.Counts(); n != [4]int{0, 1, 2, 0} {
		t.Fatalf("counts %v, want 1 pending and 2 acked", n)
	}

	// BTC delivers data, SOL stays silent past the bound.
	tb.Data("BTC/USD", at(80*time.Second))
	if s := tb.Silent(at(time.Second + silent)); len(s) != 0 {
		t.Fatalf("silent %v at the bound", s)
	}
	s := tb.Silent(at(2*time.Second + silent + time.Millisecond))
	if len(s) != 1 || s["SOL/USD"] <= silent || state("SOL/USD") != subQueued {
		t.Fatalf("silent %v (SOL %v), want SOL queued again", s, state("SOL/USD"))
	}
	if s := tb.Silent(at(80*time.Second + silent + time.Millisecond)); len(s) != 1 || s["BTC/USD"] == 0 {
		t.Fatalf("silent %v, want BTC once its data is older than the bound", s)
	}

	tb.Acked("ETH/USD", at(3*time.Minute))
	_, removed = tb.Reconcile([]string{"BTC/USD"}, at(4*time.Minute))
	if len(removed) != 2 || !removed["ETH/USD"] || removed["SOL/USD"] {
		t.Fatalf("removed %v, want ETH (acked: unsubscribe) and SOL (queued: nothing to undo)", removed)
	}
	if tb.Len() != 1 {
		t.Fatalf("%d symbols left", tb.Len())
	}
}
