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
//	{"type":"gap","channel":"...","from":<seq>,"to":<seq>}   a resume could not be served in full
//	{"type":"unsubscribed","channel":"..."} / {"type":"error","code":"...","message":"..."}
//
// The token is given at upgrade as the subprotocol pair "bearer, <token>"
// (the server answers with "bearer"), in an Authorization header, or in the
// first message within AuthTimeout. Events of one channel arrive in stream
// order without duplicates; seq is what a reconnecting client passes back as
// since.
//
// Close codes: 1001 server shutting down; 4001 token expired; 4003
// authentication failed or missing; 4008 client too slow (its queue
// overflowed; reconnect and resume with since).
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/gateway/auth"
)

// Close codes beyond the standard ones.
const (
	CloseTokenExpired = 4001
	CloseAuthFailed   = 4003
	CloseSlowClient   = 4008
)

// Config tunes the hub. Zero values take the defaults.
type Config struct {
	// QueueSize bounds the live events waiting for one client's socket.
	QueueSize int
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
	defd(&c.PingInterval, 25*time.Second)
	defd(&c.PongWait, 60*time.Second)
	defd(&c.WriteTimeout, 10*time.Second)
	defd(&c.AuthTimeout, 10*time.Second)
	defd(&c.IOTimeout, 5*time.Second)
}

// Source opens streams; jetstream.JetStream is one.
type Source interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// Deps are what the hub talks to.
type Deps struct {
	Source  Source
	Verify  func(token string) (auth.Claims, error)
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

	mu      sync.Mutex
	topics  map[string]*topic
	clients map[*client]struct{}
	closed  bool
}

type hubMetrics struct {
	clients, topics                         prometheus.Gauge
	events, delivered, slow, backlog, nosub prometheus.Counter
	badMsgs                                 prometheus.Counter
}

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
		topics:  map[string]*topic{},
		clients: map[*client]struct{}{},
		upgrader: websocket.Upgrader{
			ReadBufferSize: 1024, WriteBufferSize: 4096,
			// Idle connections hold no write buffer: with thousands of
			// clients mostly waiting, the pool saves 4 KiB each.
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
			slow:      f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_slow_closes_total", Help: "Clients closed with 4008 because their queue overflowed."}),
			backlog:   f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_backlog_events_total", Help: "Events sent from the stream for snapshots and resumes."}),
			nosub:     f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_subscribe_errors_total", Help: "Subscriptions refused or failed."}),
			badMsgs:   f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_gateway_ws_bad_messages_total", Help: "Client messages that did not parse."}),
		},
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
	h.closed = true
	clients := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		clients = append(clients, c)
	}
	h.mu.Unlock()
	for _, c := range clients {
		c.kill(websocket.CloseGoingAway, "server shutting down")
	}
}

// Clients is the number of connected clients.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

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
		h: h, conn: conn,
		live: make(chan *websocket.PreparedMessage, h.cfg.QueueSize),
		out:  make(chan []byte),
		done: make(chan struct{}),
		exp:  make(chan time.Time, 1),
		subs: map[string]*clientSub{},
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = conn.Close()
		return
	}
	h.clients[c] = struct{}{}
	h.mu.Unlock()
	h.m.clients.Inc()
	// The connection lives on its own goroutines so that this handler
	// returns and net/http frees its request state and its goroutine's
	// grown stack: a third of the memory of an idle connection.
	go func() {
		c.serve(claims)
		h.mu.Lock()
		delete(h.clients, c)
		h.mu.Unlock()
		h.m.clients.Dec()
	}()
}

// acquire adds a subscription to its channel's topic, starting the topic's
// consumer if it is the first, and returns the last sequence the topic had
// dispatched when the subscription joined: everything after it reaches the
// subscription live.
func (h *Hub) acquire(ctx context.Context, sp spec, cs *clientSub) (*topic, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, 0, errors.New("hub: shutting down")
	}
	t, ok := h.topics[sp.name]
	if !ok {
		var err error
		t, err = h.startTopic(ctx, sp)
		if err != nil {
			return nil, 0, err
		}
		h.topics[sp.name] = t
		h.m.topics.Inc()
	}
	t.mu.Lock()
	t.subs[cs] = struct{}{}
	seq := t.lastSeq
	t.mu.Unlock()
	return t, seq, nil
}

func (h *Hub) release(t *topic, cs *clientSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t.mu.Lock()
	delete(t.subs, cs)
	empty := len(t.subs) == 0
	t.mu.Unlock()
	if empty && h.topics[t.sp.name] == t {
		delete(h.topics, t.sp.name)
		h.m.topics.Dec()
		t.cc.Stop()
	}
}

// topic is one channel's shared consumer and its subscribers.
type topic struct {
	h  *Hub
	sp spec
	cc jetstream.ConsumeContext

	mu      sync.Mutex
	subs    map[*clientSub]struct{}
	lastSeq uint64
}

type event struct {
	seq uint64
	pm  *websocket.PreparedMessage
}

// startTopic starts an ordered consumer right after the stream's current
// last sequence, so that what a new subscriber reads from the stream (up to
// lastSeq) and what the topic delivers live (after it) meet without a gap.
func (h *Hub) startTopic(ctx context.Context, sp spec) (*topic, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.IOTimeout)
	defer cancel()
	st, err := h.d.Source.Stream(ctx, sp.stream)
	if err != nil {
		return nil, fmt.Errorf("hub: open stream %s: %w", sp.stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("hub: stream %s info: %w", sp.stream, err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{sp.filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    info.State.LastSeq + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("hub: consumer on %s: %w", sp.filter, err)
	}
	t := &topic{h: h, sp: sp, subs: map[*clientSub]struct{}{}, lastSeq: info.State.LastSeq}
	cc, err := cons.Consume(t.dispatch, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		h.log.Debug("channel consumer", "channel", sp.name, "err", err)
	}))
	if err != nil {
		return nil, fmt.Errorf("hub: consume %s: %w", sp.filter, err)
	}
	t.cc = cc
	return t, nil
}

// frame encodes an event once for every subscriber.
func frame(channel string, seq uint64, snapshot bool, data []byte) []byte {
	b := make([]byte, 0, len(data)+len(channel)+64)
	b = append(b, `{"type":"event","channel":`...)
	b = strconv.AppendQuote(b, channel)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"snapshot":`...)
	b = strconv.AppendBool(b, snapshot)
	b = append(b, `,"data":`...)
	if json.Valid(data) {
		b = append(b, data...)
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}')
}

// dispatch runs on the consumer's goroutine, one message at a time. It never
// blocks on a client: each delivery is a non-blocking queue send.
func (t *topic) dispatch(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	seq := meta.Sequence.Stream
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, frame(t.sp.name, seq, false, msg.Data()))
	if err != nil {
		return
	}
	t.h.m.events.Inc()
	ev := event{seq: seq, pm: pm}
	t.mu.Lock()
	t.lastSeq = seq
	n := 0
	for cs := range t.subs {
		if cs.deliver(ev) {
			n++
		}
	}
	t.mu.Unlock()
	t.h.m.delivered.Add(float64(n))
}

// clientSub is one client's subscription to one channel.
type clientSub struct {
	c *client
	t *topic

	mu      sync.Mutex
	ready   bool    // snapshot or backlog sent; live events go straight out
	pending []event // live events that arrived before ready
	lastSeq uint64  // the newest sequence sent
}

func (cs *clientSub) deliver(ev event) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.ready {
		if len(cs.pending) >= cs.c.h.cfg.MaxPending {
			cs.c.slow()
			return false
		}
		cs.pending = append(cs.pending, ev)
		return false
	}
	if ev.seq <= cs.lastSeq {
		return false
	}
	select {
	case cs.c.live <- ev.pm:
		cs.lastSeq = ev.seq
		return true
	default:
		cs.c.slow()
		return false
	}
}
