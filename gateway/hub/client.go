package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/gateway/auth"
	"cryptostream/streams"
)

type client struct {
	h    *Hub
	id   uint64
	conn *websocket.Conn // handshake and reading only
	nc   net.Conn        // written by the writer goroutine alone
	done chan struct{}   // closed when the client starts closing

	// qmu guards the write queue, the close state and every subscription's
	// delivery state: the fan-out takes it once per delivery, the writer
	// once per batch, and nobody holds it across a socket write.
	qmu         sync.Mutex
	room        *sync.Cond // the queue has room, or the client is closing
	roomWaiters int        // goroutines in room.Wait
	q           []qitem
	nlive       int       // how many of q are live frames: QueueSize bounds these alone
	oldest      time.Time // when q's first frame was queued
	wake        chan struct{}
	closing     bool
	closeCode   int
	closeReason string
	// pinger queues a ping every PingInterval. It and expiry are timers
	// that run a function, not channels the writer selects on: a select
	// over several channels on every wake-up was a tenth of the gateway's
	// CPU at ten thousand clients.
	pinger *time.Timer
	// With a flusher (fl), the writer writes only while handed the
	// client (its socket was full: carry is what the flusher could not
	// write) and to close it; listed: in fl's next round; fwriting: fl
	// is writing the socket now.
	fl       *flusher
	rc       syscall.RawConn
	listed   bool
	handed   bool
	fwriting bool
	carry    net.Buffers

	mu      sync.Mutex
	user    string
	account string // the account ID alerts are addressed to
	claims  auth.Claims
	admin   bool
	subs    map[string]*clientSub
	expiry  *time.Timer    // closes the client with 4001 when its token expires
	wg      sync.WaitGroup // catch-up goroutines
}

// clientSub is one client's subscription to one channel. Its fields are
// under c.qmu.
type clientSub struct {
	c        *client
	t        *topic
	conflate bool
	spos     int // 1 + its index in its topic shard's subs, 0 once it left; under the shard's lock

	ready   bool    // snapshot or backlog sent; live events go straight out
	pending []event // live events that arrived before ready
	lastSeq uint64  // the newest sequence sent
	// ring: the indexes in c.q of its nq unsent conflatable frames, in
	// queue order.
	ring [conflateDepth]int
	nq   int
}

// mayRead reports whether this client may receive an alert of owner.
func (c *client) mayRead(owner string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return streams.AlertVisible(owner, c.account, c.admin)
}

// mayReadData is mayRead for a stored event of the subscription's stream:
// everything but alerts is public to an authenticated client.
func (c *client) mayReadData(stream string, data []byte) bool {
	if stream != streams.StreamAlerts {
		return true
	}
	owner, err := streams.AlertOwner(data)
	return err == nil && c.mayRead(owner)
}

// deliver runs on the fan-out goroutine and never blocks.
func (c *client) deliver(cs *clientSub, ev event, now time.Time) bool {
	if ev.owned && !c.mayRead(ev.owner) {
		return false
	}
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if !cs.ready {
		if len(cs.pending) >= c.h.cfg.MaxPending {
			c.slowLocked("client too slow: subscription backlog overflowed")
			return false
		}
		cs.pending = append(cs.pending, ev)
		return false
	}
	if ev.seq <= cs.lastSeq {
		return false
	}
	if !c.enqueueLive(cs, ev.frame, now) {
		return false
	}
	cs.lastSeq = ev.seq
	return true
}

type errorFrame struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Channel string `json:"channel,omitempty"`
	Message string `json:"message"`
}

// send queues one of this client's own replies; false once it is closing.
func (c *client) send(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return c.sendWait(textFrame(b), c.h.cfg.QueueSize) == nil
}

func (c *client) sendError(code, channel, msg string) {
	c.send(errorFrame{Type: "error", Code: code, Channel: channel, Message: msg})
}

func (c *client) serve(claims *auth.Claims) {
	h := c.h
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writer()
	}()
	c.conn.SetReadLimit(4096)
	// gorilla would answer pings and closes itself, writing from the
	// reader: the writer goroutine answers them instead.
	c.conn.SetPingHandler(func(data string) error {
		c.sendControl(control(opPong, []byte(data)))
		return nil
	})
	c.conn.SetCloseHandler(func(code int, _ string) error {
		if code == websocket.CloseNoStatusReceived {
			code = websocket.CloseNormalClosure
		}
		c.kill(code, "")
		return nil
	})
	if claims != nil {
		c.authorize(*claims)
	} else {
		_ = c.conn.SetReadDeadline(h.d.Now().Add(h.cfg.AuthTimeout))
	}
	c.reader(claims != nil)
	<-writerDone
	c.stopTimers()
	c.mu.Lock()
	user := c.user
	c.mu.Unlock()
	h.log.Debug("websocket closed", "user", user, "remote", c.nc.RemoteAddr().String(), "code", c.closeCode, "reason", c.closeReason)
	c.wg.Wait()
	c.mu.Lock()
	subs := c.subs
	c.subs = map[string]*clientSub{}
	c.mu.Unlock()
	for _, cs := range subs {
		h.release(cs.t, cs)
	}
}

func (c *client) authorize(cl auth.Claims) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.user, c.account, c.claims = cl.Subject, cl.UID, cl
	c.admin = cl.Role == streams.RoleAdmin
	left := cl.ExpiresAt.Time.Sub(c.h.d.Now())
	if c.expiry == nil {
		c.expiry = time.AfterFunc(left, func() { c.kill(CloseTokenExpired, "token expired") })
	} else {
		c.expiry.Reset(left)
	}
}

// stopTimers stops the ping and expiry timers of a client that is gone.
func (c *client) stopTimers() {
	c.qmu.Lock()
	if c.pinger != nil {
		c.pinger.Stop()
	}
	c.qmu.Unlock()
	c.mu.Lock()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()
}

type request struct {
	Op      string  `json:"op"`
	Channel string  `json:"channel"`
	Since   *uint64 `json:"since"`
	Token   string  `json:"token"`
}

func (c *client) reader(authed bool) {
	h := c.h
	pong := func(string) error { return c.conn.SetReadDeadline(h.d.Now().Add(h.cfg.PongWait)) }
	c.conn.SetPongHandler(pong)
	if authed {
		_ = pong("")
	}
	for {
		kind, data, err := c.conn.ReadMessage()
		if err != nil {
			var ne net.Error
			timeout := errors.As(err, &ne) && ne.Timeout()
			switch {
			case !authed && timeout:
				// The protocol promises 4003 to a client that never
				// authenticates, silent ones included.
				c.kill(CloseAuthFailed, "authentication timed out")
			case timeout:
				c.kill(websocket.CloseNormalClosure, "no pong")
			default:
				c.kill(websocket.CloseAbnormalClosure, "")
			}
			return
		}
		var req request
		if kind != websocket.TextMessage || json.Unmarshal(data, &req) != nil {
			h.m.badMsgs.Inc()
			c.sendError("bad_message", "", "send JSON text frames with an op")
			continue
		}
		if req.Op == "auth" {
			cl, err := h.d.Verify(req.Token)
			if err != nil {
				c.kill(CloseAuthFailed, "invalid token")
				return
			}
			c.mu.Lock()
			other := c.user != "" && (c.user != cl.Subject || c.account != cl.UID)
			c.mu.Unlock()
			if other {
				c.kill(CloseAuthFailed, "token of another user")
				return
			}
			if !authed {
				authed = true
				_ = pong("")
			}
			c.authorize(cl)
			c.send(map[string]any{"type": "authenticated", "expires_at": cl.ExpiresAt.Time.UTC()})
			continue
		}
		if !authed {
			c.kill(CloseAuthFailed, "authenticate first")
			return
		}
		switch req.Op {
		case "subscribe":
			c.subscribe(req.Channel, req.Since)
		case "unsubscribe":
			c.unsubscribe(req.Channel)
		default:
			h.m.badMsgs.Inc()
			c.sendError("bad_op", "", "op must be auth, subscribe or unsubscribe")
		}
	}
}

func (c *client) subscribe(channel string, since *uint64) {
	h := c.h
	sp, err := parseChannel(channel)
	if err != nil {
		h.m.nosub.Inc()
		c.sendError("bad_channel", channel, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.IOTimeout)
	defer cancel()
	if code, msg := h.tracked(ctx, sp); code != "" {
		h.m.nosub.Inc()
		c.sendError(code, sp.name, msg)
		return
	}
	c.mu.Lock()
	_, dup := c.subs[sp.name]
	full := len(c.subs) >= h.cfg.MaxChannels
	var cs *clientSub
	if !dup && !full {
		cs = &clientSub{c: c, conflate: sp.conflate}
		c.subs[sp.name] = cs
	}
	c.mu.Unlock()
	if dup || full {
		h.m.nosub.Inc()
		msg := "already subscribed"
		if full {
			msg = "too many channels"
		}
		c.sendError("subscribe_refused", sp.name, msg)
		return
	}
	t, upTo, err := h.acquire(ctx, sp, cs)
	if err != nil {
		h.m.nosub.Inc()
		h.log.Warn("websocket subscribe failed", "channel", sp.name, "err", err)
		c.mu.Lock()
		delete(c.subs, sp.name)
		c.mu.Unlock()
		c.sendError("unavailable", sp.name, "the channel cannot be read now")
		return
	}
	cs.t = t
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.catchUp(cs, upTo, since)
	}()
}

// catchUp sends the snapshot or the backlog up to upTo, then what arrived
// live meanwhile, and only then lets live events through directly.
func (c *client) catchUp(cs *clientSub, upTo uint64, since *uint64) {
	h := c.h
	sp := cs.t.sp
	if !c.send(map[string]any{"type": "subscribed", "channel": sp.name, "seq": upTo}) {
		return
	}
	var err error
	if since != nil {
		err = c.backlog(cs, *since, upTo)
	} else {
		err = c.snapshot(cs, upTo)
	}
	if err != nil && !errors.Is(err, errQueueClosed) {
		h.log.Warn("websocket snapshot or backlog failed", "channel", sp.name, "err", err)
		c.sendError("backlog_failed", sp.name, "history could not be read; live events follow")
	}
	c.flushPending(cs)
}

// flushPending sends what arrived live while the snapshot or backlog went
// out, then marks cs ready: from then on the fan-out queues its events
// directly. A conflating channel sends only the newest of what is pending
// (each tick replaces the last): queued one by one, a burst that arrived
// during a slow snapshot filled the queue and the next live tick closed a
// client that was merely behind with 4008.
func (c *client) flushPending(cs *clientSub) {
	for {
		c.qmu.Lock()
		batch := cs.pending
		cs.pending = nil
		if len(batch) == 0 {
			cs.ready = true
			c.qmu.Unlock()
			return
		}
		last := cs.lastSeq
		c.qmu.Unlock()
		if cs.conflate && len(batch) > 1 {
			c.h.m.conflated.Add(float64(len(batch) - 1))
			batch = batch[len(batch)-1:]
		}
		for _, ev := range batch {
			if ev.seq <= last {
				continue
			}
			if c.sendWait(ev.frame, c.catchUpRoom()) != nil {
				return
			}
			last = ev.seq
		}
		c.setLast(cs, last)
	}
}

func (c *client) setLast(cs *clientSub, seq uint64) {
	c.qmu.Lock()
	cs.lastSeq = seq
	c.qmu.Unlock()
}

func (c *client) sendEvent(channel string, seq uint64, snapshot bool, data []byte) error {
	return c.sendWait(wsFrame(opText, appendEvent(make([]byte, maxHeader, maxHeader+len(data)+len(channel)+64), channel, seq, snapshot, data)), c.catchUpRoom())
}

func (c *client) snapshot(cs *clientSub, upTo uint64) error {
	h := c.h
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.IOTimeout)
	defer cancel()
	st, err := h.d.Source.Stream(ctx, cs.t.sp.stream)
	if err != nil {
		return err
	}
	msg, err := st.GetLastMsgForSubject(ctx, cs.t.sp.filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if msg.Sequence > upTo {
		return nil // it is newer than the seam: it comes live
	}
	if !c.mayReadData(cs.t.sp.stream, msg.Data) {
		return nil // another user's alert is nobody's snapshot
	}
	if err := c.sendEvent(cs.t.sp.name, msg.Sequence, true, msg.Data); err != nil {
		return err
	}
	h.m.backlog.Inc()
	c.setLast(cs, msg.Sequence)
	return nil
}

// backlog replays the channel's events in (since, upTo] with an ordered
// consumer. Everything after upTo reaches the subscription live.
func (c *client) backlog(cs *clientSub, since, upTo uint64) error {
	h := c.h
	sp := cs.t.sp
	c.setLast(cs, since)
	if since >= upTo {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	ictx, icancel := context.WithTimeout(ctx, h.cfg.IOTimeout)
	st, err := h.d.Source.Stream(ictx, sp.stream)
	if err != nil {
		icancel()
		return err
	}
	cons, err := st.OrderedConsumer(ictx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{sp.filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    since + 1,
	})
	if err != nil {
		icancel()
		return err
	}
	info, err := cons.Info(ictx)
	icancel()
	if err != nil {
		return err
	}
	last := since
	// What the stream no longer holds (aged out or over its limits) cannot
	// be replayed: say so rather than pretend there was nothing.
	if si := st.CachedInfo(); si != nil && si.State.FirstSeq > since+1 {
		gapTo := min(si.State.FirstSeq-1, upTo)
		if !c.send(map[string]any{"type": "gap", "channel": sp.name, "from": since + 1, "to": gapTo}) {
			return errQueueClosed
		}
		last = gapTo
		c.setLast(cs, gapTo)
	}
	if info.NumPending == 0 {
		return nil
	}
	sent := 0
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(h.cfg.IOTimeout))
		if err != nil {
			return err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				continue
			}
			seq := meta.Sequence.Stream
			if seq > upTo {
				return nil
			}
			if sent >= h.cfg.MaxBacklog {
				// Too far behind to replay: say what is missing rather
				// than pretend the stream has no gap.
				c.send(map[string]any{"type": "gap", "channel": sp.name, "from": last + 1, "to": upTo})
				c.setLast(cs, upTo)
				return nil
			}
			if !c.mayReadData(sp.stream, msg.Data()) {
				last = seq
				c.setLast(cs, seq)
				if seq == upTo || meta.NumPending == 0 {
					return nil
				}
				continue
			}
			if err := c.sendEvent(sp.name, seq, false, msg.Data()); err != nil {
				return err
			}
			h.m.backlog.Inc()
			sent++
			last = seq
			c.setLast(cs, seq)
			if seq == upTo || meta.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

func (c *client) unsubscribe(channel string) {
	sp, err := parseChannel(channel)
	if err != nil {
		c.sendError("bad_channel", channel, err.Error())
		return
	}
	c.mu.Lock()
	cs, ok := c.subs[sp.name]
	delete(c.subs, sp.name)
	c.mu.Unlock()
	if !ok {
		c.sendError("not_subscribed", sp.name, "not subscribed")
		return
	}
	c.h.release(cs.t, cs)
	c.send(map[string]string{"type": "unsubscribed", "channel": sp.name})
}
