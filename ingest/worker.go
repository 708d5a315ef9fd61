package ingest

import (
	"context"
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
	"cryptostream/lease"
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
	// Leases, when set, runs the worker active/standby: it ingests only
	// while it holds the LeaseKey lease, so that of several instances one
	// publishes, and a standby takes over (healing the gap from REST)
	// within the lease TTL of the active one's death.
	Leases lease.Store
	// LeaseTTL is the lease's TTL (lease.DefaultTTL when zero).
	LeaseTTL time.Duration
	// OnActive, when set, is told when this instance becomes active and
	// when it has stopped ingesting after it was.
	OnActive func(active bool)
}

// LeaseKey is the ingester's lease in the leases bucket.
const LeaseKey = "ingest.active"

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
	// standby: the instance waits for the lease, and is ready so.
	standby atomic.Bool
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
	if w.standby.Load() {
		return nil
	}
	if n := int(w.connected.Load()); n < len(w.cfg.Intervals) {
		return fmt.Errorf("ingest: %d of %d Kraken connections up", n, len(w.cfg.Intervals))
	}
	return nil
}

// Run connects and ingests until ctx ends; with Deps.Leases, only while
// this instance is the active one.
func (w *Worker) Run(ctx context.Context) error {
	if w.deps.Leases == nil {
		return w.ingest(ctx)
	}
	w.standby.Store(true)
	return lease.Run(ctx, w.deps.Leases, lease.Config{Key: LeaseKey, TTL: w.deps.LeaseTTL, Log: w.log,
		OnActive: func(active bool) {
			w.standby.Store(!active)
			w.m.active.Set(map[bool]float64{true: 1}[active])
			if w.deps.OnActive != nil {
				w.deps.OnActive(active)
			}
		}}, w.ingest)
}

func (w *Worker) ingest(ctx context.Context) error {
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
