package krakensim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"cryptostream/ingest/krakenrest"
	"cryptostream/ingest/krakensim"
	"cryptostream/ingest/ohlcfile"
	"cryptostream/streams"
)

var base = time.Date(2023, 3, 1, 0, 0, 0, 0, time.UTC)

// feed has 800 one-minute rows with every tenth minute empty.
func feed() krakensim.Feed {
	var rows []ohlcfile.Row
	for m := 0; m < 800; m++ {
		if m%10 == 5 {
			continue
		}
		p := 100 + float64(m)
		rows = append(rows, ohlcfile.Row{Start: base.Add(time.Duration(m) * time.Minute), Open: p, High: p + 2, Low: p - 1, Close: p + 1, Volume: 2, Trades: 8})
	}
	return krakensim.Feed{Symbol: "BTC/USD", PairKey: "XXBTZUSD", Altname: "XBTUSD", WSName: "XBT/USD", Base: "XXBT", Quote: "ZUSD", Interval: streams.Interval1m, Rows: rows}
}

func start(t *testing.T, cfg krakensim.Config) (*krakensim.Server, string) {
	t.Helper()
	if cfg.Feeds == nil {
		cfg.Feeds = []krakensim.Feed{feed()}
	}
	sim, err := krakensim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { sim.Run(ctx) })
	t.Cleanup(func() { cancel(); hs.CloseClientConnections(); hs.Close(); wg.Wait() })
	return sim, hs.URL
}

type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, url string) *client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/v2", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &client{t, ws}
}

func (c *client) send(s string) {
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) next() map[string]any {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("%s: %v", b, err)
	}
	return m
}

// until reads frames until match returns true.
func (c *client) until(what string, match func(map[string]any) bool) map[string]any {
	c.t.Helper()
	for i := 0; i < 1000; i++ {
		if m := c.next(); match(m) {
			return m
		}
	}
	c.t.Fatalf("no %s", what)
	return nil
}

func TestWebSocketChecklist(t *testing.T) {
	_, url := start(t, krakensim.Config{Speed: 600, Heartbeat: 50 * time.Millisecond})
	c := dial(t, url)
	st := c.next()
	if st["channel"] != "status" {
		t.Fatalf("first frame %v", st)
	}
	c.send(`{"method":"ping","req_id":7}`)
	if m := c.until("pong", func(m map[string]any) bool { return m["method"] == "pong" }); m["req_id"] != 7.0 || m["time_in"] == nil {
		t.Errorf("pong %v", m)
	}
	c.send(`{"method":"ping","params":{},"req_id":8}`)
	if m := c.next(); m["success"] != false || !strings.Contains(fmt.Sprint(m["error"]), "Unsupported field") {
		t.Errorf("ping with params: %v", m)
	}
	c.send(`{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD","XBT/USD"],"interval":1},"req_id":3}`)
	ack := c.next()
	if ack["success"] != true || ack["req_id"] != 3.0 {
		t.Fatalf("ack %v", ack)
	}
	if r := ack["result"].(map[string]any); r["symbol"] != "BTC/USD" || r["warnings"] == nil {
		t.Errorf("ack result %v", r)
	}
	snap := c.next()
	if snap["type"] != "snapshot" {
		t.Fatalf("no snapshot after the ack: %v", snap)
	}
	rows := snap["data"].([]any)
	for i := 1; i < len(rows); i++ {
		if rows[i].(map[string]any)["interval_begin"].(string) <= rows[i-1].(map[string]any)["interval_begin"].(string) {
			t.Errorf("snapshot not ascending")
		}
	}
	if b := rows[0].(map[string]any)["interval_begin"].(string); !strings.HasSuffix(b, ":00.000000000Z") {
		t.Errorf("interval_begin %q lacks 9 fractional digits", b)
	}
	fail := c.until("failure ack", func(m map[string]any) bool { return m["success"] == false })
	if fail["symbol"] != "XBT/USD" || fail["error"] != "Currency pair not supported XBT/USD" {
		t.Errorf("failure ack %v", fail)
	}
	c.send(`{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"interval":5}}`)
	if m := c.until("second-interval error", func(m map[string]any) bool { return m["method"] == "subscribe" }); m["error"] != "Already subscribed to one ohlc interval on this symbol" {
		t.Errorf("second interval: %v", m)
	}
	c.send(`{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"interval":1}}`)
	if m := c.until("duplicate error", func(m map[string]any) bool { return m["method"] == "subscribe" }); m["error"] != "Already subscribed" {
		t.Errorf("duplicate: %v", m)
	}
	c.send(`{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"interval":7}}`)
	if m := c.until("bad interval", func(m map[string]any) bool { return m["method"] == "subscribe" }); m["success"] != false {
		t.Errorf("interval 7 accepted: %v", m)
	}
	// Updates carry the running candle; a new begin means the old closed.
	upd := c.until("update", func(m map[string]any) bool { return m["type"] == "update" })
	d := upd["data"].([]any)[0].(map[string]any)
	if d["symbol"] != "BTC/USD" || d["interval"] != 1.0 {
		t.Errorf("update %v", d)
	}
	c.send(`{"method":"unsubscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"interval":1}}`)
	c.until("unsubscribe ack", func(m map[string]any) bool { return m["method"] == "unsubscribe" && m["success"] == true })
}

func TestHeartbeatAndIdleClose(t *testing.T) {
	sim, url := start(t, krakensim.Config{Speed: 1, Heartbeat: 20 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	c := dial(t, url)
	c.next() // status
	c.send(`{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"]}}`)
	c.until("heartbeat", func(m map[string]any) bool { return m["channel"] == "heartbeat" })
	c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			break // closed for idleness
		}
	}
	if sim.Connections() != 1 {
		t.Errorf("connections %d", sim.Connections())
	}
}

func TestFaults(t *testing.T) {
	sim, url := start(t, krakensim.Config{Speed: 600, Heartbeat: 20 * time.Millisecond})
	sim.RateLimitNext(1)
	c := dial(t, url)
	c.next()
	c.send(`{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"]}}`)
	if m := c.next(); m["error"] != "Exceeded msg rate" || m["success"] != false {
		t.Fatalf("rate limit: %v", m)
	}
	sim.SilenceNext(1)
	c.send(`{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"]}}`)
	if m := c.next(); m["success"] != true {
		t.Fatalf("silent sub not acked: %v", m)
	}
	for range 5 {
		if m := c.next(); m["channel"] != "heartbeat" {
			t.Fatalf("silent subscription sent %v", m)
		}
	}
	c2 := dial(t, url)
	c2.next()
	c2.send(`{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"snapshot":false}}`)
	c2.next()
	sim.MalformNext(1)
	c2.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var sawMalformed bool
	for !sawMalformed {
		_, b, err := c2.ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		sawMalformed = !json.Valid(b)
	}
	sim.DropAfter(2)
	c2.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := c2.ws.ReadMessage(); err != nil {
			break
		}
	}
	sim.SetSystemStatus("maintenance")
	if m := c.until("maintenance status", func(m map[string]any) bool { return m["channel"] == "status" }); !strings.Contains(fmt.Sprint(m["data"]), "maintenance") {
		t.Errorf("status %v", m)
	}
}

func TestREST(t *testing.T) {
	sim, url := start(t, krakensim.Config{Speed: 1})
	rc := &krakenrest.Client{BaseURL: url}
	ctx := t.Context()
	res, err := rc.OHLC(ctx, "XBTUSD", streams.Interval1m, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if res.PairKey != "XXBTZUSD" || len(res.Rows) != 720 {
		t.Fatalf("key %s rows %d", res.PairKey, len(res.Rows))
	}
	last := res.Rows[len(res.Rows)-1]
	if !last.InProgress || !res.Last.Equal(last.Start.Add(-time.Minute)) {
		t.Errorf("last %s, final row %s", res.Last, last.Start)
	}
	fillers := 0
	for i, r := range res.Rows {
		if i > 0 && !r.Start.Equal(res.Rows[i-1].Start.Add(time.Minute)) {
			t.Fatalf("rows not contiguous at %s", r.Start)
		}
		if r.Filler() && !r.InProgress {
			fillers++
			if prev := res.Rows[i-1]; r.Open != prev.Close || r.High != prev.Close || r.VWAP != 0 {
				t.Errorf("filler %+v after %+v", r, prev)
			}
		}
		if !r.Filler() && !r.InProgress {
			m := int(r.Start.Sub(base) / time.Minute)
			if want := 100 + float64(m); r.Open != want || r.Close != want+1 || r.Volume != 2 || r.Trades != 8 {
				t.Errorf("row %s = %+v", r.Start, r)
			}
		}
	}
	if fillers < 70 {
		t.Errorf("%d filler rows, want one every ten minutes", fillers)
	}
	since := res.Rows[700].Start
	res2, err := rc.OHLC(ctx, "XXBTZUSD", streams.Interval1m, since)
	if err != nil {
		t.Fatal(err)
	}
	if !res2.Rows[0].Start.Equal(since.Add(time.Minute)) {
		t.Errorf("since not exclusive: first row %s after since %s", res2.Rows[0].Start, since)
	}
	res5, err := rc.OHLC(ctx, "XBTUSD", streams.Interval5m, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res5.Rows) == 0 || res5.Rows[0].Start.Minute()%5 != 0 {
		t.Errorf("5m rows %v", res5.Rows[:1])
	}
	if _, err := rc.OHLC(ctx, "NOPE", streams.Interval1m, time.Time{}); err == nil || !strings.Contains(err.Error(), "Unknown asset pair") {
		t.Errorf("unknown pair: %v", err)
	}
	sim.RESTRateLimitNext(1)
	if _, err := rc.OHLC(ctx, "XBTUSD", streams.Interval1m, time.Time{}); err == nil {
		t.Error("throttle not injected")
	}
	pairs, err := rc.AssetPairs(ctx)
	if err != nil || len(pairs) != 1 || pairs[0].WSName != "XBT/USD" || pairs[0].Symbol != "BTC/USD" {
		t.Errorf("pairs %+v %v", pairs, err)
	}
	tk, err := rc.Ticker(ctx, "XBTUSD")
	if err != nil || tk.Last <= 0 {
		t.Errorf("ticker %+v %v", tk, err)
	}
}

// TestShiftNeverAhead (issue 11 items 9 and 15): shifted to the present
// and replayed faster than real time, the served clock never passes the
// wall clock, so the demo stores no candle from the future (which every
// validation refuses and which would stop a later real ingester).
func TestShiftNeverAhead(t *testing.T) {
	demo, err := krakensim.DemoFeed() // three weeks: the replay outlasts a day
	if err != nil {
		t.Fatal(err)
	}
	for _, speed := range []float64{1, 60, 120, 3000} {
		now := time.Now()
		sim, err := krakensim.New(krakensim.Config{Feeds: []krakensim.Feed{demo}, Speed: speed, Shift: true})
		if err != nil {
			t.Fatal(err)
		}
		replay := time.Duration(float64(sim.End().Sub(sim.Start())) / speed)
		if end := sim.End().Add(sim.Shift()); end.After(now.Add(replay).Add(time.Second)) {
			t.Errorf("speed %v: the replay ends at %s, after the wall clock's %s", speed, end, now.Add(replay))
		}
		if sim.Shift()%(24*time.Hour) != 0 {
			t.Errorf("speed %v: shift %s is not whole days", speed, sim.Shift())
		}
		if speed == 1 {
			if d := sim.Start().Add(sim.Shift()).Sub(now); d < -time.Minute || d > time.Minute {
				t.Errorf("speed 1: the replay starts %s from now, want now", d)
			}
		}
	}
}
