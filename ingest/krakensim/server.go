// Package krakensim is a Kraken-compatible market-data server for tests and
// the demo: WebSocket v2 (status, ping/pong, ohlc subscribe with per-symbol
// acks and errors, snapshots, one update per simulated trade carrying the
// whole running candle, heartbeats, idle close) and the public REST
// endpoints OHLC (720-row window, since, the open last row, filler rows),
// AssetPairs and Ticker. It replays recorded candles at a chosen speed and
// can shift their times to the present, and it injects the faults real
// Kraken users meet: dropped connections, stalls, acked-but-silent
// subscriptions, malformed frames, "Exceeded msg rate" and maintenance.
//
// Each recorded row becomes up to MaxUpdatesPerCandle simulated trades
// spread over its interval; the last one carries exactly the recorded
// values, so a client that assembles the updates correctly gets the file
// back.
package krakensim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"cryptostream/streams"
)

// Config configures a Server.
type Config struct {
	Feeds []Feed
	// Speed is market seconds per real second (60 = a minute per second).
	// 0 replays as fast as the subscribed clients read, and waits for the
	// first subscription before starting.
	Speed float64
	// Start is the data time the replay begins at. Zero starts 720 native
	// intervals after the first row, so that REST has a full window.
	Start time.Time
	// Shift moves every served time so that the replay starts now (by whole
	// days, so every grid up to a day stays aligned and, at Speed 1, the
	// served clock matches the wall clock). With a zero Start the replay
	// then begins at the present time of day on the second day of data.
	// Above Speed 1 the replay is moved further back, by whole days, so
	// that the served clock never passes the wall clock: it ends by now.
	Shift bool
	// MaxUpdatesPerCandle bounds the simulated trades per recorded row
	// (default 12).
	MaxUpdatesPerCandle int
	// SnapshotRows is how many recent non-empty intervals a snapshot holds
	// (default 10).
	SnapshotRows int
	// IdleTimeout closes a connection without client messages (default 60 s).
	IdleTimeout time.Duration
	// Heartbeat is the idle heartbeat period (default 1 s).
	Heartbeat time.Duration
	Log       *slog.Logger
}

// Server is a running simulator; serve it with net/http.
type Server struct {
	cfg    Config
	log    *slog.Logger
	feeds  map[string]*Feed
	byPair map[string]*Feed
	native streams.Interval
	shift  time.Duration
	end    time.Time // data time after which nothing trades

	mu      sync.Mutex
	conns   map[*conn]struct{}
	started time.Time // wall clock when the replay started
	cursor  time.Time // data time of the newest emitted trade (Speed 0)
	status  string
	faults  faults
	subCond chan struct{} // closed at the first subscription

	framesSent atomic.Int64
	connsTotal atomic.Int64
	nextConnID atomic.Uint64
	upgrader   websocket.Upgrader
}

type faults struct {
	silentNext  int
	malformNext int
	rateNext    int
	restRate    int
}

// New validates cfg and prepares a server; Run starts the replay.
func New(cfg Config) (*Server, error) {
	if len(cfg.Feeds) == 0 {
		return nil, errors.New("krakensim: no feeds")
	}
	if cfg.MaxUpdatesPerCandle <= 0 {
		cfg.MaxUpdatesPerCandle = 12
	}
	if cfg.SnapshotRows <= 0 {
		cfg.SnapshotRows = 10
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Minute
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.Speed < 0 {
		return nil, fmt.Errorf("krakensim: speed %v", cfg.Speed)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Log, feeds: map[string]*Feed{}, byPair: map[string]*Feed{},
		conns: map[*conn]struct{}{}, status: "online", subCond: make(chan struct{})}
	s.upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var first time.Time
	for i := range cfg.Feeds {
		f := &cfg.Feeds[i]
		if s.native == 0 {
			s.native = f.Interval
		} else if f.Interval != s.native {
			return nil, fmt.Errorf("krakensim: feeds of %s and %s", s.native, f.Interval)
		}
		if len(f.Rows) == 0 {
			return nil, fmt.Errorf("krakensim: feed %s has no rows", f.Symbol)
		}
		s.feeds[f.Symbol] = f
		for _, name := range []string{f.PairKey, f.Altname, f.WSName, f.Symbol, stripSlash(f.Symbol)} {
			s.byPair[name] = f
		}
		if first.IsZero() || f.Rows[0].Start.Before(first) {
			first = f.Rows[0].Start
		}
		if e := f.Rows[len(f.Rows)-1].Start.Add(f.Interval.Duration()); e.After(s.end) {
			s.end = e
		}
	}
	start := cfg.Start
	now := time.Now().UTC()
	if start.IsZero() {
		if cfg.Shift {
			day := first.Truncate(24 * time.Hour).Add(24 * time.Hour)
			start = day.Add(now.Sub(now.Truncate(24 * time.Hour)))
			if start.Sub(first) < 720*s.native.Duration() {
				start = start.Add(24 * time.Hour)
			}
		} else {
			start = first.Add(720 * s.native.Duration())
		}
	}
	s.cfg.Start = start.UTC()
	if cfg.Shift {
		s.shift = now.Truncate(24 * time.Hour).Sub(s.cfg.Start.Truncate(24 * time.Hour))
		if cfg.Speed > 1 {
			// Faster than real time the served clock would run ahead of the
			// wall clock, and candles from the future are refused
			// everywhere (stored, they would block a later real ingester).
			// Go back by whole days so that the replay ends by the present.
			replay := time.Duration(float64(s.end.Sub(s.cfg.Start)) / cfg.Speed)
			if lead := s.end.Add(s.shift).Sub(now.Add(replay)); lead > 0 {
				s.shift -= (lead + 24*time.Hour - 1) / (24 * time.Hour) * (24 * time.Hour)
			}
		}
	}
	s.cursor = s.cfg.Start
	return s, nil
}

func stripSlash(sym string) string {
	out := make([]byte, 0, len(sym))
	for i := 0; i < len(sym); i++ {
		if sym[i] != '/' {
			out = append(out, sym[i])
		}
	}
	return string(out)
}

// Start is the data time the replay begins at.
func (s *Server) Start() time.Time { return s.cfg.Start }

// Shift is what is added to every recorded time before it is served.
func (s *Server) Shift() time.Duration { return s.shift }

// End is the data time when the recording ends.
func (s *Server) End() time.Time { return s.end }

// FramesSent counts data frames written to clients.
func (s *Server) FramesSent() int64 { return s.framesSent.Load() }

// Connections counts accepted WebSocket connections.
func (s *Server) Connections() int64 { return s.connsTotal.Load() }

// now is the current data time.
func (s *Server) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nowLocked()
}

func (s *Server) nowLocked() time.Time {
	var t time.Time
	switch {
	case s.cfg.Speed == 0 || s.started.IsZero():
		t = s.cursor
	default:
		elapsed := time.Since(s.started)
		t = s.cfg.Start.Add(time.Duration(float64(elapsed) * s.cfg.Speed))
	}
	if t.After(s.end) {
		t = s.end
	}
	return t
}

// Fault injection. Each takes effect on the next matching event.

// DropAfter makes every open connection drop, abruptly and without a close
// frame, after n more data frames.
func (s *Server) DropAfter(n int) {
	for _, c := range s.connList() {
		c.mu.Lock()
		c.dropAfter = n
		c.mu.Unlock()
	}
}

// connList snapshots the open connections; a connection's own lock is
// never taken under the server's.
func (s *Server) connList() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

// Stall makes every open connection send nothing, heartbeats included, for d.
func (s *Server) Stall(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	until := time.Now().Add(d)
	for c := range s.conns {
		c.stallUntil.Store(until.UnixNano())
	}
}

// SilenceNext acks the next n symbol subscriptions and then never sends
// them any data.
func (s *Server) SilenceNext(n int) { s.mu.Lock(); s.faults.silentNext += n; s.mu.Unlock() }

// MalformNext sends a malformed frame before each of the next n data frames.
func (s *Server) MalformNext(n int) { s.mu.Lock(); s.faults.malformNext += n; s.mu.Unlock() }

// RateLimitNext answers the next n subscribe requests with
// "Exceeded msg rate" for each of their symbols.
func (s *Server) RateLimitNext(n int) { s.mu.Lock(); s.faults.rateNext += n; s.mu.Unlock() }

// RESTRateLimitNext answers the next n REST calls with
// EGeneral:Too many requests on HTTP 200, as Kraken does.
func (s *Server) RESTRateLimitNext(n int) { s.mu.Lock(); s.faults.restRate += n; s.mu.Unlock() }

// SetSystemStatus sends a status frame to every connection (maintenance,
// online, ...); while it is not online, subscriptions are refused and no
// data flows.
func (s *Server) SetSystemStatus(system string) {
	s.mu.Lock()
	s.status = system
	s.mu.Unlock()
	for _, c := range s.connList() {
		c.send(statusFrame(system, c.id))
	}
}

// Run replays the feeds until ctx ends or the recording is over, and then
// keeps serving (REST and heartbeats) until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Speed == 0 {
		select {
		case <-s.subCond:
		case <-ctx.Done():
			return nil
		}
	}
	s.mu.Lock()
	s.started = time.Now()
	s.mu.Unlock()
	native := s.native.Duration()
	type ev struct {
		at   time.Time
		feed *Feed
		row  int
		n, k int
	}
	idx := make(map[*Feed]int, len(s.feeds))
	first := s.cfg.Start.Truncate(native)
	for _, f := range s.feeds {
		idx[f] = f.rowIndex(first)
	}
	var batch []ev
	for minute := first; minute.Before(s.end); minute = minute.Add(native) {
		batch = batch[:0]
		for _, f := range s.feeds {
			i := idx[f]
			if i >= len(f.Rows) || !f.Rows[i].Start.Equal(minute) {
				continue
			}
			idx[f] = i + 1
			k := tradesPerRow(f.Rows[i], s.cfg.MaxUpdatesPerCandle)
			for n := 1; n <= k; n++ {
				// A replay that starts mid-interval has already seen the
				// trades before its start.
				if at := tradeTime(f.Rows[i], native, n-1, k); !at.Before(s.cfg.Start) {
					batch = append(batch, ev{at, f, i, n, k})
				}
			}
		}
		sort.SliceStable(batch, func(a, b int) bool { return batch[a].at.Before(batch[b].at) })
		for _, e := range batch {
			if err := s.waitUntil(ctx, e.at); err != nil {
				return nil
			}
			s.emit(ctx, e.feed, e.at)
		}
	}
	s.mu.Lock()
	s.cursor = s.end
	s.mu.Unlock()
	s.log.Info("krakensim: recording replayed to its end", "end", s.end)
	<-ctx.Done()
	return nil
}

func (s *Server) waitUntil(ctx context.Context, at time.Time) error {
	if s.cfg.Speed == 0 {
		s.mu.Lock()
		s.cursor = at
		s.mu.Unlock()
		return ctx.Err()
	}
	wall := s.started.Add(time.Duration(float64(at.Sub(s.cfg.Start)) / s.cfg.Speed))
	if d := time.Until(wall); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}

// emit sends the running candles of feed, as of data time at, to every
// subscriber.
func (s *Server) emit(ctx context.Context, f *Feed, at time.Time) {
	s.mu.Lock()
	online := s.status == "online"
	s.mu.Unlock()
	if !online {
		return
	}
	for _, c := range s.connList() {
		iv, ok := c.subscribed(f.Symbol)
		if !ok {
			continue
		}
		start := iv.Floor(at)
		b := f.bar(start, iv, at, s.cfg.MaxUpdatesPerCandle)
		if b.empty {
			continue
		}
		frame := s.ohlcFrame("update", f.Symbol, iv, []candle{b}, at)
		c.sendData(ctx, frame)
	}
}

type wireCandle struct {
	Symbol        string  `json:"symbol"`
	Open          float64 `json:"open"`
	High          float64 `json:"high"`
	Low           float64 `json:"low"`
	Close         float64 `json:"close"`
	Trades        int64   `json:"trades"`
	Volume        float64 `json:"volume"`
	VWAP          float64 `json:"vwap"`
	IntervalBegin string  `json:"interval_begin"`
	Interval      int     `json:"interval"`
	Timestamp     string  `json:"timestamp"`
}

func (s *Server) ohlcFrame(typ, symbol string, iv streams.Interval, bars []candle, at time.Time) []byte {
	data := make([]wireCandle, len(bars))
	for i, b := range bars {
		begin := b.start.Add(s.shift)
		data[i] = wireCandle{Symbol: symbol, Open: b.open, High: b.high, Low: b.low, Close: b.close,
			Trades: b.trades, Volume: b.volume, VWAP: b.vwap,
			IntervalBegin: begin.Format("2006-01-02T15:04:05.000000000Z"), Interval: iv.Minutes(),
			Timestamp: begin.Add(iv.Duration()).Format("2006-01-02T15:04:05.000000Z")}
	}
	out, _ := json.Marshal(struct {
		Channel   string       `json:"channel"`
		Type      string       `json:"type"`
		Timestamp string       `json:"timestamp"`
		Data      []wireCandle `json:"data"`
	}{"ohlc", typ, at.Add(s.shift).Format(time.RFC3339Nano), data})
	return out
}

func statusFrame(system string, id uint64) []byte {
	return fmt.Appendf(nil, `{"channel":"status","type":"update","data":[{"api_version":"v2","connection_id":%d,"system":%q,"version":"2.0.10"}]}`, id, system)
}

// ServeHTTP serves the WebSocket at /v2 (and /) and REST under /0/public/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/0/public/OHLC":
		s.serveOHLC(w, r)
	case "/0/public/AssetPairs":
		s.serveAssetPairs(w, r)
	case "/0/public/Ticker":
		s.serveTicker(w, r)
	case "/v2", "/":
		s.serveWS(w, r)
	default:
		restError(w, "EGeneral:Unknown method")
	}
}

func restError(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"error":[%q]}`, msg)
}

func restResult(w http.ResponseWriter, result any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Error  []string `json:"error"`
		Result any      `json:"result"`
	}{[]string{}, result})
}

func (s *Server) restLimited() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults.restRate > 0 {
		s.faults.restRate--
		return true
	}
	return false
}

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func (s *Server) serveOHLC(w http.ResponseWriter, r *http.Request) {
	if s.restLimited() {
		restError(w, "EGeneral:Too many requests")
		return
	}
	q := r.URL.Query()
	f := s.byPair[q.Get("pair")]
	if f == nil {
		restError(w, "EQuery:Unknown asset pair")
		return
	}
	iv := streams.Interval1m
	if v := q.Get("interval"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			restError(w, "EGeneral:Invalid arguments")
			return
		}
		if iv, err = streams.IntervalFromMinutes(n); err != nil || iv.Minutes()%s.native.Minutes() != 0 || iv > streams.Interval1d {
			restError(w, "EGeneral:Invalid arguments")
			return
		}
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			restError(w, "EGeneral:Invalid arguments:since")
			return
		}
		since = time.Unix(n, 0).Add(-s.shift)
	}
	now := s.now()
	cur := iv.Floor(now)
	d := iv.Duration()
	first := cur.Add(-(720 - 1) * d)
	rows := make([][]any, 0, 720)
	var prev float64
	for t := first; !t.After(cur); t = t.Add(d) {
		b := f.bar(t, iv, now, s.cfg.MaxUpdatesPerCandle)
		if b.empty {
			if prev == 0 {
				prev = f.prevClose(t)
			}
			if prev == 0 {
				continue
			}
			b = candle{start: t, open: prev, high: prev, low: prev, close: prev}
		}
		prev = b.close
		if !since.IsZero() && !t.After(since) {
			continue
		}
		vwap := fmtNum(b.vwap)
		if b.trades == 0 {
			vwap = "0.0"
		}
		rows = append(rows, []any{t.Add(s.shift).Unix(), fmtNum(b.open), fmtNum(b.high), fmtNum(b.low), fmtNum(b.close),
			vwap, strconv.FormatFloat(b.volume, 'f', 8, 64), b.trades})
	}
	restResult(w, map[string]any{f.PairKey: rows, "last": cur.Add(-d).Add(s.shift).Unix()})
}

func (s *Server) serveAssetPairs(w http.ResponseWriter, r *http.Request) {
	if s.restLimited() {
		restError(w, "EGeneral:Too many requests")
		return
	}
	out := map[string]any{}
	for _, f := range s.feeds {
		out[f.PairKey] = map[string]any{"altname": f.Altname, "wsname": f.WSName, "aclass_base": "currency",
			"base": f.Base, "aclass_quote": "currency", "quote": f.Quote, "lot": "unit", "pair_decimals": 1,
			"lot_decimals": 8, "status": "online", "ordermin": "0.0001", "costmin": "0.5", "tick_size": "0.1"}
	}
	restResult(w, out)
}

func (s *Server) serveTicker(w http.ResponseWriter, r *http.Request) {
	if s.restLimited() {
		restError(w, "EGeneral:Too many requests")
		return
	}
	f := s.byPair[r.URL.Query().Get("pair")]
	if f == nil {
		restError(w, "EQuery:Unknown asset pair")
		return
	}
	now := s.now()
	day := f.bar(now.Truncate(24*time.Hour), streams.Interval1d, now, s.cfg.MaxUpdatesPerCandle)
	last := f.prevClose(now)
	if !day.empty {
		last = day.close
	}
	p := fmtNum(last)
	restResult(w, map[string]any{f.PairKey: map[string]any{
		"a": []string{p, "1", "1.000"}, "b": []string{p, "1", "1.000"}, "c": []string{p, "0.00100000"},
		"v": []string{fmtNum(day.volume), fmtNum(day.volume)}, "p": []string{fmtNum(day.vwap), fmtNum(day.vwap)},
		"t": []int64{day.trades, day.trades}, "l": []string{fmtNum(day.low), fmtNum(day.low)},
		"h": []string{fmtNum(day.high), fmtNum(day.high)}, "o": fmtNum(day.open)}})
}
