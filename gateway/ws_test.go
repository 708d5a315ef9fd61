package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/gateway"
	"cryptostream/gateway/auth"
	"cryptostream/gateway/hub"
	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/streams"
)

type wsFrame struct {
	Type     string          `json:"type"`
	Channel  string          `json:"channel"`
	Seq      uint64          `json:"seq"`
	Snapshot bool            `json:"snapshot"`
	Data     json.RawMessage `json:"data"`
	Code     string          `json:"code"`
	From, To uint64
}

type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

func (s *stack) wsURL() string { return "ws" + strings.TrimPrefix(s.url, "http") + "/ws" }

// dialWS connects with the token as the "bearer, <token>" subprotocol pair
// (none when token is empty). smallBuffer shrinks the client's socket
// receive buffer so that a client that stops reading backs up quickly.
func (s *stack) dialWS(token string, smallBuffer bool) (*wsClient, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	if token != "" {
		d.Subprotocols = []string{"bearer", token}
	}
	if smallBuffer {
		// A small receive buffer, so that a client that does not read
		// fills its socket soon, set before connect as loadtest's slow
		// clients do. It was 4 KiB set after connect: the window it
		// opens on reading is below the loopback MSS, so the client
		// sends no window update and the server's kernel sends more
		// only on its zero-window probes, backing off to seconds apart
		// after a long stall; the close frame behind the queued
		// frames then came after the write timeout, and the client
		// saw 1006 (TestWebsocketSlowClientClosed4008 at load).
		d.NetDialContext = (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
			}); err != nil {
				return err
			}
			return serr
		}}).DialContext
	}
	conn, resp, err := d.DialContext(s.t.Context(), s.wsURL(), nil)
	if err != nil {
		return nil, resp, err
	}
	c := &wsClient{t: s.t, conn: conn}
	s.t.Cleanup(func() { _ = conn.Close() })
	return c, resp, nil
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) next() wsFrame {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	var f wsFrame
	if err := c.conn.ReadJSON(&f); err != nil {
		c.t.Fatalf("websocket read: %v", err)
	}
	return f
}

func (c *wsClient) expect(typ, channel string) wsFrame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ || (channel != "" && f.Channel != channel) {
		c.t.Fatalf("got %+v, want %s on %s", f, typ, channel)
	}
	return f
}

// closeCode reads until the server closes and returns the close code.
func (c *wsClient) closeCode() int {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		c.t.Fatalf("read ended without a close frame: %v", err)
	}
}

func candleTrades(t testing.TB, f wsFrame) int64 {
	t.Helper()
	c, err := streams.Decode[streams.Candle](f.Data)
	if err != nil {
		t.Fatalf("event data %s: %v", f.Data, err)
	}
	return c.Trades
}

var tickStart = time.Unix(1677646800, 0).UTC()

func tick(i int) *streams.Tick {
	p := 23500 + float64(i%50)
	return &streams.Tick{Candle: streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: tickStart,
		Open: 23500, High: 23550, Low: 23500, Close: p, Volume: float64(i + 1), Trades: int64(i + 1), Quality: streams.QualityLive},
		ReceivedAt: time.Now().UTC()}
}

// track puts symbols in the assets bucket, as the ingester's admin would,
// and waits for the gateway to see them: the hub refuses channels of
// untracked assets.
func (s *stack) track(symbols ...string) {
	s.t.Helper()
	kv, err := s.js.KeyValue(s.t.Context(), streams.BucketAssets)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, sym := range symbols {
		b, err := json.Marshal(streams.Asset{Symbol: sym, AddedAt: time.Now().UTC()})
		if err != nil {
			s.t.Fatal(err)
		}
		if _, err := kv.Put(s.t.Context(), streams.AssetKey(sym), b); err != nil {
			s.t.Fatal(err)
		}
	}
	// The gateway learns of a put made behind its back from its watch.
	for _, sym := range symbols {
		natstest.WaitFor(s.t, time.Minute, "the gateway's watch to have "+sym, func() bool { return s.gw.Tracks(sym) })
	}
}

// candle i is minute i after tickStart: each has its own msg-id.
func candle(i int) *streams.Candle {
	c := tick(i).Candle
	c.Start = tickStart.Add(time.Duration(i) * time.Minute)
	return &c
}

func publish(t testing.TB, s *stack, e streams.Event) uint64 {
	t.Helper()
	ack, err := streams.Publish(t.Context(), s.js, e)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func tickTrades(t testing.TB, f wsFrame) int64 {
	t.Helper()
	tk, err := streams.Decode[streams.Tick](f.Data)
	if err != nil {
		t.Fatalf("event data %s: %v", f.Data, err)
	}
	return tk.Candle.Trades
}

func TestWebsocketSnapshotLiveUnsubscribe(t *testing.T) {
	// The client reads only after the publishing: the queue must hold it all.
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) { c.Hub.QueueSize = 256 })
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	publish(t, s, tick(0))
	p0 := samplePrediction(tickStart, 23500)
	publish(t, s, &p0)

	c, resp, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Sec-Websocket-Protocol") != "bearer" {
		t.Fatalf("subprotocol = %q", resp.Header.Get("Sec-Websocket-Protocol"))
	}
	c.send(map[string]string{"op": "subscribe", "channel": "ticks:BTC-USD"})
	c.expect("subscribed", "ticks:BTC-USD")
	if f := c.expect("event", "ticks:BTC-USD"); !f.Snapshot || tickTrades(t, f) != 1 {
		t.Fatalf("tick snapshot = %+v", f)
	}
	c.send(map[string]string{"op": "subscribe", "channel": "predictions:BTC/USD"})
	c.expect("subscribed", "predictions:BTC-USD")
	if f := c.expect("event", "predictions:BTC-USD"); !f.Snapshot {
		t.Fatalf("prediction snapshot = %+v", f)
	}
	// Live, in order, interleaved across channels.
	var wantTicks []int64
	for i := 1; i <= 30; i++ {
		publish(t, s, tick(i))
		wantTicks = append(wantTicks, int64(i+1))
		if i%10 == 0 {
			p := samplePrediction(tickStart.Add(time.Duration(i)*time.Minute), 23500+float64(i))
			publish(t, s, &p)
		}
	}
	// Ticks conflate: a client that is behind gets the newest tick, so
	// the ticks come in stream order and end with the last one, though
	// some may be skipped. Predictions never skip.
	var gotTicks []int64
	var gotPreds []time.Time
	var lastTickSeq, lastPredSeq uint64
	for (len(gotTicks) == 0 || gotTicks[len(gotTicks)-1] != wantTicks[len(wantTicks)-1]) || len(gotPreds) < 3 {
		f := c.expect("event", "")
		if f.Snapshot {
			t.Fatalf("a live event marked snapshot: %+v", f)
		}
		switch f.Channel {
		case "ticks:BTC-USD":
			if f.Seq <= lastTickSeq {
				t.Fatalf("tick seq %d after %d", f.Seq, lastTickSeq)
			}
			lastTickSeq = f.Seq
			gotTicks = append(gotTicks, tickTrades(t, f))
		case "predictions:BTC-USD":
			if f.Seq <= lastPredSeq {
				t.Fatalf("prediction seq %d after %d", f.Seq, lastPredSeq)
			}
			lastPredSeq = f.Seq
			p, err := streams.Decode[streams.Prediction](f.Data)
			if err != nil {
				t.Fatal(err)
			}
			gotPreds = append(gotPreds, p.Start)
		default:
			t.Fatalf("event on %q", f.Channel)
		}
	}
	for i := 1; i < len(gotTicks); i++ {
		if gotTicks[i] <= gotTicks[i-1] {
			t.Fatalf("ticks out of order: %v", gotTicks)
		}
	}
	for i, at := range gotPreds {
		if !at.Equal(tickStart.Add(time.Duration(10*(i+1)) * time.Minute)) {
			t.Fatalf("predictions = %v", gotPreds)
		}
	}
	// Unsubscribe: ticks stop, predictions continue.
	c.send(map[string]string{"op": "unsubscribe", "channel": "ticks:BTC-USD"})
	c.expect("unsubscribed", "ticks:BTC-USD")
	publish(t, s, tick(100))
	p := samplePrediction(tickStart.Add(time.Hour), 23600)
	publish(t, s, &p)
	if f := c.expect("event", "predictions:BTC-USD"); f.Seq <= lastPredSeq {
		t.Fatalf("stale prediction %+v", f)
	}
	// Bad requests get an error frame and the connection stays.
	c.send(map[string]string{"op": "subscribe", "channel": "ticks:*"})
	if f := c.expect("error", ""); f.Code != "bad_channel" {
		t.Fatalf("bad channel = %+v", f)
	}
	c.send(map[string]string{"op": "subscribe", "channel": "predictions:BTC-USD"})
	if f := c.expect("error", ""); f.Code != "subscribe_refused" {
		t.Fatalf("double subscribe = %+v", f)
	}
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte("{")); err != nil {
		t.Fatal(err)
	}
	if f := c.expect("error", ""); f.Code != "bad_message" {
		t.Fatalf("bad message = %+v", f)
	}
}

func TestWebsocketAlertsAndCandles(t *testing.T) {
	s := newStack(t)
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	c, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	c.send(map[string]string{"op": "subscribe", "channel": "alerts"})
	c.expect("subscribed", "alerts")
	c.send(map[string]string{"op": "subscribe", "channel": "candles:BTC-USD:1m"})
	c.expect("subscribed", "candles:BTC-USD:1m")
	a := streams.Alert{ID: "a1", RuleID: "r1", Symbol: "ETH/USD", Interval: streams.Interval1m, Kind: "price_above", Message: "up", Value: 2, Threshold: 1, At: tickStart}
	publish(t, s, &a)
	if f := c.expect("event", "alerts"); !strings.Contains(string(f.Data), `"rule_id":"r1"`) {
		t.Fatalf("alert = %s", f.Data)
	}
	candle := tick(3).Candle
	publish(t, s, &candle)
	c.expect("event", "candles:BTC-USD:1m")
	// A second client gets the alert as its snapshot.
	c2, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	c2.send(map[string]string{"op": "subscribe", "channel": "alerts"})
	c2.expect("subscribed", "alerts")
	if f := c2.expect("event", "alerts"); !f.Snapshot {
		t.Fatalf("alert snapshot = %+v", f)
	}
	// Two clients on alerts, one on candles: two stream consumers, and each
	// live event is fanned out from its one consumer to both.
	if n := opstest.Value(t, s.reg, "cryptostream_gateway_ws_channels", nil); n != 2 {
		t.Fatalf("%v channel consumers, want 2", n)
	}
	a2 := a
	a2.ID, a2.At = "a2", tickStart.Add(time.Minute)
	publish(t, s, &a2)
	for _, cl := range []*wsClient{c, c2} {
		if f := cl.expect("event", "alerts"); f.Snapshot || !strings.Contains(string(f.Data), `"id":"a2"`) {
			t.Fatalf("live alert = %+v", f)
		}
	}
	if n := opstest.Value(t, s.reg, "cryptostream_gateway_ws_events_total", nil); n != 3 {
		t.Fatalf("%v events read from the streams, want 3 (alert, candle, alert)", n)
	}
	c.send(map[string]string{"op": "unsubscribe", "channel": "candles:BTC-USD:1m"})
	c.expect("unsubscribed", "")
	if n := opstest.Value(t, s.reg, "cryptostream_gateway_ws_channels", nil); n != 1 {
		t.Fatalf("%v channel consumers after the last candles subscriber left, want 1", n)
	}
}

func TestWebsocketStalledClientDropped(t *testing.T) {
	s := newStack(t)
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	healthy, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	stalled, _, err := s.dialWS(tok, true)
	if err != nil {
		t.Fatal(err)
	}
	// Candles never conflate: every one is owed to every client.
	for _, c := range []*wsClient{healthy, stalled} {
		c.send(map[string]string{"op": "subscribe", "channel": "candles:BTC-USD:1m"})
		c.expect("subscribed", "candles:BTC-USD:1m")
	}
	// The healthy client reads everything as it comes.
	var mu sync.Mutex
	var got []uint64
	readErr := make(chan error, 1)
	go func() {
		for {
			_ = healthy.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			var f wsFrame
			if err := healthy.conn.ReadJSON(&f); err != nil {
				readErr <- err
				return
			}
			if f.Type == "event" {
				mu.Lock()
				got = append(got, f.Seq)
				mu.Unlock()
			}
		}
	}()
	// Publish until the stalled client is dropped: its socket buffers fill,
	// its queue overflows.
	slowCloses := func() float64 { return opstest.Value(t, s.reg, "cryptostream_gateway_ws_slow_closes_total", nil) }
	// The number of events received is the progress: a slow client on a
	// busy machine is still a moving one.
	caughtUp := func(seq uint64) func() (bool, string) {
		return func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return len(got) > 0 && got[len(got)-1] == seq, fmt.Sprint(len(got))
		}
	}
	var last uint64
	for i := 0; slowCloses() == 0; i++ {
		if i > 200_000 {
			t.Fatal("the stalled client was never dropped")
		}
		last = publish(t, s, candle(i))
		// Let the healthy client catch up now and then, well inside its
		// queue bound: on a loaded machine an unthrottled publisher could
		// otherwise outrun it too, and it would rightly be dropped as slow.
		if i%64 == 63 {
			natstest.WaitProgress(t, 30*time.Second, "the healthy client to keep up", caughtUp(last))
		}
	}
	// The healthy one keeps receiving after the drop.
	for i := range 20 {
		last = publish(t, s, candle(1_000_000+i))
	}
	natstest.WaitProgress(t, 30*time.Second, "the healthy client to receive everything", caughtUp(last))
	select {
	case err := <-readErr:
		t.Fatalf("the healthy client was closed: %v", err)
	default:
	}
	mu.Lock()
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("healthy client missed events: %d then %d", got[i-1], got[i])
		}
	}
	mu.Unlock()
	if code := stalled.closeCode(); code != 4008 {
		t.Fatalf("stalled client closed with %d, want 4008", code)
	}
	if slowCloses() != 1 {
		t.Fatalf("%v slow closes", slowCloses())
	}
}

// A client that reconnects with the last sequence it saw gets what it
// missed and then live events, without a gap or a duplicate at the seam,
// while events keep arriving during the resume (on candles, which never
// conflate; TestWebsocketTicksResume covers ticks).
func TestWebsocketResume(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) { c.Hub.QueueSize = 4096; c.Hub.MaxPending = 100_000 })
	resume(t, s, s)
}

// subscribeTracked waits until the gateway's watched copy of the assets
// bucket has sym tracked, then subscribes once: from then on the gateway
// answers from the watch, not from a direct get that a lagging replica of
// the bucket could answer "not tracked".
func subscribeTracked(c *wsClient, s *stack, sym string, sub map[string]any) {
	c.t.Helper()
	natstest.WaitFor(c.t, time.Minute, "the gateway's watch to have "+sym, func() bool { return s.gw.Tracks(sym) })
	c.send(sub)
	if f := c.next(); f.Type != "subscribed" {
		c.t.Fatalf("got %+v, want subscribed", f)
	}
}

// resume: a client subscribed on first that drops its socket and, while
// candles keep coming, reconnects to second and subscribes with since the
// last seq it saw gets every candle after it once, in order, then live.
func resume(t *testing.T, first, second *stack) {
	tok := first.signup("alice", "alice-password")
	first.track("BTC/USD")
	c, _, err := first.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	subscribeTracked(c, first, "BTC/USD", map[string]any{"op": "subscribe", "channel": "candles:BTC-USD:1m"})
	for i := range 5 {
		publish(t, first, candle(i))
	}
	var seen uint64
	for range 5 {
		seen = c.expect("event", "candles:BTC-USD:1m").Seq
	}
	_ = c.conn.Close()
	for i := 5; i < 300; i++ {
		publish(t, first, candle(i))
	}
	// Keep publishing while the client resumes.
	done := make(chan uint64)
	go func() {
		var last uint64
		for i := 300; i < 600; i++ {
			ack, err := streams.Publish(context.Background(), first.js, candle(i))
			if err != nil {
				break
			}
			last = ack.Sequence
		}
		done <- last
	}()
	c2, _, err := second.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	subscribeTracked(c2, second, "BTC/USD", map[string]any{"op": "subscribe", "channel": "candles:BTC-USD:1m", "since": seen})
	last := <-done
	if last == 0 {
		t.Fatal("publisher failed")
	}
	want := seen + 1
	for want <= last {
		f := c2.expect("event", "candles:BTC-USD:1m")
		if f.Seq != want || f.Snapshot {
			t.Fatalf("got seq %d (snapshot %v), want %d", f.Seq, f.Snapshot, want)
		}
		if candleTrades(t, f) != int64(want) {
			t.Fatalf("seq %d carries tick %d", f.Seq, candleTrades(t, f))
		}
		want++
	}
}

func TestWebsocketAuth(t *testing.T) {
	s := newStack(t)
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")

	t.Run("bad token at upgrade", func(t *testing.T) {
		_, resp, err := s.dialWS("not-a-token", false)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial = %v, %v", resp, err)
		}
	})
	t.Run("no token then subscribe", func(t *testing.T) {
		c, _, err := s.dialWS("", false)
		if err != nil {
			t.Fatal(err)
		}
		c.send(map[string]string{"op": "subscribe", "channel": "alerts"})
		if code := c.closeCode(); code != 4003 {
			t.Fatalf("close %d", code)
		}
	})
	t.Run("bad token in first message", func(t *testing.T) {
		c, _, err := s.dialWS("", false)
		if err != nil {
			t.Fatal(err)
		}
		c.send(map[string]string{"op": "auth", "token": tok + "x"})
		if code := c.closeCode(); code != 4003 {
			t.Fatalf("close %d", code)
		}
	})
	t.Run("token in first message", func(t *testing.T) {
		c, _, err := s.dialWS("", false)
		if err != nil {
			t.Fatal(err)
		}
		c.send(map[string]string{"op": "auth", "token": tok})
		c.expect("authenticated", "")
		c.send(map[string]string{"op": "subscribe", "channel": "alerts"})
		c.expect("subscribed", "alerts")
	})
	t.Run("expiry closes", func(t *testing.T) {
		// A token that expires a few seconds from now.
		short, err := auth.NewTokens(s.key, time.Minute, func() time.Time { return time.Now().Add(-57 * time.Second) })
		if err != nil {
			t.Fatal(err)
		}
		st := s.issue(short, "alice")
		c, _, err := s.dialWS(st, false)
		if err != nil {
			t.Fatal(err)
		}
		if code := c.closeCode(); code != 4001 {
			t.Fatalf("close %d", code)
		}
	})
	t.Run("a fresh token extends", func(t *testing.T) {
		short, err := auth.NewTokens(s.key, time.Minute, func() time.Time { return time.Now().Add(-57 * time.Second) })
		if err != nil {
			t.Fatal(err)
		}
		st := s.issue(short, "alice")
		c, _, err := s.dialWS(st, false)
		if err != nil {
			t.Fatal(err)
		}
		c.send(map[string]string{"op": "auth", "token": tok})
		c.expect("authenticated", "")
		c.send(map[string]string{"op": "subscribe", "channel": "alerts"})
		c.expect("subscribed", "alerts")
		// Past the first token's expiry the connection still serves.
		time.Sleep(4 * time.Second)
		a := streams.Alert{ID: "x", RuleID: "r", Symbol: "BTC/USD", Interval: streams.Interval1m, Kind: "k", Message: "m", At: tickStart}
		publish(t, s, &a)
		c.expect("event", "alerts")
		// Another user's token is refused.
		other := s.signup("mallory", "mallory-password")
		c.send(map[string]string{"op": "auth", "token": other})
		if code := c.closeCode(); code != 4003 {
			t.Fatalf("close %d", code)
		}
	})
	t.Run("shutdown closes", func(t *testing.T) {
		c, _, err := s.dialWS(tok, false)
		if err != nil {
			t.Fatal(err)
		}
		c.send(map[string]string{"op": "subscribe", "channel": "alerts"})
		c.expect("subscribed", "alerts")
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		go func() { _ = s.srv.Config.Shutdown(ctx) }()
		if code := c.closeCode(); code != websocket.CloseGoingAway {
			t.Fatalf("close %d", code)
		}
	})
}

// A resume from before what the stream still holds gets a gap frame naming
// the missing range, then everything that is there.
func TestWebsocketResumeGap(t *testing.T) {
	s := newStack(t)
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	for i := range 10 {
		publish(t, s, tick(i))
	}
	st, err := s.js.Stream(t.Context(), streams.StreamTicks)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(t.Context(), jetstream.WithPurgeSequence(6)); err != nil { // keeps 6..10
		t.Fatal(err)
	}
	c, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"op": "subscribe", "channel": "ticks:BTC-USD", "since": 2})
	c.expect("subscribed", "")
	var g struct {
		Type     string
		From, To uint64
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if err := c.conn.ReadJSON(&g); err != nil || g.Type != "gap" || g.From != 3 || g.To != 5 {
		t.Fatalf("gap frame = %+v, %v", g, err)
	}
	for want := uint64(6); want <= 10; want++ {
		if f := c.expect("event", "ticks:BTC-USD"); f.Seq != want {
			t.Fatalf("seq %d, want %d", f.Seq, want)
		}
	}
}

// A client that stops answering pings is disconnected; one that reads (and
// so answers them) stays. Both waits end on an event, not a deadline: the
// silent client's is its close frame (its socket is read raw, so nothing
// answers the pings), the reader's the event or its own close. PongWait is
// a second so that a busy machine does not starve the reader past it.
func TestWebsocketPingTimeout(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) {
		c.Hub.PingInterval = 50 * time.Millisecond
		c.Hub.PongWait = time.Second
	})
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	live, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	live.send(map[string]string{"op": "subscribe", "channel": "ticks:BTC-USD"})
	live.expect("subscribed", "")
	frames := make(chan wsFrame, 100)
	go func() {
		for {
			var f wsFrame
			if err := live.conn.ReadJSON(&f); err != nil {
				close(frames)
				return
			}
			frames <- f
		}
	}()
	silent, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(silent.conn.NetConn()) // until the gateway closes it
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	noPong := append([]byte{0x88, 2 + byte(len("no pong")), 0x03, 0xE8}, "no pong"...) // close 1000 "no pong"
	if !bytes.HasSuffix(raw, noPong) {
		t.Fatalf("the silent client's socket closed after %d bytes without the close frame 1000 \"no pong\" (ends % x)", len(raw), raw[max(0, len(raw)-16):])
	}
	publish(t, s, tick(1))
	if f, ok := <-frames; !ok || f.Type != "event" {
		t.Fatalf("the reading client got %+v (open %v)", f, ok)
	}
}

// Issue 11 item 8: a client that never authenticates, and sends nothing,
// is closed with 4003 as documented (it was closed with 1000).
func TestWebsocketSilentClientClosed4003(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) { c.Hub.AuthTimeout = 200 * time.Millisecond })
	c, _, err := s.dialWS("", false)
	if err != nil {
		t.Fatal(err)
	}
	if code := c.closeCode(); code != 4003 {
		t.Fatalf("a silent client was closed with %d, want 4003", code)
	}
}

// The resume on the gateway's own settings (the flushers' rounds at
// DefaultWriteDelay, the default queue and bounds), which every other test
// here replaces with writes at once and a small queue: a client resumes a
// backlog many times its queue while candles keep coming on that channel
// and on another it follows live, three times over (unsubscribing and
// resuming from the same seq). It gets every candle once, in order, on
// both, and is not closed. A backlog that filled the queue to the brim
// closed it with 4008: a ~300-candle resume failed 1 run of 3, one resume
// of 5,000 beside a live channel 2 of 3.
func TestWebsocketResumeProductionSettings(t *testing.T) {
	const missed, during, rounds, lead = 5000, 1000, 3, 32
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) { c.Hub = hub.Config{WriteDelay: hub.DefaultWriteDelay} })
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD", "ETH/USD")
	const btc, eth = "candles:BTC-USD:1m", "candles:ETH-USD:1m"
	seen := publish(t, s, candle(0))
	var btcSeqs []uint64 // every BTC candle after seen
	for i := 1; i <= missed; i++ {
		btcSeqs = append(btcSeqs, publish(t, s, candle(i)))
	}
	c, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"op": "subscribe", "channel": eth})
	c.expect("subscribed", eth)
	// The client reads all along, as a healthy one does.
	frames := make(chan wsFrame, 1024)
	readErr := make(chan error, 1)
	go func() {
		for {
			_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
			var f wsFrame
			if err := c.conn.ReadJSON(&f); err != nil {
				readErr <- err
				return
			}
			frames <- f
		}
	}()
	next := func(what string) wsFrame {
		t.Helper()
		select {
		case f := <-frames:
			return f
		case err := <-readErr:
			t.Fatalf("%s: %v", what, err)
		}
		panic("unreachable")
	}
	candleN := missed + 1
	for round := range rounds {
		// Published from here on: BTC candles the resume must carry
		// after its backlog, ETH ones live.
		type published struct{ btc, eth []uint64 }
		done := make(chan published, 1)
		// The publisher stays at most lead candles of each symbol ahead of
		// what the client has read: a healthy client's live frames between
		// two writes then fit the room a catch-up leaves them, however
		// long the machine keeps the flusher from running. Unpaced, a
		// publisher in this process filled that room while a round was
		// starved for 150-500 ms at load 25 (two copies of the test side
		// by side), which no client could have kept up with.
		readETH := make(chan struct{}, during)
		go func() {
			var p published
			defer func() { done <- p }()
			for i := range during {
				if i >= lead {
					select {
					case <-readETH:
					case <-t.Context().Done():
						return
					}
				}
				ack, err := streams.Publish(context.Background(), s.js, candle(candleN+i))
				if err != nil {
					return
				}
				p.btc = append(p.btc, ack.Sequence)
				e := candle(candleN + i)
				e.Symbol = "ETH/USD"
				if ack, err = streams.Publish(context.Background(), s.js, e); err != nil {
					return
				}
				p.eth = append(p.eth, ack.Sequence)
			}
		}()
		c.send(map[string]any{"op": "subscribe", "channel": btc, "since": seen})
		var gotBTC, gotETH []uint64
		for len(gotBTC) < len(btcSeqs)+during || len(gotETH) < during {
			f := next(fmt.Sprintf("round %d, after %d BTC and %d ETH events", round, len(gotBTC), len(gotETH)))
			switch {
			case f.Type == "event" && f.Channel == btc:
				gotBTC = append(gotBTC, f.Seq)
			case f.Type == "event" && f.Channel == eth:
				gotETH = append(gotETH, f.Seq)
				readETH <- struct{}{}
			case f.Type == "subscribed" && f.Channel == btc:
			default:
				t.Fatalf("round %d: unexpected frame %+v", round, f)
			}
		}
		p := <-done
		if len(p.btc) != during || len(p.eth) != during {
			t.Fatalf("publisher failed after %d BTC and %d ETH candles", len(p.btc), len(p.eth))
		}
		candleN += during
		btcSeqs = append(btcSeqs, p.btc...)
		if !slices.Equal(gotBTC, btcSeqs) {
			for i := range min(len(gotBTC), len(btcSeqs)) {
				if gotBTC[i] != btcSeqs[i] {
					t.Fatalf("round %d: BTC event %d has seq %d, want %d", round, i, gotBTC[i], btcSeqs[i])
				}
			}
			t.Fatalf("round %d: %d BTC events, want %d", round, len(gotBTC), len(btcSeqs))
		}
		if !slices.Equal(gotETH, p.eth) {
			t.Fatalf("round %d: ETH events %v..., want the %d published", round, gotETH[:min(5, len(gotETH))], len(p.eth))
		}
		c.send(map[string]any{"op": "unsubscribe", "channel": btc})
		if f := next("unsubscribe"); f.Type != "unsubscribed" {
			t.Fatalf("got %+v, want unsubscribed", f)
		}
	}
}

func TestWebsocketSlowClientClosed4008(t *testing.T) {
	// A queue far larger than anything published here: only the time a
	// frame waits can call the client slow.
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) { c.Hub.QueueSize = 100_000 })
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	healthy, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	stalled, _, err := s.dialWS(tok, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsClient{healthy, stalled} {
		c.send(map[string]string{"op": "subscribe", "channel": "ticks:BTC-USD"})
		c.expect("subscribed", "ticks:BTC-USD")
	}
	var lastSeen atomic.Uint64
	readErr := make(chan error, 1)
	go func() {
		for {
			_ = healthy.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			var f wsFrame
			if err := healthy.conn.ReadJSON(&f); err != nil {
				readErr <- err
				return
			}
			if f.Type == "event" {
				lastSeen.Store(f.Seq)
			}
		}
	}()
	slowCloses := func() float64 { return opstest.Value(t, s.reg, "cryptostream_gateway_ws_slow_closes_total", nil) }
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	// Until the stalled client is called slow, or is gone some other way.
	for i := 0; slowCloses() == 0 && s.gw.Clients() == 2; i++ {
		if i > 100_000 {
			t.Fatal("the stalled client was never closed")
		}
		publish(t, s, tick(i))
		<-pace.C
	}
	if slowCloses() != 1 {
		t.Fatalf("the stalled client left with %v slow closes counted, want 1", slowCloses())
	}
	// Reading now, it finds the close frame behind what was queued.
	if code := stalled.closeCode(); code != 4008 {
		t.Fatalf("stalled client closed with %d, want 4008", code)
	}
	last := publish(t, s, tick(1_000_000))
	natstest.WaitAtLeast(t, 30*time.Second, "the healthy client to get the last tick", last, lastSeen.Load)
	select {
	case err := <-readErr:
		t.Fatalf("the healthy client was closed: %v", err)
	default:
	}
}

// A write that outlasts WriteTimeout, before any delivery found the client
// slow (events paused, or a loaded fan-out), used to cut the socket with no
// close frame: the slow close was counted, but the client saw 1006.
// SlowAfter is out of reach here, so only the write's timeout calls the
// stalled client slow; it then gets the rest of the cut frame and 4008.
func TestWebsocketWriteTimeoutClosed4008(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) {
		c.Hub.QueueSize = 100_000
		c.Hub.SlowAfter = time.Hour
		c.Hub.WriteTimeout = 5 * time.Second
	})
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	stalled, _, err := s.dialWS(tok, true)
	if err != nil {
		t.Fatal(err)
	}
	stalled.send(map[string]string{"op": "subscribe", "channel": "ticks:BTC-USD"})
	stalled.expect("subscribed", "ticks:BTC-USD")
	slowCloses := func() float64 { return opstest.Value(t, s.reg, "cryptostream_gateway_ws_slow_closes_total", nil) }
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	for i := 0; slowCloses() == 0 && s.gw.Clients() == 1; i++ {
		if i > 100_000 {
			t.Fatal("the stalled client was never closed")
		}
		publish(t, s, tick(i))
		<-pace.C
	}
	if slowCloses() != 1 {
		t.Fatalf("the stalled client left with %v slow closes counted, want 1", slowCloses())
	}
	if code := stalled.closeCode(); code != 4008 {
		t.Fatalf("stalled client closed with %d, want 4008", code)
	}
}

// Issue 11 item 19: subscribing to an untracked asset or an interval the
// system does not run answers an error (it answered subscribed and then
// nothing, ever).
func TestWebsocketUntrackedChannel(t *testing.T) {
	s := newStack(t)
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	c, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"ticks:DOGE-USD", "candles:ETH-USD:1m", "predictions:DOGE/USD", "alerts:DOGE-USD", "ticks:BTC-USD:5m", "candles:BTC-USD:1h"} {
		c.send(map[string]string{"op": "subscribe", "channel": ch})
		if f := c.expect("error", ""); f.Code != "not_tracked" {
			t.Fatalf("subscribe %s = %+v, want not_tracked", ch, f)
		}
	}
	// Tracked ones, and the all-assets alerts, subscribe.
	for _, ch := range []string{"ticks:BTC-USD", "candles:BTC/USD:1m", "alerts:BTC-USD", "alerts"} {
		c.send(map[string]string{"op": "subscribe", "channel": ch})
		c.expect("subscribed", "")
	}
	if n := opstest.Value(t, s.reg, "cryptostream_gateway_ws_subscribe_errors_total", nil); n != 6 {
		t.Fatalf("%v refused subscriptions counted, want 6", n)
	}
}

// A ticks client that falls behind gets the newest tick rather than being
// closed: its queue (16 here) is far smaller than what is published while
// it does not read.
func TestWebsocketTicksConflate(t *testing.T) {
	s := newStack(t)
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	c, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	c.send(map[string]string{"op": "subscribe", "channel": "ticks:BTC-USD"})
	c.expect("subscribed", "")
	var last uint64
	for i := range 300 {
		last = publish(t, s, tick(i))
	}
	var prev uint64
	n := 0
	for prev != last {
		f := c.expect("event", "ticks:BTC-USD")
		if f.Seq <= prev {
			t.Fatalf("tick seq %d after %d", f.Seq, prev)
		}
		if tickTrades(t, f) != int64(f.Seq) {
			t.Fatalf("seq %d carries tick %d", f.Seq, tickTrades(t, f))
		}
		prev = f.Seq
		n++
	}
	if slow := opstest.Value(t, s.reg, "cryptostream_gateway_ws_slow_closes_total", nil); slow != 0 {
		t.Fatalf("%v slow closes", slow)
	}
	t.Logf("%d of 300 ticks sent", n)
}

// A ticks resume replays every stored tick after since up to the seam
// (conflation is for live ticks only), then live ticks in order.
func TestWebsocketTicksResume(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) { c.Hub.QueueSize = 64 })
	tok := s.signup("alice", "alice-password")
	s.track("BTC/USD")
	for i := range 200 {
		publish(t, s, tick(i))
	}
	c, _, err := s.dialWS(tok, false)
	if err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"op": "subscribe", "channel": "ticks:BTC-USD", "since": 50})
	seam := c.expect("subscribed", "ticks:BTC-USD").Seq
	if seam != 200 {
		t.Fatalf("seam %d, want 200", seam)
	}
	last := publish(t, s, tick(200))
	for want := uint64(51); want <= seam; want++ {
		if f := c.expect("event", "ticks:BTC-USD"); f.Seq != want || f.Snapshot {
			t.Fatalf("backlog seq %d (snapshot %v), want %d", f.Seq, f.Snapshot, want)
		}
	}
	if f := c.expect("event", "ticks:BTC-USD"); f.Seq != last {
		t.Fatalf("live seq %d, want %d", f.Seq, last)
	}
}
