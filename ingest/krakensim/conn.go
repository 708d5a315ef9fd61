package krakensim

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"cryptostream/streams"
)

// conn is one client connection.
type conn struct {
	s          *Server
	ws         *websocket.Conn
	id         uint64
	out        chan []byte
	done       chan struct{}
	closeOnce  sync.Once
	stallUntil atomic.Int64
	lastSent   atomic.Int64

	mu        sync.Mutex
	subs      map[string]streams.Interval
	silent    map[string]bool
	dropAfter int // data frames left before an abrupt drop; 0 = none
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	// Kraken's connection ids overflow int64; so do these.
	c := &conn{s: s, ws: ws, id: 1<<63 + s.nextConnID.Add(1), out: make(chan []byte, 1024), done: make(chan struct{}),
		subs: map[string]streams.Interval{}, silent: map[string]bool{}}
	s.connsTotal.Add(1)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	status := s.status
	s.mu.Unlock()
	c.send(statusFrame(status, c.id))
	go c.writeLoop()
	go c.heartbeatLoop()
	c.readLoop()
	c.close(false)
}

// close ends the connection; abrupt drops the TCP connection without a
// close frame, as a network failure would.
func (c *conn) close(abrupt bool) {
	c.closeOnce.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		close(c.done)
		if abrupt {
			if tc, ok := c.ws.NetConn().(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
		}
		c.ws.Close()
	})
}

func (c *conn) stalled() bool { return time.Now().UnixNano() < c.stallUntil.Load() }

// send queues a control frame; it never blocks the caller for long.
func (c *conn) send(b []byte) {
	if c.stalled() {
		return
	}
	select {
	case c.out <- b:
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.close(true)
	}
}

// sendData queues a data frame, applying the injected faults. It blocks
// while the client is slow, so a replay at full speed is paced by its
// readers and loses nothing.
func (c *conn) sendData(ctx context.Context, b []byte) {
	if c.stalled() {
		return
	}
	c.s.mu.Lock()
	malform := c.s.faults.malformNext > 0
	if malform {
		c.s.faults.malformNext--
	}
	c.s.mu.Unlock()
	if malform {
		c.enqueue(ctx, []byte(`{"channel":"ohlc","type":"update","data":[{"symbol":"BTC/USD","open":"x",`))
	}
	c.mu.Lock()
	drop := false
	if c.dropAfter > 0 {
		c.dropAfter--
		drop = c.dropAfter == 0
	}
	c.mu.Unlock()
	if drop {
		c.close(true)
		return
	}
	c.enqueue(ctx, b)
	c.s.framesSent.Add(1)
}

func (c *conn) enqueue(ctx context.Context, b []byte) {
	select {
	case c.out <- b:
	case <-c.done:
	case <-ctx.Done():
	}
}

func (c *conn) writeLoop() {
	for {
		select {
		case b := <-c.out:
			c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				c.close(true)
				return
			}
			c.lastSent.Store(time.Now().UnixNano())
		case <-c.done:
			return
		}
	}
}

func (c *conn) heartbeatLoop() {
	t := time.NewTicker(c.s.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.mu.Lock()
			n := len(c.subs)
			c.mu.Unlock()
			idle := time.Since(time.Unix(0, c.lastSent.Load())) >= c.s.cfg.Heartbeat
			if n > 0 && idle {
				c.send([]byte(`{"channel":"heartbeat"}`))
			}
		case <-c.done:
			return
		}
	}
}

func (c *conn) subscribed(sym string) (streams.Interval, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	iv, ok := c.subs[sym]
	if !ok || c.silent[sym] {
		return 0, false
	}
	return iv, true
}

type request struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	ReqID  *int64          `json:"req_id"`
}

type subParams struct {
	Channel  string   `json:"channel"`
	Symbol   []string `json:"symbol"`
	Interval *int     `json:"interval"`
	Snapshot *bool    `json:"snapshot"`
}

func (c *conn) readLoop() {
	for {
		c.ws.SetReadDeadline(time.Now().Add(c.s.cfg.IdleTimeout))
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		var req request
		if err := json.Unmarshal(msg, &req); err != nil {
			c.respond(request{Method: "unknown"}, false, "Malformed request", nil, "")
			continue
		}
		switch req.Method {
		case "ping":
			if len(req.Params) > 0 {
				c.respond(req, false, "Unsupported field: 'params' for the given msg type: ping", nil, "")
				continue
			}
			c.respond(request{Method: "pong", ReqID: req.ReqID}, true, "", nil, "")
		case "subscribe":
			c.subscribe(req)
		case "unsubscribe":
			c.unsubscribe(req)
		default:
			c.respond(req, false, "Unsupported event", nil, "")
		}
	}
}

// respond sends a method response; result nil and ok false is a failure.
func (c *conn) respond(req request, ok bool, errMsg string, result any, symbol string) {
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")
	m := map[string]any{"method": req.Method, "time_in": now, "time_out": now}
	if req.Method != "pong" {
		m["success"] = ok
	}
	if req.ReqID != nil {
		m["req_id"] = *req.ReqID
	}
	if ok && result != nil {
		m["result"] = result
	}
	if !ok {
		m["error"] = errMsg
		if symbol != "" {
			m["symbol"] = symbol
		}
	}
	b, _ := json.Marshal(m)
	c.send(b)
}

func (c *conn) subscribe(req request) {
	var p subParams
	if err := json.Unmarshal(req.Params, &p); err != nil {
		c.respond(req, false, "Malformed request", nil, "")
		return
	}
	if p.Channel == "heartbeat" {
		c.respond(req, true, "", map[string]any{"channel": "heartbeat"}, "")
		return
	}
	if p.Channel != "ohlc" {
		c.respond(req, false, fmt.Sprintf("Channel %s not supported", p.Channel), nil, "")
		return
	}
	c.s.mu.Lock()
	limited := c.s.faults.rateNext > 0
	if limited {
		c.s.faults.rateNext--
	}
	online := c.s.status == "online"
	c.s.mu.Unlock()
	if limited {
		for _, sym := range p.Symbol {
			c.respond(req, false, "Exceeded msg rate", nil, sym)
		}
		return
	}
	minutes := 1
	if p.Interval != nil {
		minutes = *p.Interval
	}
	iv, err := streams.IntervalFromMinutes(minutes)
	if err != nil || minutes%c.s.native.Minutes() != 0 || iv > streams.Interval1d {
		c.respond(req, false, fmt.Sprintf("Invalid interval %d", minutes), nil, "")
		return
	}
	if len(p.Symbol) == 0 {
		c.respond(req, false, "Missing field: symbol", nil, "")
		return
	}
	snapshot := p.Snapshot == nil || *p.Snapshot
	for _, sym := range p.Symbol {
		f := c.s.feeds[sym]
		if f == nil {
			c.respond(req, false, "Currency pair not supported "+sym, nil, sym)
			continue
		}
		if !online {
			c.respond(req, false, "Service unavailable: system in maintenance", nil, sym)
			continue
		}
		c.mu.Lock()
		have, dup := c.subs[sym]
		c.mu.Unlock()
		if dup {
			msg := "Already subscribed"
			if have != iv {
				msg = "Already subscribed to one ohlc interval on this symbol"
			}
			c.respond(req, false, msg, nil, sym)
			continue
		}
		c.s.mu.Lock()
		silent := c.s.faults.silentNext > 0
		if silent {
			c.s.faults.silentNext--
		}
		first := c.s.subCond
		c.s.mu.Unlock()
		// The ack, the snapshot and the subscription happen under the
		// connection's lock, which emit also takes: an update is either in
		// the snapshot or sent after it, never lost between the two.
		c.mu.Lock()
		c.respond(req, true, "", map[string]any{"channel": "ohlc", "interval": minutes, "snapshot": snapshot, "symbol": sym,
			"warnings": []string{"timestamp is deprecated, use interval_begin"}}, "")
		if snapshot && !silent {
			c.send(c.s.snapshot(f, iv))
		}
		c.subs[sym] = iv
		c.silent[sym] = silent
		c.mu.Unlock()
		c.s.mu.Lock()
		if c.s.subCond == first {
			select {
			case <-first:
			default:
				close(first)
			}
		}
		c.s.mu.Unlock()
	}
}

func (c *conn) unsubscribe(req request) {
	var p subParams
	if err := json.Unmarshal(req.Params, &p); err != nil || p.Channel != "ohlc" {
		c.respond(req, false, "Malformed request", nil, "")
		return
	}
	for _, sym := range p.Symbol {
		c.mu.Lock()
		iv, ok := c.subs[sym]
		delete(c.subs, sym)
		delete(c.silent, sym)
		c.mu.Unlock()
		if !ok {
			c.respond(req, false, "Subscription Not Found", nil, sym)
			continue
		}
		c.respond(req, true, "", map[string]any{"channel": "ohlc", "interval": iv.Minutes(), "symbol": sym}, "")
	}
}

// snapshot is the recent non-empty intervals of f, oldest first, the
// running one included.
func (s *Server) snapshot(f *Feed, iv streams.Interval) []byte {
	now := s.now()
	var bars []candle
	for t, n := iv.Floor(now), 0; n < 4*s.cfg.SnapshotRows && len(bars) < s.cfg.SnapshotRows; t, n = t.Add(-iv.Duration()), n+1 {
		if b := f.bar(t, iv, now, s.cfg.MaxUpdatesPerCandle); !b.empty {
			bars = append(bars, b)
		}
	}
	for i, j := 0, len(bars)-1; i < j; i, j = i+1, j-1 {
		bars[i], bars[j] = bars[j], bars[i]
	}
	return s.ohlcFrame("snapshot", f.Symbol, iv, bars, now)
}
