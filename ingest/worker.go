package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"cryptostream/ingest/krakenrest"
	"cryptostream/streams"
)

// Default endpoints: the real Kraken.
const (
	DefaultWSURL   = "wss://ws.kraken.com/v2"
	DefaultRESTURL = krakenrest.DefaultBaseURL
)

// Config tunes the worker. Zero values take the defaults in New.
type Config struct {
	WSURL     string
	RESTURL   string
	Intervals []streams.Interval
	// Grace is how long after a candle's end the timer waits before calling
	// it final without a later candle (default 5 s).
	Grace time.Duration
	// PingEvery is the application ping period (default 20 s; Kraken closes
	// a connection after about 60 s without client messages).
	PingEvery time.Duration
	// ReadTimeout reconnects a connection that delivered no frame at all
	// for this long (default 10 s; heartbeats come every second when idle).
	ReadTimeout time.Duration
	// SubscriptionTimeout resubscribes an acked subscription that delivered
	// no candle for this long (default twice the interval plus a minute).
	SubscriptionTimeout time.Duration
	// SubscribeBatch symbols per request (default 50) and SubscribePace
	// between requests (default 250 ms): bursts earn "Exceeded msg rate".
	SubscribeBatch int
	SubscribePace  time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential reconnect
	// backoff (defaults 1 s and 2 min); after maintenance the floor is
	// MaintenanceBackoff (default 5 s), as Kraken asks.
	BackoffMin         time.Duration
	BackoffMax         time.Duration
	MaintenanceBackoff time.Duration
	// RESTInterval spaces REST calls (default 1 s, Kraken's safe rate).
	RESTInterval time.Duration
	// HealRetry is the pause before healing again when REST has not yet
	// committed up to the stream (default 2 s); MaxHealAttempts bounds the
	// heals per session before a gap is left open (default 5).
	HealRetry       time.Duration
	MaxHealAttempts int
	Now             func() time.Time
}

// Sink stores what the ingester produces.
type Sink interface {
	// PublishCandle stores a final candle, once: a duplicate is success.
	PublishCandle(ctx context.Context, c streams.Candle) error
	// PublishTick publishes a running candle; losing one is harmless.
	PublishTick(ctx context.Context, t streams.Tick) error
	// LastCandle returns the newest stored candle of a series.
	LastCandle(ctx context.Context, iv streams.Interval, symbol string) (streams.Candle, bool, error)
}

// AssetWatcher reports the tracked symbols.
type AssetWatcher interface {
	// WatchAssets sends the whole set of tracked symbols at once and after
	// every change, until ctx ends.
	WatchAssets(ctx context.Context) (<-chan []string, error)
}

// REST is the part of Kraken's REST API the ingester uses.
type REST interface {
	OHLC(ctx context.Context, pair string, iv streams.Interval, since time.Time) (krakenrest.OHLCResult, error)
	AssetPairs(ctx context.Context) ([]krakenrest.Pair, error)
}

// Deps are the worker's collaborators.
type Deps struct {
	Sink     Sink
	Assets   AssetWatcher
	REST     REST // nil: a krakenrest.Client on Config.RESTURL
	Log      *slog.Logger
	Registry prometheus.Registerer
	Dialer   *websocket.Dialer
}

// Worker runs one connection per interval.
type Worker struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	m       *metrics
	limiter *rate.Limiter

	pairsMu sync.Mutex
	pairs   map[string]string // v2 symbol -> REST pair key

	connected atomic.Int32
	assets    *latest
}

// New validates cfg and builds a worker; it does no I/O.
func New(cfg Config, deps Deps) (*Worker, error) {
	if deps.Sink == nil || deps.Assets == nil {
		return nil, errors.New("ingest: a sink and an asset watcher are required")
	}
	if cfg.WSURL == "" {
		cfg.WSURL = DefaultWSURL
	}
	if cfg.RESTURL == "" {
		cfg.RESTURL = DefaultRESTURL
	}
	if len(cfg.Intervals) == 0 {
		cfg.Intervals = []streams.Interval{streams.Interval1m}
	}
	seen := map[streams.Interval]bool{}
	for _, iv := range cfg.Intervals {
		if !iv.Valid() || seen[iv] {
			return nil, fmt.Errorf("ingest: interval %d invalid or repeated", int(iv))
		}
		seen[iv] = true
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Grace, 5*time.Second)
	def(&cfg.PingEvery, 20*time.Second)
	def(&cfg.ReadTimeout, 10*time.Second)
	def(&cfg.SubscribePace, 250*time.Millisecond)
	def(&cfg.BackoffMin, time.Second)
	def(&cfg.BackoffMax, 2*time.Minute)
	def(&cfg.MaintenanceBackoff, 5*time.Second)
	def(&cfg.RESTInterval, time.Second)
	def(&cfg.HealRetry, 2*time.Second)
	if cfg.SubscribeBatch <= 0 {
		cfg.SubscribeBatch = 50
	}
	if cfg.MaxHealAttempts <= 0 {
		cfg.MaxHealAttempts = 5
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	if deps.REST == nil {
		deps.REST = &krakenrest.Client{BaseURL: cfg.RESTURL}
	}
	if deps.Dialer == nil {
		deps.Dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}
	}
	return &Worker{
		cfg: cfg, deps: deps, log: deps.Log.With("worker", "ingest"), m: newMetrics(deps.Registry),
		limiter: rate.NewLimiter(rate.Every(cfg.RESTInterval), 1),
		assets:  newLatest(),
	}, nil
}

// Ready is a readiness check: every interval's connection is up.
func (w *Worker) Ready(context.Context) error {
	if n := int(w.connected.Load()); n < len(w.cfg.Intervals) {
		return fmt.Errorf("ingest: %d of %d Kraken connections up", n, len(w.cfg.Intervals))
	}
	return nil
}

// Run connects and ingests until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	ch, err := w.deps.Assets.WatchAssets(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean stop
		}
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for set := range ch {
			w.log.Info("tracked assets", "symbols", set)
			w.assets.set(set)
		}
	})
	for _, iv := range w.cfg.Intervals {
		wg.Go(func() { w.runInterval(ctx, iv) })
	}
	wg.Wait()
	return nil
}

// latest holds the newest asset set and wakes whoever waits for a change.
type latest struct {
	mu      sync.Mutex
	v       []string
	known   bool
	changed chan struct{}
}

func newLatest() *latest { return &latest{changed: make(chan struct{})} }

func (l *latest) set(v []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.v, l.known = slices.Clone(v), true
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *latest) get() ([]string, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.v, l.known, l.changed
}

// errMaintenance ends a session when Kraken is not online.
var errMaintenance = errors.New("ingest: kraken not online")

func (w *Worker) runInterval(ctx context.Context, iv streams.Interval) {
	asm := NewAssembler(iv, w.cfg.Grace, w.cfg.MaxHealAttempts)
	seeded := map[string]bool{}
	log := w.log.With("interval", iv.String())
	failures := 0
	for ctx.Err() == nil {
		// Connect only once there is something to subscribe: Kraken sends
		// nothing (not even heartbeats) on a connection without one.
		if set, known, changed := w.assets.get(); !known || len(set) == 0 {
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
			continue
		}
		start := w.cfg.Now()
		err := w.session(ctx, iv, asm, seeded, log)
		asm.DropAll()
		if ctx.Err() != nil {
			return
		}
		w.m.reconnects.WithLabelValues(iv.String()).Inc()
		if w.cfg.Now().Sub(start) > time.Minute {
			failures = 0
		}
		failures++
		delay := backoff(w.cfg.BackoffMin, w.cfg.BackoffMax, failures)
		if errors.Is(err, errMaintenance) {
			delay = max(delay, w.cfg.MaintenanceBackoff)
		}
		log.Warn("kraken connection lost, reconnecting", "err", err, "in", delay, "attempt", failures)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// backoff is full-jitter exponential: a uniformly random wait up to
// min(max, min*2^n), never below min/2, so many clients that lost Kraken at
// once do not come back at once, and a flapping link stays far below the
// 150 connects per 10 minutes Cloudflare allows.
func backoff(lo, hi time.Duration, n int) time.Duration {
	ceil := lo
	for i := 1; i < n && ceil < hi; i++ {
		ceil *= 2
	}
	ceil = min(ceil, hi)
	return lo/2 + rand.N(ceil-lo/2+1)
}

type subState int

const (
	subQueued subState = iota
	subPending
	subAcked
	subFailed
)

var subStateNames = [...]string{"queued", "pending", "acked", "failed"}

type sub struct {
	state    subState
	since    time.Time // when the state was entered
	lastData time.Time
	retryAt  time.Time
}

type rawFrame struct {
	data []byte
	recv time.Time
}

type healResult struct {
	symbol string
	rows   []streams.Candle
	err    error
}

// session is one connection's life: dial, subscribe, read until it fails.
func (w *Worker) session(ctx context.Context, iv streams.Interval, asm *Assembler, seeded map[string]bool, log *slog.Logger) error {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	ws, _, err := w.deps.Dialer.DialContext(dctx, w.cfg.WSURL, nil)
	cancel()
	if err != nil {
		return fmt.Errorf("ingest: dial %s: %w", w.cfg.WSURL, err)
	}
	ws.SetReadLimit(8 << 20)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	defer ws.Close()
	w.connected.Add(1)
	defer w.connected.Add(-1)
	w.m.connected.WithLabelValues(iv.String()).Set(1)
	defer w.m.connected.WithLabelValues(iv.String()).Set(0)

	frames := make(chan rawFrame, 256)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case frames <- rawFrame{data, w.cfg.Now()}:
			case <-sctx.Done():
				return
			}
		}
	}()
	go func() { <-sctx.Done(); ws.Close() }()

	s := &session{w: w, iv: iv, ivs: iv.String(), asm: asm, ws: ws, log: log, subs: map[string]*sub{},
		heals: make(chan healResult, 16), seeded: seeded, healing: map[string]bool{}}
	defer s.reportSubs(true)
	now := w.cfg.Now()
	s.lastFrame, s.lastPing = now, now
	tick := time.NewTicker(min(w.cfg.SubscribePace, 250*time.Millisecond))
	defer tick.Stop()
	desired, _, changed := w.assets.get()
	s.reconcile(desired)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			return fmt.Errorf("ingest: read: %w", err)
		case f := <-frames:
			if err := s.handle(sctx, f); err != nil {
				return err
			}
		case h := <-s.heals:
			if err := s.applyHeal(sctx, h); err != nil {
				return err
			}
		case <-changed:
			desired, _, changed = w.assets.get()
			s.reconcile(desired)
		case <-tick.C:
			if err := s.onTick(sctx); err != nil {
				return err
			}
		}
	}
}

type session struct {
	w         *Worker
	iv        streams.Interval
	ivs       string
	asm       *Assembler
	ws        *websocket.Conn
	log       *slog.Logger
	subs      map[string]*sub
	heals     chan healResult
	seeded    map[string]bool
	healing   map[string]bool
	lastFrame time.Time
	lastPing  time.Time
	lastSub   time.Time
	online    bool
	reqID     int64
}

func (s *session) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.ws.SetWriteDeadline(s.w.cfg.Now().Add(10 * time.Second))
	if err := s.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("ingest: write: %w", err)
	}
	return nil
}

// reconcile queues new symbols and unsubscribes removed ones.
func (s *session) reconcile(desired []string) {
	want := make(map[string]bool, len(desired))
	for _, sym := range desired {
		want[sym] = true
		if _, ok := s.subs[sym]; !ok {
			s.subs[sym] = &sub{state: subQueued, since: s.w.cfg.Now()}
			s.reportSubs(false)
		}
	}
	for sym, sb := range s.subs {
		if want[sym] {
			continue
		}
		if sb.state == subAcked || sb.state == subPending {
			s.reqID++
			if err := s.write(map[string]any{"method": "unsubscribe", "req_id": s.reqID,
				"params": map[string]any{"channel": "ohlc", "symbol": []string{sym}, "interval": s.iv.Minutes()}}); err != nil {
				s.log.Warn("unsubscribe", "symbol", sym, "err", err)
			}
		}
		s.asm.Drop(sym)
		delete(s.subs, sym)
		s.w.m.forget(s.iv, sym)
		s.log.Info("unsubscribed", "symbol", sym)
		s.reportSubs(false)
	}
}

func (s *session) reportSubs(closing bool) {
	counts := make([]int, len(subStateNames))
	if !closing {
		for _, sb := range s.subs {
			counts[sb.state]++
		}
	}
	for i, name := range subStateNames {
		s.w.m.subscriptions.WithLabelValues(s.ivs, name).Set(float64(counts[i]))
	}
}

func (s *session) setState(sym string, st subState) {
	if sb := s.subs[sym]; sb != nil {
		sb.state, sb.since = st, s.w.cfg.Now()
		s.reportSubs(false)
	}
}

func (s *session) onTick(ctx context.Context) error {
	now := s.w.cfg.Now()
	// Heartbeats only flow while something is subscribed; without a
	// subscription the pings keep the connection open.
	if len(s.subs) > 0 && now.Sub(s.lastFrame) > s.w.cfg.ReadTimeout {
		return fmt.Errorf("ingest: no frame for %s", now.Sub(s.lastFrame).Round(time.Millisecond))
	}
	if now.Sub(s.lastPing) >= s.w.cfg.PingEvery {
		s.reqID++
		s.lastPing = now
		if err := s.write(map[string]any{"method": "ping", "req_id": s.reqID}); err != nil {
			return err
		}
	}
	// Liveness per subscription: an ack with no data is resubscribed.
	limit := s.w.cfg.SubscriptionTimeout
	if limit <= 0 {
		limit = 2*s.iv.Duration() + time.Minute
	}
	for sym, sb := range s.subs {
		if sb.state != subAcked {
			continue
		}
		seen := sb.since
		if sb.lastData.After(seen) {
			seen = sb.lastData
		}
		if now.Sub(seen) > limit {
			s.log.Warn("subscription silent, resubscribing", "symbol", sym, "silent_for", now.Sub(seen).Round(time.Millisecond))
			s.w.m.silentResubscribes.WithLabelValues(s.ivs).Inc()
			s.reqID++
			if err := s.write(map[string]any{"method": "unsubscribe", "req_id": s.reqID,
				"params": map[string]any{"channel": "ohlc", "symbol": []string{sym}, "interval": s.iv.Minutes()}}); err != nil {
				return err
			}
			s.asm.Drop(sym)
			s.setState(sym, subQueued)
		}
	}
	s.w.m.refreshAges(s.iv, now)
	for _, e := range s.asm.Expire(now) {
		if err := s.publish(ctx, e, now); err != nil {
			return err
		}
	}
	return s.subscribeQueued(now)
}

// subscribeQueued sends one paced batch of queued symbols.
func (s *session) subscribeQueued(now time.Time) error {
	if !s.online || now.Sub(s.lastSub) < s.w.cfg.SubscribePace {
		return nil
	}
	var batch []string
	for sym, sb := range s.subs {
		if (sb.state == subQueued || sb.state == subFailed) && !now.Before(sb.retryAt) {
			batch = append(batch, sym)
		}
	}
	if len(batch) == 0 {
		return nil
	}
	slices.Sort(batch)
	batch = batch[:min(len(batch), s.w.cfg.SubscribeBatch)]
	s.reqID++
	s.lastSub = now
	if err := s.write(map[string]any{"method": "subscribe", "req_id": s.reqID,
		"params": map[string]any{"channel": "ohlc", "symbol": batch, "interval": s.iv.Minutes(), "snapshot": true}}); err != nil {
		return err
	}
	for _, sym := range batch {
		s.setState(sym, subPending)
	}
	return nil
}

func (s *session) rejected(reason RejectReason, err error) {
	s.w.m.rejected.WithLabelValues(string(reason)).Inc()
	s.log.Warn("rejected", "reason", reason, "err", err)
}

func (s *session) handle(ctx context.Context, raw rawFrame) error {
	s.lastFrame = raw.recv
	f, err := ParseFrame(raw.data)
	if err != nil {
		s.w.m.frames.WithLabelValues("rejected").Inc()
		s.rejected(ReasonOf(err), err)
		return nil
	}
	switch f.Kind {
	case KindStatus:
		s.w.m.frames.WithLabelValues("status").Inc()
		if f.System != "online" {
			return fmt.Errorf("%w: system %s", errMaintenance, f.System)
		}
		s.online = true
		s.asm.Frame(raw.recv, time.Time{})
	case KindHeartbeat, KindPong:
		s.w.m.frames.WithLabelValues("heartbeat").Inc()
		s.asm.Frame(raw.recv, time.Time{})
	case KindSubscribe:
		s.w.m.frames.WithLabelValues("ack").Inc()
		return s.onSubscribeAck(ctx, f)
	case KindUnsubscribe:
		s.w.m.frames.WithLabelValues("ack").Inc()
	case KindError:
		s.w.m.frames.WithLabelValues("error").Inc()
		s.rejected(ReasonMalformed, fmt.Errorf("%s failed: %s", f.Method, f.Error))
	case KindOHLC:
		s.w.m.frames.WithLabelValues("ohlc").Inc()
		s.asm.Frame(raw.recv, f.Sent)
		for _, err := range f.Rejected {
			s.rejected(ReasonOf(err), err)
		}
		for _, c := range f.Candles {
			e, err := s.asm.Update(c)
			if err != nil {
				s.rejected(ReasonOf(err), err)
				continue
			}
			if sb := s.subs[c.Symbol]; sb != nil {
				sb.lastData = raw.recv
			}
			if e.Tick {
				tick := streams.Tick{Candle: c, ReceivedAt: raw.recv}
				tick.Candle.Quality = streams.QualityLive
				if err := s.w.deps.Sink.PublishTick(ctx, tick); err != nil {
					s.w.m.tickErrors.Inc()
				} else {
					s.w.m.ticks.Inc()
				}
			}
			if err := s.publish(ctx, e, raw.recv); err != nil {
				return err
			}
			if e.Heal {
				s.startHeal(ctx, c.Symbol, s.w.cfg.HealRetry)
			}
		}
	default:
		s.w.m.frames.WithLabelValues("other").Inc()
	}
	return nil
}

func (s *session) onSubscribeAck(ctx context.Context, f Frame) error {
	if f.Success || f.Error == "Already subscribed" {
		sb := s.subs[f.Symbol]
		if sb == nil || sb.state == subAcked {
			return nil
		}
		s.setState(f.Symbol, subAcked)
		if !s.seeded[f.Symbol] {
			last, ok, err := s.w.deps.Sink.LastCandle(ctx, s.iv, f.Symbol)
			if err != nil {
				return fmt.Errorf("ingest: last stored %s %s: %w", s.ivs, f.Symbol, err)
			}
			if ok {
				s.asm.Seed(last)
			}
			s.seeded[f.Symbol] = true
		}
		if e := s.asm.Begin(f.Symbol); e.Heal {
			s.startHeal(ctx, f.Symbol, 0)
		}
		s.log.Info("subscribed", "symbol", f.Symbol)
		return nil
	}
	now := s.w.cfg.Now()
	targets := []string{f.Symbol}
	if f.Symbol == "" {
		targets = targets[:0]
		for sym, sb := range s.subs {
			if sb.state == subPending {
				targets = append(targets, sym)
			}
		}
	}
	if f.Error == "Exceeded msg rate" {
		s.rejected(ReasonRateLimited, fmt.Errorf("subscribe %v: %s", targets, f.Error))
		for _, sym := range targets {
			if sb := s.subs[sym]; sb != nil && sb.state == subPending {
				sb.retryAt = now.Add(4 * s.w.cfg.SubscribePace)
				s.setState(sym, subQueued)
			}
		}
		return nil
	}
	s.rejected(ReasonSubscribe, fmt.Errorf("subscribe %v: %s", targets, f.Error))
	for _, sym := range targets {
		if sb := s.subs[sym]; sb != nil && sb.state == subPending {
			// Kraken may refuse a pair for a while (maintenance of one
			// market); try again much later rather than never.
			sb.retryAt = now.Add(time.Minute)
			s.setState(sym, subFailed)
		}
	}
	return nil
}

// startHeal fetches REST OHLC for sym in the background after delay.
func (s *session) startHeal(ctx context.Context, sym string, delay time.Duration) {
	if s.healing[sym] {
		return
	}
	s.healing[sym] = true
	since := s.asm.SinceForHeal(sym)
	go func() {
		rows, err := s.w.heal(ctx, s.iv, sym, since, delay)
		select {
		case s.heals <- healResult{sym, rows, err}:
		case <-ctx.Done():
		}
	}()
}

func (s *session) applyHeal(ctx context.Context, h healResult) error {
	delete(s.healing, h.symbol)
	if h.err != nil {
		s.log.Warn("heal from REST failed", "symbol", h.symbol, "err", h.err)
	}
	e := s.asm.Healed(h.symbol, h.rows)
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

func (s *session) publish(ctx context.Context, e Emit, recv time.Time) error {
	if e.Gap {
		s.w.m.gapsUnhealed.WithLabelValues(s.ivs).Inc()
	}
	for _, c := range e.Final {
		c.Trace = c.Trace.Stamp("ingest", recv)
		if err := s.w.deps.Sink.PublishCandle(ctx, c); err != nil {
			return fmt.Errorf("ingest: publish candle %s: %w", c.MsgID(), err)
		}
		now := s.w.cfg.Now()
		s.w.m.candles.WithLabelValues(s.ivs, string(c.Quality)).Inc()
		if c.Quality == streams.QualityLive {
			s.w.m.publishLag.WithLabelValues(s.ivs).Observe(now.Sub(c.End()).Seconds())
			s.w.m.frameToStored.WithLabelValues(s.ivs).Observe(now.Sub(recv).Seconds())
		}
		s.w.m.observe(c)
	}
	return nil
}

// heal fetches the committed candles of sym after since from REST.
func (w *Worker) heal(ctx context.Context, iv streams.Interval, sym string, since time.Time, delay time.Duration) ([]streams.Candle, error) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	wait := w.cfg.HealRetry
	for attempt := 0; ; attempt++ {
		rows, err := w.fetch(ctx, iv, sym, since)
		if err == nil || ctx.Err() != nil || attempt >= 4 {
			return rows, err
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
			return nil, ctx.Err()
		}
		wait = min(2*wait, time.Minute)
	}
}

func (w *Worker) fetch(ctx context.Context, iv streams.Interval, sym string, since time.Time) ([]streams.Candle, error) {
	pair, err := w.pairFor(ctx, sym)
	if err != nil {
		return nil, err
	}
	if err := w.limiter.Wait(ctx); err != nil {
		return nil, err
	}
	res, err := w.deps.REST.OHLC(ctx, pair, iv, since)
	if err != nil {
		return nil, fmt.Errorf("ingest: heal %s %s: %w", iv, sym, err)
	}
	return RESTCandles(sym, iv, res.Committed(), streams.QualityBackfilled), nil
}

// RESTCandles turns REST rows into candles of one quality, dropping rows
// that fail validation.
func RESTCandles(sym string, iv streams.Interval, rows []krakenrest.Row, q streams.Quality) []streams.Candle {
	out := make([]streams.Candle, 0, len(rows))
	for _, r := range rows {
		c := streams.Candle{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: sym, Interval: iv, Start: r.Start,
			Open: r.Open, High: r.High, Low: r.Low, Close: r.Close, VWAP: r.VWAP, Volume: r.Volume, Trades: r.Trades, Quality: q}
		if IsFiller(c) {
			c.Quality = streams.QualityFilled
		} else if c.Validate() != nil {
			continue
		}
		out = append(out, c)
	}
	return out
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
