package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/pgtest"
	"cryptostream/readmodel"
	"cryptostream/store"
	"cryptostream/streams"
)

// candleRow is a stored candle with the sequence it came from.
type candleRow struct {
	Symbol   string
	Interval int32
	Start    time.Time
	Open     float64
	High     float64
	Low      float64
	Close    float64
	VWAP     float64
	Volume   float64
	Trades   int64
	Quality  string
	Seq      int64
}

func snapshot(t testing.TB, db *pgxpool.Pool) []candleRow {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT symbol, interval, start, open, high, low, close, vwap, volume, trades, quality, stream_seq
		FROM candles ORDER BY symbol, interval, start`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []candleRow
	for rows.Next() {
		var r candleRow
		if err := rows.Scan(&r.Symbol, &r.Interval, &r.Start, &r.Open, &r.High, &r.Low, &r.Close, &r.VWAP, &r.Volume, &r.Trades, &r.Quality, &r.Seq); err != nil {
			t.Fatal(err)
		}
		r.Start = r.Start.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// streamRows reads MARKET back with an ordered consumer: what the
// projection must equal.
func streamRows(t testing.TB, js jetstream.JetStream) []candleRow {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, streams.StreamMarket, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []candleRow
	for n := info.NumPending; uint64(len(out)) < n; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			c, err := streams.Decode[streams.Candle](m.Data())
			if err != nil {
				t.Fatal(err)
			}
			md, _ := m.Metadata()
			out = append(out, candleRow{c.Symbol, int32(c.Interval), c.Start.UTC(), c.Open, c.High, c.Low, c.Close, c.VWAP, c.Volume, c.Trades, string(c.Quality), int64(md.Sequence.Stream)})
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// publishAll publishes with streams.Publish from a few goroutines: the
// order across goroutines does not matter to an idempotent sink.
func publishAll(t testing.TB, js jetstream.JetStream, candles []streams.Candle) {
	t.Helper()
	const workers = 8
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := w; i < len(candles); i += workers {
				if _, err := streams.Publish(context.Background(), js, &candles[i]); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func realFile(t testing.TB) []streams.Candle {
	t.Helper()
	cs := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 0)
	if len(cs) != 29881 {
		t.Fatalf("%s has %d rows, want 29,881", datatest.KrakenBTCUSD1m, len(cs))
	}
	return cs
}

// TestProjectionOfRealFile: the projection equals the stream row for row,
// and replaying the whole stream twice more changes nothing.
func TestProjectionOfRealFile(t *testing.T) {
	js := bus(t)
	db := testDB(t, pgtest.AdminURL())
	publishAll(t, js, realFile(t))
	want := streamRows(t, js)
	if len(want) != 29881 {
		t.Fatalf("stream holds %d candles", len(want))
	}
	sortRows(want)

	project := func() {
		sink, err := store.New(store.Config{}, store.Deps{Bus: js, DB: db, Metrics: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		if err := sink.RunUntilSynced(ctx, 50*time.Millisecond, nil); err != nil {
			t.Fatal(err)
		}
	}
	project()
	first := snapshot(t, db)
	if !reflect.DeepEqual(first, want) {
		t.Fatalf("projection differs from the stream: %d rows vs %d; first difference %s", len(first), len(want), firstDiff(first, want))
	}
	for replay := 1; replay <= 2; replay++ {
		if err := store.Rewind(t.Context(), js); err != nil {
			t.Fatal(err)
		}
		project()
		if got := snapshot(t, db); !reflect.DeepEqual(got, first) {
			t.Fatalf("replay %d changed the projection: %d rows, first difference %s", replay, len(got), firstDiff(got, first))
		}
	}
}

func sortRows(rs []candleRow) {
	// Only one series here: order by start.
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].Start.Before(rs[j-1].Start); j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

func firstDiff(a, b []candleRow) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("row %d: %+v vs %+v", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("in length: %d vs %d", len(a), len(b))
}

// TestMalformedEventRejected: a malformed and an invalid candle are
// terminated and counted, and the sink goes on with the next one.
func TestMalformedEventRejected(t *testing.T) {
	js := bus(t)
	db := testDB(t, pgtest.AdminURL())
	reg := prometheus.NewRegistry()
	sink := runSink(t, js, db, reg)

	good := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3)
	bad := good[1]
	garbage := nats.NewMsg(streams.CandleSubject(streams.Interval1m, "BTC/USD"))
	garbage.Data = []byte(`{"v":1,"symbol":"BTC/USD","interval":`)
	if _, err := js.PublishMsg(t.Context(), garbage); err != nil {
		t.Fatal(err)
	}
	// Valid JSON, invalid candle: high below low, written around Encode.
	invalid := nats.NewMsg(streams.CandleSubject(streams.Interval1m, "BTC/USD"))
	invalid.Data = []byte(`{"v":1,"symbol":"BTC/USD","interval":"1m","start":"` + bad.Start.Format(time.RFC3339) +
		`","open":10,"high":5,"low":20,"close":10,"vwap":0,"volume":1,"trades":1,"quality":"imported"}`)
	if _, err := js.PublishMsg(t.Context(), invalid); err != nil {
		t.Fatal(err)
	}
	publishAll(t, js, good)
	waitSynced(t, sink)

	if got := testutil.ToFloat64(counter(t, reg, "cryptostream_sink_rejected_total")); got != 2 {
		t.Fatalf("rejected = %v, want 2", got)
	}
	if got := snapshot(t, db); len(got) != 3 || got[1].Open != bad.Open {
		t.Fatalf("stored %+v, want the 3 good candles", got)
	}
	// Still running: a later candle is projected too.
	next := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 4)[3]
	publishAll(t, js, []streams.Candle{next})
	waitSynced(t, sink)
	if got := snapshot(t, db); len(got) != 4 {
		t.Fatalf("after a rejection the sink stored %d of 4 candles", len(got))
	}
}

// counter finds a metric family in reg and returns it as a collector sum.
func counter(t testing.TB, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return collectorFunc{reg: reg, name: name}
}

type collectorFunc struct {
	reg  *prometheus.Registry
	name string
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) {}

func (c collectorFunc) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := c.reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != c.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(c.name, "sum", nil, nil), prometheus.UntypedValue, sum)
}

// TestDatabaseOutage stops a private PostgreSQL in the middle of a load and
// starts it again: the sink pauses, reports not ready, acks nothing it did
// not store, and ends with every row present once.
func TestDatabaseOutage(t *testing.T) {
	pg := pgtest.PrivateServer(t)
	js := bus(t)
	db := testDB(t, pg.URL())
	reg := prometheus.NewRegistry()
	sink := runSink(t, js, db, reg)

	candles := realFile(t)
	half := len(candles) / 3
	publishAll(t, js, candles[:half])
	natstest.WaitFor(t, 2*time.Minute, "some candles stored", func() bool {
		var n int
		return db.QueryRow(context.Background(), "SELECT count(*) FROM candles").Scan(&n) == nil && n > 0
	})
	pg.Stop(t)
	// The load goes on while the database is down.
	done := make(chan struct{})
	go func() {
		defer close(done)
		publishAll(t, js, candles[half:])
	}()
	natstest.WaitFor(t, time.Minute, "sink reports the outage", func() bool {
		return errors.Is(sink.Ready(context.Background()), store.ErrDatabaseDown)
	})
	if up := testutil.ToFloat64(counter(t, reg, "cryptostream_sink_database_up")); up != 0 {
		t.Fatalf("database_up = %v during the outage", up)
	}
	<-done
	pg.Start(t)
	waitSynced(t, sink)
	if err := sink.Ready(context.Background()); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	var n, distinct int
	if err := db.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT start) FROM candles").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != len(candles) || distinct != len(candles) {
		t.Fatalf("after the outage: %d rows, %d distinct, want %d", n, distinct, len(candles))
	}
	want := streamRows(t, js)
	sortRows(want)
	if got := snapshot(t, db); !reflect.DeepEqual(got, want) {
		t.Fatalf("projection differs from the stream after the outage: %s", firstDiff(got, want))
	}
}

// TestRowRefusedByDatabase: an alert that validates but that PostgreSQL
// cannot store (a NUL byte in a text column) is rejected on its own; the
// rest of its batch is stored and the sink goes on.
func TestRowRefusedByDatabase(t *testing.T) {
	js := bus(t)
	db := testDB(t, pgtest.AdminURL())
	reg := prometheus.NewRegistry()
	at := time.Date(2023, 3, 1, 5, 0, 0, 0, time.UTC)
	alerts := []streams.Alert{
		{ID: "a-1", RuleID: "r-1", Symbol: "BTC/USD", Interval: streams.Interval1m, Kind: "above", Message: "fine", Value: 2, Threshold: 1, At: at},
		{ID: "a-2", RuleID: "r-2", Symbol: "BTC/USD", Interval: streams.Interval1m, Kind: "above", Message: "nul\x00byte", Value: 2, Threshold: 1, At: at},
		{ID: "a-3", RuleID: "r-3", Symbol: "BTC/USD", Interval: streams.Interval1m, Kind: "below", Message: "fine too", Value: 0, Threshold: 1, At: at},
	}
	for i := range alerts {
		if _, err := streams.Publish(t.Context(), js, &alerts[i]); err != nil {
			t.Fatal(err)
		}
	}
	sink := runSink(t, js, db, reg)
	waitSynced(t, sink)
	var ids []string
	rows, err := db.Query(t.Context(), "SELECT id FROM alerts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if !reflect.DeepEqual(ids, []string{"a-1", "a-3"}) {
		t.Fatalf("stored alerts %v, want [a-1 a-3]", ids)
	}
	got, err := store.NewReader(db).Alerts(t.Context(), readmodel.AlertQuery{Symbol: "BTC/USD"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i].Trace = nil
	}
	if want := []streams.Alert{alerts[0], alerts[2]}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Alerts = %+v\nwant %+v", got, want)
	}
	if got := testutil.ToFloat64(counter(t, reg, "cryptostream_sink_rejected_total")); got != 1 {
		t.Fatalf("rejected = %v, want 1", got)
	}
	if err := sink.Ready(t.Context()); err != nil {
		t.Fatalf("a refused row paused the sink: %v", err)
	}
}
