// Package loadtest owns the load generator for a running gateway: N
// websocket clients on K channels fed with M events/s through the real
// streams (ws), and concurrent keep-alive REST clients (rest). It reports
// what the clients saw (delivered/s, delay from publish time, closes by
// code) and what the gateway spent (memory per connection and CPU, read
// from its /metrics). It refuses any target that is not on loopback and
// stops by itself.
package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"cryptostream/streams"
)

// Publisher stores events in the streams without waiting for each one's
// ack; jetstream.JetStream is one.
type Publisher interface {
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// pending is a published tick waiting for its PubAck.
type pending struct {
	f   jetstream.PubAckFuture
	at  int64 // publish time, unix nanoseconds
	log *seqLog
}

// WSConfig is one websocket scenario.
type WSConfig struct {
	// URL is the gateway's base URL (http://127.0.0.1:8080).
	URL string
	// MetricsURL is where the gateway's /metrics are; empty: URL/metrics.
	MetricsURL string
	Token      string
	Clients    int
	// Busy is the symbol every client follows; Extra the symbols every
	// ExtraEvery-th client follows too (ticks channels).
	Busy       string
	Extra      []string
	ExtraEvery int
	// Rate is ticks/s on the busy channel, ExtraRate on each extra one.
	Rate, ExtraRate float64
	// Slow clients subscribe to every channel and never read.
	Slow int
	// Warmup publishes without measuring; Duration measures; Drain waits
	// for the last events.
	Warmup, Duration, Drain time.Duration
	// DialConcurrency bounds the handshakes in flight.
	DialConcurrency int
	// Resumers are clients beside the others, on the busy ticks and on
	// candles of ResumeSymbol (CandleRate candles/s, distinct synthetic
	// bars), that each drop once during the window and resume with since.
	Resumers     int
	ResumeSymbol string
	CandleRate   float64
	// PollGap, when positive, is how long a raw reader's epoll loop
	// sleeps after a poll that found few sockets ready (rawread_linux.go):
	// less of the generator's CPU, later reads.
	PollGap time.Duration
}

// WSResult is what a scenario measured.
type WSResult struct {
	Clients, Connected     int
	Channels               int
	EventsPublished        int     // in the measured window
	Offered                int64   // deliveries owed for those events
	Delivered              int64   // of those, received by a client
	DeliveredPerSec        float64 // Delivered over the window
	P50, P99, Max          time.Duration
	ClosedHealthy          int            // healthy clients the server closed
	Closes                 map[string]int // every close seen, by code
	SlowClosed             int            // slow clients closed with 4008
	ServerSlowCloses       float64        // the gateway's slow-close counter, delta
	ServerRSSPerConn       float64        // bytes, connected and idle
	ServerRSSPerConnLoaded float64        // bytes, at the end of the window
	ServerHeapPerConn      float64        // Go heap and stacks in use, bytes, connected and idle
	ServerCPU              float64        // cores used during the window
	ServerGoroutines       float64
	ServerFramesPerWrite   float64       // frames the gateway's writers carried per socket write
	ServerFlushRound       time.Duration // the mean round of the gateway's flushers (with a write delay)
	ServerFlushRoundP99    time.Duration // from the round histogram's buckets
	ServerWritesPerSec     float64       // socket writes the gateway made per second
	// ServerCPUPerMsg and LoadgenCPUPerMsg are CPU seconds per delivered
	// message: on a machine shared with other work they vary less than
	// the delays and the rate.
	ServerCPUPerMsg, LoadgenCPUPerMsg float64
	LoadgenCPU                        float64 // cores the load generator used
	// Stages: where the gateway's part of the delay went, by stage.
	Stages []StageDelay
	Resume ResumeResult
	// SlowDrains says, for each slow client, what its reads found once
	// it started reading: the close, how long it took to come, and the
	// frames in front of it.
	SlowDrains []string
}

func (r WSResult) String() string {
	codes := make([]string, 0, len(r.Closes))
	for c, n := range r.Closes {
		codes = append(codes, fmt.Sprintf("%s:%d", c, n))
	}
	slices.Sort(codes)
	return fmt.Sprintf(`clients            %d connected of %d, %d channels
events published   %d in the window (%d deliveries owed)
delivered          %d (%.3f of owed), %.0f msg/s
delay              p50 %s  p99 %s  max %s
closes             %v (healthy clients closed: %d; slow clients closed with 4008: %d; server slow-close counter +%.0f)
slow clients read  %s
server memory      %.1f KiB/conn idle, %.1f KiB/conn under load (RSS delta over the clients); Go heap+stacks in use %.1f KiB/conn idle
server cpu         %.2f cores, %.2f µs per delivered message, %.0f goroutines
server writes      %.0f writes/s, %.2f frames per write, flush round mean %s p99 %s
loadgen cpu        %.2f cores, %.2f µs per delivered message
gateway stages     %s (p50/p99 from the gateway's histograms over the window)
resume             %d clients, %d resumed with since in the window; %d candles owed, %d missing, %d duplicated, %d still on the way; %d gap notices; errors %v`,
		r.Connected, r.Clients, r.Channels, r.EventsPublished, r.Offered, r.Delivered, float64(r.Delivered)/max(1, float64(r.Offered)), r.DeliveredPerSec,
		r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond),
		codes, r.ClosedHealthy, r.SlowClosed, r.ServerSlowCloses, strings.Join(r.SlowDrains, "; "),
		r.ServerRSSPerConn/1024, r.ServerRSSPerConnLoaded/1024, r.ServerHeapPerConn/1024, r.ServerCPU, r.ServerCPUPerMsg*1e6, r.ServerGoroutines,
		r.ServerWritesPerSec, r.ServerFramesPerWrite, r.ServerFlushRound.Round(10*time.Microsecond), r.ServerFlushRoundP99.Round(10*time.Microsecond),
		r.LoadgenCPU, r.LoadgenCPUPerMsg*1e6, stagesString(r.Stages),
		r.Resume.Clients, r.Resume.Resumed, r.Resume.Owed, r.Resume.Missing, r.Resume.Duplicates, r.Resume.Late, r.Resume.GapFrames, r.Resume.Errors)
}

func stagesString(ss []StageDelay) string {
	parts := make([]string, 0, len(ss))
	for _, s := range ss {
		parts = append(parts, fmt.Sprintf("%s %s/%s", s.Stage, s.P50.Round(10*time.Microsecond), s.P99.Round(10*time.Microsecond)))
	}
	return strings.Join(parts, ", ")
}

// CheckLoopback refuses a URL whose host is not a loopback address: the
// load generator never sends to anything else.
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("loadtest: %q: %w", raw, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("loadtest: %q is not a loopback address; the load generator only targets loopback", raw)
	}
	return nil
}

type recv struct {
	seq uint64
	at  int64 // unix nanoseconds
}

type wsClient struct {
	conn  *websocket.Conn
	slow  bool
	got   []recv
	close string // "" while open
	// A slow client's drain: how long from its first read to the close,
	// and how many bytes of frames it found in front of the close.
	drainTook  time.Duration
	drainBytes int64
	// raw: read by the epoll loops (rawread_linux.go) rather than
	// gorilla; left is what its subscription read past the last answer.
	raw   bool
	left  []byte
	rawFD int
}

// DefaultResumeSymbol carries the resumers' candles: a symbol of its own,
// so that the synthetic bars never land in a real series.
const DefaultResumeSymbol = "LOADTEST/USD"

func channelOf(sym string) string { return "ticks:" + streams.AssetKey(sym) }

// RunWS runs one websocket scenario against a running gateway, publishing
// through pub. It returns when the scenario is over.
func RunWS(ctx context.Context, cfg WSConfig, pub Publisher) (WSResult, error) {
	if err := CheckLoopback(cfg.URL); err != nil {
		return WSResult{}, err
	}
	if cfg.MetricsURL == "" {
		cfg.MetricsURL = cfg.URL + "/metrics"
	}
	if err := CheckLoopback(cfg.MetricsURL); err != nil {
		return WSResult{}, err
	}
	if cfg.DialConcurrency <= 0 {
		cfg.DialConcurrency = 64
	}
	if cfg.ExtraEvery <= 0 {
		cfg.ExtraEvery = 10
	}
	res := WSResult{Clients: cfg.Clients, Channels: 1 + len(cfg.Extra), Closes: map[string]int{}}
	m0, err := scrape(ctx, cfg.MetricsURL)
	if err != nil {
		return res, err
	}
	busySeqs, extraSeqs := &seqLog{}, make([]*seqLog, len(cfg.Extra))
	for i := range extraSeqs {
		extraSeqs[i] = &seqLog{}
	}
	var trades atomic.Int64
	// Ticks go out asynchronously: a publish that waited for its PubAck
	// would cap the rate at one round trip per tick, and on a busy machine
	// the round trip is longer than the gap between two ticks. The publish
	// time is taken before each publish and paired with the sequence its
	// PubAck brings back.
	acks := make(chan pending, 4096)
	var ackErr error
	acksDone := make(chan struct{})
	go func() {
		defer close(acksDone)
		for p := range acks {
			select {
			case ack := <-p.f.Ok():
				if ack.Duplicate && ackErr == nil {
					ackErr = fmt.Errorf("event stored already (seq %d): another run in the same minute?", ack.Sequence)
				}
				p.log.add(ack.Sequence, p.at)
			case err := <-p.f.Err():
				if ackErr == nil {
					ackErr = err
				}
			case <-time.After(30 * time.Second):
				if ackErr == nil {
					ackErr = errors.New("no PubAck within 30s")
				}
			}
		}
	}()
	// Candles are bars a million minutes back, one minute apart, so that
	// each has its own message id.
	candleBase := time.Now().UTC().Truncate(time.Minute).Add(-1e6 * time.Minute)
	var nCandles atomic.Int64
	publishOne := func(sym string, log *seqLog, candle bool) error {
		n := trades.Add(1)
		now := time.Now()
		var ev streams.Event = &streams.Tick{Candle: streams.Candle{Symbol: sym, Interval: streams.Interval1m, Start: now.UTC().Truncate(time.Minute),
			Open: 100, High: 101, Low: 99, Close: 100.5, Volume: float64(n), Trades: n, Quality: streams.QualityLive}, ReceivedAt: now.UTC()}
		if candle {
			ev = &streams.Candle{Symbol: sym, Interval: streams.Interval1m, Start: candleBase.Add(time.Duration(nCandles.Add(1)) * time.Minute),
				Open: 100, High: 101, Low: 99, Close: 100.5, VWAP: 100.2, Volume: 1, Trades: 1, Quality: streams.QualityLive}
		}
		msg, err := streams.NewMsg(ev)
		if err != nil {
			return err
		}
		f, err := pub.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("publish %s: %w", msg.Subject, err)
		}
		acks <- pending{f: f, at: now.UnixNano(), log: log}
		return nil
	}

	wsURL := "ws" + cfg.URL[len("http"):] + "/ws"
	clients := make([]*wsClient, cfg.Clients+cfg.Slow)
	var subsBusy, subsExtra int
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.DialConcurrency)
	for i := range clients {
		slow := i >= cfg.Clients
		var chans []string
		chans = append(chans, channelOf(cfg.Busy))
		// A slow client follows every channel: it fills its socket
		// sooner.
		if slow || i%cfg.ExtraEvery == 0 {
			for _, s := range cfg.Extra {
				chans = append(chans, channelOf(s))
			}
			if !slow {
				subsExtra++
			}
		}
		if !slow {
			subsBusy++
		}
		g.Go(func() error {
			var c *wsClient
			var err error
			if slow || !rawReading {
				c, err = dial(gctx, wsURL, cfg.Token, chans, slow)
			} else {
				c, err = dialRaw(gctx, wsURL, cfg.Token, chans)
			}
			if err != nil {
				return fmt.Errorf("loadtest: client %d: %w", i, err)
			}
			clients[i] = c
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		for _, c := range clients {
			if c != nil {
				_ = c.conn.Close()
			}
		}
		return res, err
	}
	defer func() {
		for _, c := range clients {
			_ = c.conn.Close()
		}
	}()
	res.Connected = len(clients)
	if cfg.ResumeSymbol == "" {
		cfg.ResumeSymbol = DefaultResumeSymbol
	}
	if cfg.CandleRate <= 0 {
		cfg.CandleRate = 2
	}
	resumers := make([]*resumer, cfg.Resumers)
	candleSeqs := &seqLog{}
	for i := range resumers {
		r := &resumer{url: wsURL, token: cfg.Token, chans: []string{channelOf(cfg.Busy), candlesOf(cfg.ResumeSymbol)}, candles: candlesOf(cfg.ResumeSymbol)}
		c, err := dial(ctx, wsURL, cfg.Token, r.chans, false)
		if err != nil {
			return res, fmt.Errorf("loadtest: resumer %d: %w", i, err)
		}
		r.conn = c.conn
		resumers[i] = r
	}
	var rwg sync.WaitGroup
	defer func() {
		rwg.Wait()
		for _, r := range resumers {
			_ = r.conn.Close()
		}
	}()
	res.Resume.Clients = len(resumers)
	m1, err := scrape(ctx, cfg.MetricsURL)
	if err != nil {
		return res, err
	}
	res.ServerRSSPerConn = (m1["process_resident_memory_bytes"] - m0["process_resident_memory_bytes"]) / float64(len(clients))
	inuse := func(m map[string]float64) float64 {
		return m["go_memstats_heap_inuse_bytes"] + m["go_memstats_stack_inuse_bytes"]
	}
	res.ServerHeapPerConn = (inuse(m1) - inuse(m0)) / float64(len(clients))

	// Readers: every healthy client reads and notes (seq, time) of each
	// event; slow clients read nothing until the end.
	var wg sync.WaitGroup
	stopRead := make(chan struct{})
	var raw *rawReaders
	if rawReading {
		if raw, err = newRawReaders(runtime.GOMAXPROCS(0), cfg.PollGap); err != nil {
			return res, err
		}
		defer raw.close()
		for _, c := range clients {
			if c.raw {
				if err := raw.add(c, c.left); err != nil {
					return res, err
				}
				c.left = nil
			}
		}
		raw.start()
	}
	for _, c := range clients {
		if c.slow || c.raw {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.read(stopRead)
		}()
	}

	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	var windowStart, windowEnd atomic.Int64
	pg, pgctx := errgroup.WithContext(pctx)
	pace := func(rate float64, sym string, log *seqLog, candle bool) {
		if rate <= 0 {
			return
		}
		pg.Go(func() error {
			every := time.Duration(float64(time.Second) / rate)
			next := time.Now()
			for {
				next = next.Add(every)
				if d := time.Until(next); d > 0 {
					select {
					case <-time.After(d):
					case <-pgctx.Done():
						return nil
					}
				}
				if pgctx.Err() != nil {
					return nil
				}
				if err := publishOne(sym, log, candle); err != nil && pgctx.Err() == nil {
					return err
				}
			}
		})
	}
	pace(cfg.Rate, cfg.Busy, busySeqs, false)
	for i, s := range cfg.Extra {
		pace(cfg.ExtraRate, s, extraSeqs[i], false)
	}
	if len(resumers) > 0 {
		pace(cfg.CandleRate, cfg.ResumeSymbol, candleSeqs, true)
	}
	// The slow clients read once the gateway has counted them slow: a
	// client gets WriteTimeout from then to take its close frame.
	slowDone := make(chan struct{})
	var slowWG sync.WaitGroup
	if cfg.Slow > 0 {
		slowWG.Add(1)
		go func() {
			defer slowWG.Done()
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
				case <-slowDone:
				}
				m, err := scrape(ctx, cfg.MetricsURL)
				counted := err == nil && m["cryptostream_gateway_ws_slow_closes_total"]-m0["cryptostream_gateway_ws_slow_closes_total"] >= float64(cfg.Slow)
				select {
				case <-slowDone:
					counted = true
				default:
				}
				if counted {
					break
				}
			}
			var sg sync.WaitGroup
			for _, c := range clients {
				if c.slow {
					sg.Add(1)
					go func() { defer sg.Done(); c.drainToClose(15 * time.Second) }()
				}
			}
			sg.Wait()
		}()
	}
	cpu0, mStart := loadgenCPU(), map[string]float64{}
	timer := time.NewTimer(cfg.Warmup)
	select {
	case <-timer.C:
	case <-ctx.Done():
		return res, ctx.Err()
	}
	windowStart.Store(time.Now().UnixNano())
	// Each resumer drops at its own moment of the window.
	for i, r := range resumers {
		dropAt := time.Now().Add(cfg.Duration * time.Duration(i+1) / time.Duration(len(resumers)+1))
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			r.run(ctx, dropAt, stopRead)
		}()
	}
	if mStart, err = scrape(ctx, cfg.MetricsURL); err != nil {
		return res, err
	}
	cpu0 = loadgenCPU()
	timer.Reset(cfg.Duration)
	select {
	case <-timer.C:
	case <-ctx.Done():
		return res, ctx.Err()
	}
	windowEnd.Store(time.Now().UnixNano())
	mEnd, err := scrape(ctx, cfg.MetricsURL)
	if err != nil {
		return res, err
	}
	cpu1 := loadgenCPU()
	pcancel()
	perr := pg.Wait()
	close(acks)
	<-acksDone
	if err := errors.Join(perr, ackErr); err != nil {
		return res, fmt.Errorf("loadtest: publish: %w", err)
	}
	time.Sleep(cfg.Drain)
	close(stopRead)
	rwg.Wait()
	stored := candleSeqs.storedSeqs()
	for _, r := range resumers {
		r.check(stored, &res.Resume)
	}
	if raw != nil {
		raw.stopAndWait()
	}
	for _, c := range clients {
		if !c.slow && !c.raw {
			_ = c.conn.SetReadDeadline(time.Now())
		}
	}
	wg.Wait()
	// Slow clients not yet counted read now: what they find is the close.
	close(slowDone)
	slowWG.Wait()
	mFinal, err := scrape(ctx, cfg.MetricsURL)
	if err != nil {
		return res, err
	}

	secs := float64(windowEnd.Load()-windowStart.Load()) / 1e9
	res.ServerCPU = (mEnd["process_cpu_seconds_total"] - mStart["process_cpu_seconds_total"]) / secs
	res.ServerGoroutines = mEnd["go_goroutines"]
	if w := mEnd["cryptostream_gateway_ws_writes_total"] - mStart["cryptostream_gateway_ws_writes_total"]; w > 0 {
		res.ServerFramesPerWrite = (mEnd["cryptostream_gateway_ws_frames_total"] - mStart["cryptostream_gateway_ws_frames_total"]) / w
		res.ServerWritesPerSec = w / secs
	}
	if n := mEnd["cryptostream_gateway_ws_flush_round_seconds_count"] - mStart["cryptostream_gateway_ws_flush_round_seconds_count"]; n > 0 {
		res.ServerFlushRound = time.Duration((mEnd["cryptostream_gateway_ws_flush_round_seconds_sum"] - mStart["cryptostream_gateway_ws_flush_round_seconds_sum"]) / n * 1e9)
		_, _, res.ServerFlushRoundP99 = histQuantiles(mStart, mEnd, roundBucket+`le="`)
	}
	res.ServerRSSPerConnLoaded = (mEnd["process_resident_memory_bytes"] - m0["process_resident_memory_bytes"]) / float64(len(clients))
	res.ServerSlowCloses = mFinal["cryptostream_gateway_ws_slow_closes_total"] - m0["cryptostream_gateway_ws_slow_closes_total"]
	res.LoadgenCPU = (cpu1 - cpu0) / secs
	res.Stages = stageDelays(mStart, mEnd)

	// The measured events are those published inside the window.
	ws, we := windowStart.Load(), windowEnd.Load()
	pubAt := map[uint64]int64{}
	busyIn := busySeqs.within(ws, we, pubAt)
	extraIn := 0
	for _, l := range extraSeqs {
		extraIn += l.within(ws, we, pubAt)
	}
	res.EventsPublished = busyIn + extraIn
	res.Offered = int64(busyIn)*int64(subsBusy) + int64(extraIn)*int64(subsExtra)
	var delays []int64
	for _, c := range clients {
		if c.slow {
			if c.close == "4008" {
				res.SlowClosed++
			}
			res.SlowDrains = append(res.SlowDrains, fmt.Sprintf("%s after %s behind %.1f KiB", c.close, c.drainTook.Round(time.Millisecond), float64(c.drainBytes)/1024))
		} else if c.close != "" {
			res.ClosedHealthy++
		}
		if c.close != "" {
			res.Closes[c.close]++
		}
		for _, r := range c.got {
			if at, ok := pubAt[r.seq]; ok {
				delays = append(delays, r.at-at)
			}
		}
	}
	res.Delivered = int64(len(delays))
	res.DeliveredPerSec = float64(res.Delivered) / secs
	if res.Delivered > 0 {
		res.ServerCPUPerMsg = res.ServerCPU * secs / float64(res.Delivered)
		res.LoadgenCPUPerMsg = res.LoadgenCPU * secs / float64(res.Delivered)
	}
	slices.Sort(delays)
	q := func(p float64) time.Duration {
		if len(delays) == 0 {
			return 0
		}
		return time.Duration(delays[min(len(delays)-1, int(p*float64(len(delays))))])
	}
	res.P50, res.P99, res.Max = q(0.50), q(0.99), q(1)
	return res, nil
}

// seqLog holds the stream sequence and publish time of each event of one
// channel.
type seqLog struct {
	mu   sync.Mutex
	seqs []uint64
	at   []int64
}

func (l *seqLog) add(seq uint64, at int64) {
	l.mu.Lock()
	l.seqs = append(l.seqs, seq)
	l.at = append(l.at, at)
	l.mu.Unlock()
}

func (l *seqLog) within(from, to int64, into map[uint64]int64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i, at := range l.at {
		if at >= from && at < to {
			into[l.seqs[i]] = at
			n++
		}
	}
	return n
}

// slowReadBuffer is a slow client's socket receive buffer.
const slowReadBuffer = 16 << 10

func dial(ctx context.Context, wsURL, token string, chans []string, slow bool) (*wsClient, error) {
	return dialWith(ctx, wsURL, token, chans, slow, nil)
}

// dialSince subscribes the last of chans with since, when given.
func dialSince(ctx context.Context, wsURL, token string, chans []string, since *uint64) (*wsClient, error) {
	return dialWith(ctx, wsURL, token, chans, false, since)
}

// dialRaw connects a client that the epoll loops will read: gorilla
// does the handshake, the subscriptions go over the bare socket.
func dialRaw(ctx context.Context, wsURL, token string, chans []string) (*wsClient, error) {
	c, err := dialWith(ctx, wsURL, token, nil, false, nil)
	if err != nil {
		return nil, err
	}
	left, err := subscribeRaw(ctx, c, chans)
	if err != nil {
		_ = c.conn.Close()
		return nil, err
	}
	c.raw, c.left = true, left
	return c, nil
}

func dialWith(ctx context.Context, wsURL, token string, chans []string, slow bool, since *uint64) (*wsClient, error) {
	d := websocket.Dialer{Subprotocols: []string{"bearer", token}, HandshakeTimeout: 30 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 512}
	if slow {
		// A small receive buffer, so that the slow client's socket is
		// full after a few seconds of frames, set before connect. It
		// was 4 KiB, set after the handshake: once the client started
		// reading, the gateway's kernel sent it about 4 KiB per
		// zero-window probe (a few tenths of a second each, backing
		// off), so the close frame behind ~100 KiB came after 7 s, or
		// after the client's 15 s bound (seen as a timeout) or the
		// gateway's write timeout (1006). With 16 KiB the close comes
		// within a tenth of a second (BENCHMARKS, "slow client").
		d.NetDialContext = (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, slowReadBuffer)
			}); err != nil {
				return err
			}
			return serr
		}}).DialContext
	}
	conn, resp, err := d.DialContext(ctx, wsURL, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: %w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := &wsClient{conn: conn, slow: slow}
	// Subscribe and wait for each answer (and the snapshot that follows).
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	for i, ch := range chans {
		req := map[string]any{"op": "subscribe", "channel": ch}
		if since != nil && i == len(chans)-1 {
			req["since"] = *since
		}
		if err := conn.WriteJSON(req); err != nil {
			_ = conn.Close()
			return nil, err
		}
		for {
			var f struct{ Type, Channel, Code, Message string }
			if err := conn.ReadJSON(&f); err != nil {
				_ = conn.Close()
				return nil, fmt.Errorf("subscribe %s: %w", ch, err)
			}
			if f.Type == "error" {
				_ = conn.Close()
				return nil, fmt.Errorf("subscribe %s: %s: %s", ch, f.Code, f.Message)
			}
			if f.Type == "subscribed" {
				break
			}
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	return c, nil
}

var seqKey = []byte(`"seq":`)

// read notes the sequence and arrival time of every event until stop.
func (c *wsClient) read(stop <-chan struct{}) {
	buf := make([]byte, 0, 1024)
	for {
		_, r, err := c.conn.NextReader()
		if err != nil {
			select {
			case <-stop:
			default:
				c.close = closeName(err)
			}
			return
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = slices.Grow(buf, cap(buf))
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				break
			}
		}
		now := time.Now().UnixNano()
		if !bytes.HasPrefix(buf, []byte(`{"type":"event"`)) || bytes.Contains(buf[:min(len(buf), 120)], []byte(`"snapshot":true`)) {
			continue
		}
		i := bytes.Index(buf, seqKey)
		if i < 0 {
			continue
		}
		rest := buf[i+len(seqKey):]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		seq, err := strconv.ParseUint(string(rest[:j]), 10, 64)
		if err != nil {
			continue
		}
		c.got = append(c.got, recv{seq: seq, at: now})
	}
}

func (c *wsClient) drainToClose(bound time.Duration) {
	start := time.Now()
	_ = c.conn.SetReadDeadline(start.Add(bound))
	for {
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			c.close = closeName(err)
			c.drainTook = time.Since(start)
			return
		}
		c.drainBytes += int64(len(b))
	}
}

func closeName(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return strconv.Itoa(ce.Code)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "eof"
}

// scrape reads the gateway's metrics in the text format, unlabelled
// series only (what the scenario needs) and the stage delay buckets, keyed
// by their whole series name with labels.
func scrape(ctx context.Context, u string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("loadtest: metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("loadtest: metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range bytes.Lines(b) {
		line = bytes.TrimSpace(line)
		// Of the labelled series only the two histograms' buckets are
		// kept, with their labels in the name.
		bucket := bytes.HasPrefix(line, []byte(stageBucket)) || bytes.HasPrefix(line, []byte(roundBucket))
		if len(line) == 0 || line[0] == '#' || bytes.IndexByte(line, '{') >= 0 && !bucket {
			continue
		}
		name, val, ok := bytes.Cut(line, []byte(" "))
		if i := bytes.LastIndexByte(line, ' '); bucket && i > 0 {
			name, val, ok = line[:i], line[i+1:], true
		}
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(string(bytes.TrimSpace(val)), 64); err == nil {
			out[string(name)] = v
		}
	}
	return out, nil
}

const (
	stageBucket = "cryptostream_gateway_ws_stage_seconds_bucket{"
	roundBucket = "cryptostream_gateway_ws_flush_round_seconds_bucket{"
)

// StageDelay is one stage's delay quantiles over the window, from the
// gateway's histogram (interpolated within its buckets).
type StageDelay struct {
	Stage    string
	Count    float64
	P50, P99 time.Duration
}

// gatewayStages are the stages of cryptostream_gateway_ws_stage_seconds in
// the order an event goes through them.
var gatewayStages = []string{"read", "inbox", "fanout", "queue", "write"}

// stageDelays reads the stage histograms' growth between two scrapes.
func stageDelays(m0, m1 map[string]float64) []StageDelay {
	var out []StageDelay
	for _, st := range gatewayStages {
		total, p50, p99 := histQuantiles(m0, m1, stageBucket+`stage="`+st+`",le="`)
		if total == 0 {
			continue
		}
		out = append(out, StageDelay{Stage: st, Count: total, P50: p50, P99: p99})
	}
	return out
}

// histQuantiles reads the growth of one histogram's buckets (those whose
// scraped name starts with prefix, up to the bound) between two scrapes:
// its count and its 50th and 99th percentiles, interpolated in a bucket.
func histQuantiles(m0, m1 map[string]float64, prefix string) (float64, time.Duration, time.Duration) {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for k, v := range m1 {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le, v - m0[k]})
	}
	if len(bs) == 0 {
		return 0, 0, 0
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmpFloat(a.le, b.le) })
	total := bs[len(bs)-1].n // +Inf
	q := func(p float64) time.Duration {
		want, lo, prev := p*total, 0.0, 0.0
		for _, b := range bs {
			if b.n >= want {
				if math.IsInf(b.le, 1) {
					return time.Duration(lo * 1e9)
				}
				frac := 0.0
				if b.n > prev {
					frac = (want - prev) / (b.n - prev)
				}
				return time.Duration((lo + frac*(b.le-lo)) * 1e9)
			}
			lo, prev = b.le, b.n
		}
		return time.Duration(lo * 1e9)
	}
	return total, q(0.5), q(0.99)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
