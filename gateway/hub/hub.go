// Package hub owns the gateway's websocket fan-out: authenticated
// connections, channel subscriptions, one JetStream ordered consumer per
// channel shared by every subscriber, snapshot and resume from the stream,
// and the slow-client policy.
//
// Protocol (JSON text frames). Client to server:
//
//	{"op":"auth","token":"<jwt>"}                       first message, unless the token came at upgrade; again later to extend
//	{"op":"subscribe","channel":"ticks:BTC-USD"}        snapshot (latest value) then live
//	{"op":"subscribe","channel":"ticks:BTC-USD","since":123}  everything after stream sequence 123, then live
//	{"op":"unsubscribe","channel":"ticks:BTC-USD"}
//
// Server to client:
//
//	{"type":"subscribed","channel":"...","seq":<last sequence before live>}
//	{"type":"event","channel":"...","seq":<stream sequence>,"snapshot":<bool>,"data":<the event as stored>}
//	{"type":"gap","channel":"...","from":<seq>,"to":<seq>}   a resume could not be served in full (the stream no longer holds it, or more than MaxBacklog): fetch it over REST
//	{"type":"unsubscribed","channel":"..."} / {"type":"error","code":"...","message":"..."}
//
// The token is given at upgrade as the subprotocol pair "bearer, <token>"
// (the server answers with "bearer"), in an Authorization header, or in the
// first message within AuthTimeout. Events of one channel arrive in stream
// order without duplicates; seq is what a reconnecting client passes back as
// since. A ticks channel (running-candle updates, each replacing the last)
// conflates: a client that is behind gets the newest tick rather than every
// one (the newest conflateDepth of those waiting for its socket), so its
// live seq may skip; a resume with since still replays every
// stored tick up to the seam. Other channels never skip: a client too far
// behind on them is closed with 4008. A snapshot or backlog is queued only
// while fewer than half a queue of its frames wait (catchUpRoom): a resume
// is paced by the client's reading, and only live frames count against
// QueueSize, so a client catching up has all of it for live frames.
//
// Subscribing to an asset that is not tracked, or to an interval the system
// does not run, is refused with an error frame (code not_tracked).
//
// Close codes: 1001 server shutting down; 4001 token expired or revoked
// (the account was deleted or disabled, or its password or role changed); 4003
// authentication failed, missing or not given within AuthTimeout; 4008
// client too slow (its bounded queue overflowed, or a frame waited longer
// than SlowAfter, or a write outlasted WriteTimeout; reconnect and resume
// with since). A client closed as slow gets a further WriteTimeout to take
// the rest of a frame cut short and the close frame; one that takes nothing
// in that time either is cut without a close frame (none can reach it).
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/gateway/auth"
	"cryptostream/streams"
)

// Close codes beyond the standard ones.
const (
	CloseTokenExpired = 4001
	CloseAuthFailed   = 4003
	CloseSlowClient   = 4008
)

// DefaultWriteDelay is the gateway's WriteDelay. At 10,000 clients it
// delivered 2 to 4 times what writing at once did, with a fifth to a half
// of the p99 delay, in every same-minute pair measured; 20 to 100 ms did
// not differ beyond the machine's noise, and the shortest adds the least
// delay on a machine that keeps up (BENCHMARKS.md, "Flusher rounds").
const DefaultWriteDelay = 25 * time.Millisecond

// Config tunes the hub. Zero values take the defaults.
type Config struct {
	// QueueSize bounds the live frames waiting for one client's socket;
	// a catch-up's frames have a bound of their own, half of it.
	QueueSize int
	// WriteDelay is the shortest time between the starts of a flusher's
	// rounds (flusher.go): each round writes what every client queued
	// since the last, in one write per client. At thousands of clients
	// the write system calls (on both ends of the socket) and the
	// wake-ups around them are most of the CPU. A round starts as soon as
	// frames are queued when the last one started at least WriteDelay
	// ago, so only a busy hub makes a frame wait, at most this much
	// longer. Zero writes every client's frames at once from its own
	// writer. The gateway runs DefaultWriteDelay.
	WriteDelay time.Duration
	// RingWrites makes the flushers send a batch of clients' frames per
	// io_uring_enter (flusher.go) instead of one writev per client; where
	// io_uring is not allowed they write with writev all the same. The
	// batch costs 0.65x the CPU per delivered message but measured a worse
	// p99 (its write stage's p99 30-90 ms against writev's 0.25 ms), so it
	// is opt-in: the gateway's --ws-io-uring.
	RingWrites bool
	// SlowAfter: a client whose oldest queued frame has waited this long is
	// closed as slow, before its socket write can time out.
	SlowAfter time.Duration
	// SendBuffer is each socket's kernel send buffer (SO_SNDBUF): it bounds
	// the kernel memory a client that stops reading can hold, and how much
	// it must leave unread before it is called slow. Negative keeps the
	// kernel's autotuned default (megabytes per socket).
	SendBuffer int
	// Intervals the system runs (the ingester's); channels on others are
	// refused. Empty means 1m.
	Intervals []streams.Interval
	// MaxPending bounds the live events held for a subscription while its
	// snapshot or backlog is being sent.
	MaxPending int
	// MaxBacklog bounds the events replayed for one resume.
	MaxBacklog int
	// MaxChannels a client may subscribe to.
	MaxChannels  int
	PingInterval time.Duration
	PongWait     time.Duration
	WriteTimeout time.Duration
	AuthTimeout  time.Duration
	// IOTimeout bounds each JetStream request.
	IOTimeout time.Duration
}

func (c *Config) defaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.QueueSize, 256)
	def(&c.MaxPending, 1024)
	def(&c.MaxBacklog, 10_000)
	def(&c.MaxChannels, 32)
	def(&c.SendBuffer, 64<<10)
	defd(&c.PingInterval, 25*time.Second)
	defd(&c.PongWait, 60*time.Second)
	defd(&c.WriteTimeout, 10*time.Second)
	defd(&c.AuthTimeout, 10*time.Second)
	defd(&c.IOTimeout, 5*time.Second)
	defd(&c.SlowAfter, min(5*time.Second, c.WriteTimeout/2))
	if len(c.Intervals) == 0 {
		c.Intervals = []streams.Interval{streams.Interval1m}
	}
}

// Source opens streams; jetstream.JetStream is one.
type Source interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// Deps are what the hub talks to.
type Deps struct {
	Source Source
	Verify func(token string) (auth.Claims, error)
	// Check re-decides whether an open connection's token still stands
	// for its account (Revalidate calls it); nil keeps every connection
	// until its token expires.
	Check func(ctx context.Context, c auth.Claims) error
	// Tracked reports whether a symbol is tracked (in the assets bucket);
	// nil accepts every symbol.
	Tracked func(ctx context.Context, symbol string) (bool, error)
	Metrics prometheus.Registerer
	Log     *slog.Logger
	Now     func() time.Time
}

// Hub fans stream events out to websocket clients.
type Hub struct {
	cfg      Config
	d        Deps
	log      *slog.Logger
	upgrader websocket.Upgrader
	m        hubMetrics

	mu     sync.Mutex
	topics map[string]*topic
	closed bool

	flushers  []*flusher
	flushOnce sync.Once
	flushStop chan struct{}
	fanouts   atomic.Int32 // fan-outs walking their subscribers now

	ids     atomic.Uint64
	nclient atomic.Int64
	clients [clientShards]clientShard
}

// clientShards splits the connected clients so that ten thousand
// connections and disconnections do not queue on one lock.
const clientShards = 32

type clientShard struct {
	mu sync.Mutex
	m  map[*client]struct{}
}

type hubMetrics struct {
	clients, topics                         prometheus.Gauge
	events, delivered, slow, backlog, nosub prometheus.Counter
	badMsgs, conflated, writes, frames      prometheus.Counter
	syscalls                                prometheus.Counter
	revoked                                 prometheus.Counter
	round                                   prometheus.Histogram
	// Where a live event's delay goes, stage by stage (stageBuckets):
	// read, the stream's store to the channel's consumer callback; inbox,
	// the callback to the fan-out taking it; fanout, the fan-out's walk
	// over every subscriber; queue, the fan-out taking a client's oldest
	// queued frame to the write that carries it (the walk up to that
	// client and the wait for a flusher round); write, the write call.
	stRead, stInbox, stFanout, stQueue, stWrite prometheus.Observer
}

// stageBuckets resolve a p99 around the 100 ms budget.
var stageBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .02, .03, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2, 5, 10}

// New builds a hub; it does no I/O.
func New(cfg Config, d Deps) (*Hub, error) {
	cfg.defaults()
	if d.Source == nil || d.Verify == nil {
		return nil, errors.New("hub: source and verify are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = prometheus.NewRegistry()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	f := promauto.With(d.Metrics)
	h := &Hub{
		cfg: cfg, d: d, log: d.Log,
		topics: map[string]*topic{},
		upgrader: websocket.Upgrader{
			// The hub writes frames itself (writer.go): gorilla writes
			// only the handshake, from a pooled buffer.
			ReadBufferSize: 1024, WriteBufferSize: 1024,
			WriteBufferPool: &sync.Pool{},
			Subprotocols:    []string{"bearer"},
			// The token travels explicitly (subprotocol, header or first
			// message), never as an ambient cookie, so another origin
			// cannot ride on a browser's session: any origin may connect.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		m: hubMetrics{
			clients:   f.NewGauge(prometheus.GaugeOpts{Name: "cryptostream_gateway_ws_clients", Help: "Connected websocket clients."}),
			topics:    f.NewGauge(prometheus.GaugeOpts{Name: "cryptostream_gateway_ws_channels", Help: "Channels with at least one subscriber (one stream consumer each)."}),
			events:    f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_events_total", Help: "Live events received from the streams."}),
			delivered: f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_deliveries_total", Help: "Live events queued to a client."}),
			slow:      f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_slow_closes_total", Help: "Clients closed as too slow (4008): their queue overflowed, a frame waited past SlowAfter, or a write timed out."}),
			backlog:   f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_backlog_events_total", Help: "Events sent from the stream for snapshots and resumes."}),
			nosub:     f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_subscribe_errors_total", Help: "Subscriptions refused or failed."}),
			badMsgs:   f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_bad_messages_total", Help: "Client messages that did not parse."}),
			conflated: f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_conflated_total", Help: "Ticks replaced by a newer one before they were sent (a client or a channel's fan-out was behind)."}),
			writes:    f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_writes_total", Help: "Socket writes; each carries one or more frames."}),
			frames:    f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_frames_total", Help: "Frames written to clients."}),
			syscalls:  f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_flush_syscalls_total", Help: "System calls the flushers' rounds made to write: one io_uring_enter per batch of clients, or one writev per client where io_uring is not allowed (--ws-io-uring=false)."}),
			round: f.NewHistogram(prometheus.HistogramOpts{Name: "cryptostream_gateway_ws_flush_round_seconds", Help: "How long one flusher's round of writes took (with --ws-write-delay); rounds longer than the delay mean the flushers are behind.",
				Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}}),
			revoked: f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_revoked_closes_total", Help: "Connections closed (4001) because their token was revoked: account deleted, disabled, or its password or role changed."}),
		},
	}
	stage := f.NewHistogramVec(prometheus.HistogramOpts{Name: "cryptostream_gateway_ws_stage_seconds",
		Help:    "Delay of live events by stage: read (stream store to the channel's consumer), inbox (to the fan-out), fanout (the walk over every subscriber), queue (fan-out to the write of a client's oldest queued frame), write (the socket write call).",
		Buckets: stageBuckets}, []string{"stage"})
	h.m.stRead, h.m.stInbox, h.m.stFanout = stage.WithLabelValues("read"), stage.WithLabelValues("inbox"), stage.WithLabelValues("fanout")
	h.m.stQueue, h.m.stWrite = stage.WithLabelValues("queue"), stage.WithLabelValues("write")
	for i := range h.clients {
		h.clients[i].m = map[*client]struct{}{}
	}
	h.flushStop = make(chan struct{})
	if cfg.WriteDelay > 0 {
		for range runtime.GOMAXPROCS(0) {
			f := &flusher{h: h, kick: make(chan struct{}, 1)}
			f.pause = f.sleep
			h.flushers = append(h.flushers, f)
		}
	}
	return h, nil
}

// Run blocks until ctx ends, then closes every connection.
func (h *Hub) Run(ctx context.Context) error {
	<-ctx.Done()
	h.Shutdown()
	return nil
}

// Shutdown closes every client with 1001 and stops every channel consumer.
// It is idempotent.
func (h *Hub) Shutdown() {
	h.mu.Lock()
	wasClosed := h.closed
	h.closed = true
	h.mu.Unlock()
	if !wasClosed {
		// The clients' own writers send their close frames.
		close(h.flushStop)
	}
	for i := range h.clients {
		sh := &h.clients[i]
		sh.mu.Lock()
		clients := make([]*client, 0, len(sh.m))
		for c := range sh.m {
			clients = append(clients, c)
		}
		sh.mu.Unlock()
		for _, c := range clients {
			c.kill(websocket.CloseGoingAway, "server shutting down")
		}
	}
}

// Clients is the number of connected clients.
func (h *Hub) Clients() int { return int(h.nclient.Load()) }

func httpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// ServeHTTP upgrades GET /ws.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var claims *auth.Claims
	token := ""
	if protos := websocket.Subprotocols(r); len(protos) >= 2 && protos[0] == "bearer" {
		token = protos[1]
	} else if scheme, t, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "bearer") {
		token = strings.TrimSpace(t)
	}
	if token != "" {
		c, err := h.d.Verify(token)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cryptostream"`)
			httpError(w, http.StatusUnauthorized, "invalid_token", "the token is invalid or expired")
			return
		}
		claims = &c
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		httpError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the client already
	}
	c := &client{
		h: h, id: h.ids.Add(1), conn: conn, nc: conn.NetConn(),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		subs: map[string]*clientSub{},
	}
	c.room = sync.NewCond(&c.qmu)
	if tc, ok := c.nc.(*net.TCPConn); ok && h.cfg.SendBuffer > 0 {
		_ = tc.SetWriteBuffer(h.cfg.SendBuffer)
	}
	if len(h.flushers) > 0 {
		if c.rc = rawConn(c.nc); c.rc != nil {
			c.fl = h.flushers[c.id%uint64(len(h.flushers))]
			h.startFlushers()
		}
	}
	sh := &h.clients[c.id%clientShards]
	h.mu.Lock()
	closed = h.closed
	h.mu.Unlock()
	if closed {
		_ = conn.Close()
		return
	}
	sh.mu.Lock()
	sh.m[c] = struct{}{}
	sh.mu.Unlock()
	h.nclient.Add(1)
	h.m.clients.Inc()
	// The connection lives on its own goroutines so that this handler
	// returns and net/http frees its request state and its goroutine's
	// grown stack: a third of the memory of an idle connection.
	go func() {
		c.serve(claims)
		sh.mu.Lock()
		delete(sh.m, c)
		sh.mu.Unlock()
		h.nclient.Add(-1)
		h.m.clients.Dec()
	}()
}

// Revalidate re-checks the tokens of user's open connections and closes
// with 4001 those that no longer stand (the account was deleted, disabled,
// re-created, or its password or role changed): a websocket must not outlive
// the revocation that already shuts the REST routes. A check that cannot be
// answered (the bucket unreachable) leaves the connection open; its token
// still expires.
func (h *Hub) Revalidate(user string) {
	if h.d.Check == nil {
		return
	}
	var mine []*client
	for i := range h.clients {
		sh := &h.clients[i]
		sh.mu.Lock()
		for c := range sh.m {
			c.mu.Lock()
			if c.user == user {
				mine = append(mine, c)
			}
			c.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	if len(mine) == 0 {
		return
	}
	go func() {
		for _, c := range mine {
			c.mu.Lock()
			cl := c.claims
			c.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), h.cfg.IOTimeout)
			err := h.d.Check(ctx, cl)
			cancel()
			if errors.Is(err, auth.ErrRevoked) || errors.Is(err, auth.ErrDisabled) {
				h.m.revoked.Inc()
				c.kill(CloseTokenExpired, "token revoked")
			}
		}
	}()
}

// tracked checks that a channel can carry anything: its interval is one the
// system runs and its asset is tracked. It answers an error code and message,
// or "" when the channel may be subscribed.
func (h *Hub) tracked(ctx context.Context, sp spec) (string, string) {
	if sp.interval != 0 && !slices.Contains(h.cfg.Intervals, sp.interval) {
		return "not_tracked", fmt.Sprintf("interval %s is not tracked", sp.interval)
	}
	if sp.symbol == "" || h.d.Tracked == nil {
		return "", ""
	}
	ok, err := h.d.Tracked(ctx, sp.symbol)
	if err != nil {
		h.log.Warn("websocket subscribe: tracked assets unreadable", "channel", sp.name, "err", err)
		return "unavailable", "the tracked assets cannot be read now"
	}
	if !ok {
		return "not_tracked", fmt.Sprintf("asset %s is not tracked", sp.symbol)
	}
	return "", ""
}

// acquire adds a subscription to its channel's topic, starting the topic's
// consumer if it is the first, and returns the last sequence the topic had
// dispatched when the subscription joined: everything after it reaches the
// subscription live. A topic starts outside h.mu, so a slow stream does not
// hold up subscriptions to other channels.
func (h *Hub) acquire(ctx context.Context, sp spec, cs *clientSub) (*topic, uint64, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, 0, errors.New("hub: shutting down")
	}
	t, ok := h.topics[sp.name]
	if !ok {
		t = newTopic(h, sp)
		h.topics[sp.name] = t
		h.m.topics.Inc()
	}
	t.refs++
	h.mu.Unlock()
	if !ok {
		t.err = t.start(ctx)
		close(t.ready)
		if t.err != nil {
			// The next subscriber tries afresh.
			h.mu.Lock()
			if h.topics[sp.name] == t {
				delete(h.topics, sp.name)
				h.m.topics.Dec()
			}
			h.mu.Unlock()
		}
	} else {
		select {
		case <-t.ready:
		case <-ctx.Done():
			h.release(t, nil)
			return nil, 0, ctx.Err()
		}
	}
	if t.err != nil {
		h.release(t, nil)
		return nil, 0, t.err
	}
	return t, t.join(cs), nil
}

// release drops a subscription (cs nil: a reference that never joined) and
// stops the topic's consumer with the last one.
func (h *Hub) release(t *topic, cs *clientSub) {
	if cs != nil {
		t.leave(cs)
	}
	h.mu.Lock()
	t.refs--
	last := t.refs == 0 && h.topics[t.sp.name] == t
	if last {
		delete(h.topics, t.sp.name)
		h.m.topics.Dec()
	}
	h.mu.Unlock()
	if last {
		<-t.ready
		t.close()
	}
}
