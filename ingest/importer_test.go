package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/ingest"
	"cryptostream/ingest/krakensim"
	"cryptostream/streams"
)

// stallingPub models the jetstream client's async publish bound: past
// limit unacknowledged messages PublishMsgAsync fails with
// ErrTooManyStalledMsgs, as the real client does after a stall on a busy
// machine. Acks come only when the importer waits for one.
type stallingPub struct {
	mu      sync.Mutex
	limit   int
	pending int
	stored  map[string]bool
	stalls  int
}

type lazyFuture struct {
	p   *stallingPub
	msg *nats.Msg
}

func (f *lazyFuture) Ok() <-chan *jetstream.PubAck {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	f.p.pending--
	id := f.msg.Header.Get(jetstream.MsgIDHeader)
	ack := &jetstream.PubAck{Stream: streams.StreamMarket, Duplicate: f.p.stored[id]}
	f.p.stored[id] = true
	ch := make(chan *jetstream.PubAck, 1)
	ch <- ack
	return ch
}
func (f *lazyFuture) Err() <-chan error { return nil }
func (f *lazyFuture) Msg() *nats.Msg    { return f.msg }

func (p *stallingPub) PublishMsgAsync(msg *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending >= p.limit {
		p.stalls++
		return nil, jetstream.ErrTooManyStalledMsgs
	}
	p.pending++
	return &lazyFuture{p, msg}, nil
}

func (p *stallingPub) PublishMsg(_ context.Context, msg *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := msg.Header.Get(jetstream.MsgIDHeader)
	ack := &jetstream.PubAck{Stream: streams.StreamMarket, Duplicate: p.stored[id]}
	p.stored[id] = true
	return ack, nil
}

func minutes(n int) []streams.Candle {
	start := time.Date(2023, 3, 1, 0, 0, 0, 0, time.UTC)
	out := make([]streams.Candle, n)
	for i := range out {
		p := 100 + float64(i%50)
		out[i] = streams.Candle{Schema: streams.Schema{V: 1}, Symbol: "BTC/USD", Interval: streams.Interval1m,
			Start: start.Add(time.Duration(i) * time.Minute), Open: p, High: p + 1, Low: p - 1, Close: p, Volume: 1, Trades: 1,
			Quality: streams.QualityImported}
	}
	return out
}

// TestImportBelowClientBound (issue 11 item 11): the importer keeps fewer
// publishes pending than the client allows (4,000), so a large import on a
// busy machine never meets "stalled with too many outstanding async
// published messages"; and when a client's bound is lower than the
// importer's, it waits for acks instead of failing.
func TestImportBelowClientBound(t *testing.T) {
	cs := minutes(10000)
	for _, tt := range []struct {
		name       string
		limit, max int
	}{
		{"default bound under the client's 4000", 4000, 0},
		{"client bound below the importer's", 100, 5000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pub := &stallingPub{limit: tt.limit, stored: map[string]bool{}}
			st, err := (&ingest.Importer{Pub: pub, MaxPending: tt.max}).Import(t.Context(), ingest.Series{Candles: cs})
			if err != nil {
				t.Fatalf("import: %v (after %d stalls)", err, pub.stalls)
			}
			if st.Published != len(cs) || len(pub.stored) != len(cs) || st.Duplicates != 0 {
				t.Fatalf("stats %+v, stored %d, want %d once each", st, len(pub.stored), len(cs))
			}
			if tt.max == 0 && pub.stalls != 0 {
				t.Errorf("%d stalls with the default bound", pub.stalls)
			}
		})
	}
}

func csvRows(minutes ...string) string {
	var b strings.Builder
	b.WriteString("timestamp,open,high,low,close,volume,trades\n")
	for _, m := range minutes {
		b.WriteString(m)
		b.WriteByte('\n')
	}
	return b.String()
}

func row(base time.Time, minute int, values string) string {
	return fmt.Sprintf("%d,%s", base.Add(time.Duration(minute)*time.Minute).Unix(), values)
}

// TestImportInventsNothing (issue 11 item 10): a gap is filled only between
// two accepted rows with no rejected row between them and no longer than
// the bound; a mistyped timestamp a year ahead adds one candle, not a year
// of flat ones; and the corrected file then stores the rows that were
// refused and replaces a filled candle an older import had invented.
func TestImportInventsNothing(t *testing.T) {
	h := newHarness(t, krakensim.Config{})
	base := time.Date(2023, 3, 1, 5, 0, 0, 0, time.UTC)
	ok := "100,101,99,100.5,2,3"
	bad := csvRows(row(base, 0, ok), row(base, 1, ok), row(base, 2, "100,101,99,NaN,2,3"), row(base, 3, ok),
		row(base, 5, ok), row(base, 6, "100,99,101,100,2,3"), row(base, 8, ok),
		row(base, 8+365*24*60, ok), row(base, 9, "-100,101,99,100,2,3"), row(base, 11, ok))
	// As an import before this fix did: a flat candle in the rejected
	// minute 9's place... and in minute 2's.
	ctx := t.Context()
	invented := ingest.Filled("BTC/USD", streams.Interval1m, base.Add(2*time.Minute), 100.5)
	msg, err := streams.NewMsg(&invented)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	var rejected []*ingest.BadRowError
	read, err := ingest.ReadFile("bad.csv", strings.NewReader(bad), "BTC/USD", streams.Interval1m, base.Add(time.Hour),
		func(e *ingest.BadRowError) { rejected = append(rejected, e) })
	if err != nil {
		t.Fatal(err)
	}
	var lines []int
	for _, e := range rejected {
		lines = append(lines, e.Line)
	}
	if want := []int{4, 7, 9, 10}; !slices.Equal(lines, want) {
		t.Errorf("rejected lines %v (%v), want %v", lines, rejected, want)
	}
	if rejected[2].Reason != ingest.ReasonRowFuture {
		t.Errorf("the row a year ahead: %v, want %s", rejected[2], ingest.ReasonRowFuture)
	}
	im := &ingest.Importer{Pub: h.js, Stored: ingest.StoredStarts(h.js)}
	st, err := im.Import(ctx, read)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]streams.Quality{}
	for _, c := range h.stored(t, streams.Interval1m, "BTC/USD") {
		got[int(c.Start.Sub(base)/time.Minute)] = c.Quality
	}
	want := map[int]streams.Quality{0: "imported", 1: "imported", 2: "filled", 3: "imported", 4: "filled", 5: "imported", 8: "imported", 11: "imported"}
	if !maps.Equal(got, want) || st.Filled != 1 || len(st.Open) != 3 {
		t.Fatalf("stored %v, stats %+v; want %v, one fill and three open gaps", got, st, want)
	}

	// The year-ahead row, within the clock: its gap is above the bound.
	far := csvRows(row(base, 20, ok), row(base, 20+365*24*60, ok))
	read, err = ingest.ReadFile("far.csv", strings.NewReader(far), "BTC/USD", streams.Interval1m, base.AddDate(2, 0, 0), func(e *ingest.BadRowError) { t.Error(e) })
	if err != nil {
		t.Fatal(err)
	}
	if st, err = im.Import(ctx, read); err != nil || st.Published != 2 || len(st.Open) != 1 || st.Open[0].Reason != ingest.GapTooLong {
		t.Fatalf("far import: %+v, %v; want 2 candles and the gap open", st, err)
	}

	fixed := csvRows(row(base, 0, ok), row(base, 1, ok), row(base, 2, ok), row(base, 3, ok), row(base, 5, ok),
		row(base, 6, ok), row(base, 8, ok), row(base, 9, ok), row(base, 11, ok))
	read, err = ingest.ReadFile("fixed.csv", strings.NewReader(fixed), "BTC/USD", streams.Interval1m, base.Add(time.Hour), func(e *ingest.BadRowError) { t.Error(e) })
	if err != nil {
		t.Fatal(err)
	}
	if st, err = im.Import(ctx, read); err != nil {
		t.Fatal(err)
	}
	// New: 6, 7 (filled), 9, 10 (filled); 2 replaces the invented candle.
	if st.Published != 5 || st.Replaced != 1 || st.Filled != 2 {
		t.Errorf("corrected import: %+v, want 5 published, 1 replaced, 2 filled", st)
	}
	stored, err := ingest.StoredStarts(h.js)(ctx, streams.Interval1m, "BTC/USD")
	if err != nil {
		t.Fatal(err)
	}
	if q := stored[base.Add(2*time.Minute).Unix()]; q != streams.QualityImported {
		t.Errorf("minute 2 is %s after the correction, want imported", q)
	}
	if st, err = im.Import(ctx, read); err != nil || st.Published != 0 {
		t.Errorf("corrected import again: %+v, %v; want nothing published", st, err)
	}
}

// TestImportCadence (issue 11 item 16): a file of 5-minute candles read as
// 1-minute (or the reverse) is refused before anything is stored.
func TestImportCadence(t *testing.T) {
	base := time.Date(2023, 3, 1, 5, 0, 0, 0, time.UTC)
	var five, one []string
	for i := range 300 {
		if i%7 != 3 { // some intervals without trades
			five = append(five, row(base, 5*i, "100,101,99,100.5,2,3"))
			one = append(one, row(base, i, "100,101,99,100.5,2,3"))
		}
	}
	one = append(one, row(base, 1000, "100,101,99,100.5,2,3")+"\n"+fmt.Sprintf("%d,100,101,99,100.5,2,3", base.Add(1001*time.Minute+30*time.Second).Unix()))
	for _, tt := range []struct {
		name string
		rows []string
		iv   streams.Interval
		ok   bool
	}{
		{"5m file as 1m", five, streams.Interval1m, false},
		{"5m file as 5m", five, streams.Interval5m, true},
		{"1m file as 5m", one, streams.Interval5m, false},
		{"1m file as 1m, one row off the grid", one, streams.Interval1m, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ingest.ReadFile("f.csv", strings.NewReader(csvRows(tt.rows...)), "BTC/USD", tt.iv, base.AddDate(1, 0, 0), func(*ingest.BadRowError) {})
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ingest.ErrCadence)) {
				t.Fatalf("ReadFile = %v, want ok=%v", err, tt.ok)
			}
			if tt.name == "5m file as 1m" && !strings.Contains(err.Error(), "--interval 5m") {
				t.Errorf("error %q does not say which interval the file holds", err)
			}
		})
	}
}

// TestImportResumes (issue 11 item 11): an import stopped part-way (here
// cancelled) leaves a prefix stored; importing the same series again
// stores the rest, each candle once.
func TestImportResumes(t *testing.T) {
	h := newHarness(t, krakensim.Config{})
	cs := minutes(20000)
	ctx, cancel := context.WithCancel(t.Context())
	im := &ingest.Importer{Pub: h.js, Stored: ingest.StoredStarts(h.js), Progress: func(n int) {
		if n >= 8192 {
			cancel()
		}
	}}
	if _, err := im.Import(ctx, ingest.Series{Candles: cs}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted import = %v, want context.Canceled", err)
	}
	part := len(h.stored(t, streams.Interval1m, "BTC/USD"))
	if part == 0 || part >= len(cs) {
		t.Fatalf("%d of %d stored after the interruption", part, len(cs))
	}
	im.Progress = nil
	st, err := im.Import(t.Context(), ingest.Series{Candles: cs})
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped < part || st.Published+st.Skipped != len(cs) {
		t.Errorf("resumed import %+v after %d stored", st, part)
	}
	got := h.stored(t, streams.Interval1m, "BTC/USD")
	seen := map[time.Time]bool{}
	for _, c := range got {
		if seen[c.Start] {
			t.Fatalf("%s stored twice", c.Start)
		}
		seen[c.Start] = true
	}
	if len(seen) != len(cs) {
		t.Fatalf("%d candles stored, want %d", len(seen), len(cs))
	}
}
