package hub

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/gateway/auth"
)

type client struct {
	h    *Hub
	conn *websocket.Conn
	// live carries shared, pre-encoded events; out carries this client's
	// own frames (replies, snapshots, backlog). out is unbuffered: a send
	// returns once the writer took the frame, which is what lets a
	// subscription switch to live without reordering.
	live chan *websocket.PreparedMessage
	out  chan []byte
	done chan struct{}
	exp  chan time.Time // a new token expiry for the writer

	once        sync.Once
	closeCode   int
	closeReason string

	mu   sync.Mutex
	user string
	subs map[string]*clientSub
	wg   sync.WaitGroup // catch-up goroutines
}

func (c *client) kill(code int, reason string) {
	c.once.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.done)
	})
}

func (c *client) slow() {
	c.once.Do(func() {
		c.h.m.slow.Inc()
		c.closeCode, c.closeReason = CloseSlowClient, "client too slow: queue overflowed"
		close(c.done)
	})
}

// send queues one of this client's own frames; false once the client is
// closing.
func (c *client) send(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return c.sendRaw(b)
}

func (c *client) sendRaw(b []byte) bool {
	select {
	case c.out <- b:
		return true
	case <-c.done:
		return false
	}
}

func (c *client) serve(claims *auth.Claims) {
	h := c.h
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writer()
	}()
	c.conn.SetReadLimit(4096)
	if claims != nil {
		c.authorize(*claims)
	} else {
		_ = c.conn.SetReadDeadline(h.d.Now().Add(h.cfg.AuthTimeout))
	}
	c.reader(claims != nil)
	c.kill(websocket.CloseNormalClosure, "")
	<-writerDone
	c.mu.Lock()
	user := c.user
	c.mu.Unlock()
	h.log.Debug("websocket closed", "user", user, "remote", c.conn.RemoteAddr().String(), "code", c.closeCode, "reason", c.closeReason)
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
	c.user = cl.Subject
	c.mu.Unlock()
	select {
	case <-c.exp:
	default:
	}
	c.exp <- cl.ExpiresAt.Time
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
			return
		}
		var req request
		if kind != websocket.TextMessage || json.Unmarshal(data, &req) != nil {
			h.m.badMsgs.Inc()
			c.send(map[string]string{"type": "error", "code": "bad_message", "message": "send JSON text frames with an op"})
			continue
		}
		if req.Op == "auth" {
			cl, err := h.d.Verify(req.Token)
			if err != nil {
				c.kill(CloseAuthFailed, "invalid token")
				return
			}
			c.mu.Lock()
			other := c.user != "" && c.user != cl.Subject
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
			c.send(map[string]string{"type": "error", "code": "bad_op", "message": "op must be auth, subscribe or unsubscribe"})
		}
	}
}

func (c *client) writer() {
	h := c.h
	ping := time.NewTicker(h.cfg.PingInterval)
	defer ping.Stop()
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	defer expiry.Stop()
	deadline := func() time.Time { return h.d.Now().Add(h.cfg.WriteTimeout) }
	fail := func() { c.kill(websocket.CloseAbnormalClosure, "") }
	for {
		select {
		case b := <-c.out:
			_ = c.conn.SetWriteDeadline(deadline())
			if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
				fail()
			}
		case pm := <-c.live:
			_ = c.conn.SetWriteDeadline(deadline())
			if err := c.conn.WritePreparedMessage(pm); err != nil {
				fail()
			}
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, deadline()); err != nil {
				fail()
			}
		case at := <-c.exp:
			expiry.Reset(at.Sub(h.d.Now()))
		case <-expiry.C:
			c.kill(CloseTokenExpired, "token expired")
		case <-c.done:
			if c.closeCode != websocket.CloseAbnormalClosure {
				_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeReason), deadline())
			}
			_ = c.conn.Close()
			return
		}
	}
}

func (c *client) subscribe(channel string, since *uint64) {
	h := c.h
	sp, err := parseChannel(channel)
	if err != nil {
		h.m.nosub.Inc()
		c.send(map[string]string{"type": "error", "code": "bad_channel", "channel": channel, "message": err.Error()})
		return
	}
	c.mu.Lock()
	_, dup := c.subs[sp.name]
	full := len(c.subs) >= h.cfg.MaxChannels
	var cs *clientSub
	if !dup && !full {
		cs = &clientSub{c: c}
		c.subs[sp.name] = cs
	}
	c.mu.Unlock()
	if dup || full {
		h.m.nosub.Inc()
		msg := "already subscribed"
		if full {
			msg = "too many channels"
		}
		c.send(map[string]string{"type": "error", "code": "subscribe_refused", "channel": sp.name, "message": msg})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.IOTimeout)
	t, upTo, err := h.acquire(ctx, sp, cs)
	cancel()
	if err != nil {
		h.m.nosub.Inc()
		h.log.Warn("websocket subscribe failed", "channel", sp.name, "err", err)
		c.mu.Lock()
		delete(c.subs, sp.name)
		c.mu.Unlock()
		c.send(map[string]string{"type": "error", "code": "unavailable", "channel": sp.name, "message": "the channel cannot be read now"})
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
	if err != nil {
		h.log.Warn("websocket snapshot or backlog failed", "channel", sp.name, "err", err)
		c.send(map[string]any{"type": "error", "code": "backlog_failed", "channel": sp.name, "message": "history could not be read; live events follow"})
	}
	for {
		cs.mu.Lock()
		batch := cs.pending
		cs.pending = nil
		if len(batch) == 0 {
			cs.ready = true
			cs.mu.Unlock()
			return
		}
		last := cs.lastSeq
		cs.mu.Unlock()
		for _, ev := range batch {
			if ev.seq <= last {
				continue
			}
			select {
			case c.live <- ev.pm:
			case <-c.done:
				return
			}
			last = ev.seq
		}
		cs.mu.Lock()
		cs.lastSeq = last
		cs.mu.Unlock()
	}
}

func (c *client) setLast(cs *clientSub, seq uint64) {
	cs.mu.Lock()
	cs.lastSeq = seq
	cs.mu.Unlock()
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
	if !c.sendRaw(frame(cs.t.sp.name, msg.Sequence, true, msg.Data)) {
		return nil
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
		c.send(map[string]any{"type": "gap", "channel": sp.name, "from": since + 1, "to": gapTo})
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
			if !c.sendRaw(frame(sp.name, seq, false, msg.Data())) {
				return nil
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
		c.send(map[string]string{"type": "error", "code": "bad_channel", "channel": channel, "message": err.Error()})
		return
	}
	c.mu.Lock()
	cs, ok := c.subs[sp.name]
	delete(c.subs, sp.name)
	c.mu.Unlock()
	if !ok {
		c.send(map[string]string{"type": "error", "code": "not_subscribed", "channel": sp.name, "message": "not subscribed"})
		return
	}
	c.h.release(cs.t, cs)
	c.send(map[string]string{"type": "unsubscribed", "channel": sp.name})
}
