package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"cryptostream/streams"
)

// A session is one WebSocket connection's life: dial, subscribe what the
// table queues, read frames into the assembler and publish what it makes
// final, until the connection fails. Its loop owns the assembler, the
// subscription table and the heals in flight, so none of them needs a lock.

// staleAfter is how many intervals behind the stored series an update must
// be to be reported: more than a snapshot ever holds.
const staleAfter = 60

// rawFrame is a frame as read, with when it arrived.
type rawFrame struct {
	data []byte
	recv time.Time
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
	var lastRead atomic.Int64 // UnixNano when the newest frame came off the socket
	lastRead.Store(w.cfg.Now().UnixNano())
	go func() {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			recv := w.cfg.Now()
			lastRead.Store(recv.UnixNano())
			select {
			case frames <- rawFrame{data, recv}:
			case <-sctx.Done():
				return
			}
		}
	}()
	go func() { <-sctx.Done(); ws.Close() }()

	silent := w.cfg.SubscriptionTimeout
	if silent <= 0 {
		silent = 2*iv.Duration() + time.Minute
	}
	s := &session{w: w, iv: iv, ivs: iv.String(), asm: asm, ws: ws, log: log,
		subs:  newSubTable(w.cfg.SubscribeBatch, w.cfg.SubscribePace, silent),
		heals: make(chan healResult, 16), seeded: seeded, healing: map[string]bool{}, behind: map[string]bool{},
		frames: frames, lastRead: &lastRead}
	defer s.reportSubs(true)
	s.lastPing = w.cfg.Now()
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
	w       *Worker
	iv      streams.Interval
	ivs     string
	asm     *Assembler
	ws      *websocket.Conn
	log     *slog.Logger
	subs    *subTable
	heals   chan healResult
	seeded  map[string]bool
	healing map[string]bool
	behind  map[string]bool // said once that the stream is far behind
	// frames are those read and not handled yet, lastRead when the newest
	// came off the socket: the server is silent only when both say so.
	frames   <-chan rawFrame
	lastRead *atomic.Int64
	lastPing time.Time
	online   bool
	reqID    int64
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
	_, removed := s.subs.Reconcile(desired, s.w.cfg.Now())
	for sym, active := range removed {
		if active {
			if err := s.unsubscribe(sym); err != nil {
				s.log.Warn("unsubscribe", "symbol", sym, "err", err)
			}
		}
		s.asm.Drop(sym)
		s.w.m.forget(s.iv, sym)
		s.log.Info("unsubscribed", "symbol", sym)
	}
	s.reportSubs(false)
}

func (s *session) unsubscribe(sym string) error {
	s.reqID++
	return s.write(map[string]any{"method": "unsubscribe", "req_id": s.reqID,
		"params": map[string]any{"channel": "ohlc", "symbol": []string{sym}, "interval": s.iv.Minutes()}})
}

func (s *session) reportSubs(closing bool) {
	var counts [len(subStateNames)]int
	if !closing {
		counts = s.subs.Counts()
	}
	for i, name := range subStateNames {
		s.w.m.subscriptions.WithLabelValues(s.ivs, name).Set(float64(counts[i]))
	}
}

// silentSubs are the acked subscriptions that delivered nothing for too
// long, queued again; none while frames wait, since their data may be
// among them.
func (s *session) silentSubs(now time.Time) map[string]time.Duration {
	if len(s.frames) > 0 {
		return nil
	}
	return s.subs.Silent(now)
}

func (s *session) onTick(ctx context.Context) error {
	now := s.w.cfg.Now()
	// Heartbeats only flow while something is subscribed; without a
	// subscription the pings keep the connection open. A frame waiting to
	// be handled proves the server is not silent: this loop was busy (a
	// heal of hundreds of candles published while the bus is slow), and
	// judging the server by what the loop last handled took the loop's
	// own stall for a dead connection, reconnected, healed again and
	// stalled again, for as long as the machine stayed loaded.
	if silent := now.Sub(time.Unix(0, s.lastRead.Load())); s.subs.Len() > 0 && len(s.frames) == 0 && silent > s.w.cfg.ReadTimeout {
		return fmt.Errorf("ingest: no frame for %s", silent.Round(time.Millisecond))
	}
	if now.Sub(s.lastPing) >= s.w.cfg.PingEvery {
		s.reqID++
		s.lastPing = now
		if err := s.write(map[string]any{"method": "ping", "req_id": s.reqID}); err != nil {
			return err
		}
	}
	// Liveness per subscription: an ack with no data is resubscribed
	// (not while frames wait: the data may be among them).
	if silent := s.silentSubs(now); len(silent) > 0 {
		for sym, d := range silent {
			s.log.Warn("subscription silent, resubscribing", "symbol", sym, "silent_for", d.Round(time.Millisecond))
			s.w.m.silentResubscribes.WithLabelValues(s.ivs).Inc()
			if err := s.unsubscribe(sym); err != nil {
				return err
			}
			s.asm.Drop(sym)
		}
		s.reportSubs(false)
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
	if !s.online {
		return nil
	}
	batch := s.subs.NextBatch(now)
	if len(batch) == 0 {
		return nil
	}
	s.reportSubs(false)
	s.reqID++
	return s.write(map[string]any{"method": "subscribe", "req_id": s.reqID,
		"params": map[string]any{"channel": "ohlc", "symbol": batch, "interval": s.iv.Minutes(), "snapshot": true}})
}

func (s *session) rejected(reason RejectReason, err error) {
	s.w.m.rejected.WithLabelValues(string(reason)).Inc()
	s.log.Warn("rejected", "reason", reason, "err", err)
}

func (s *session) handle(ctx context.Context, raw rawFrame) error {
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
			s.subs.Data(c.Symbol, raw.recv)
			if e.Behind > staleAfter*s.iv.Duration() && !s.behind[c.Symbol] {
				// A snapshot's rows are a few intervals old; a stream far
				// behind what is stored (a replay restarted on its own
				// data) stores nothing until it passes it: say so, once.
				s.behind[c.Symbol] = true
				s.rejected(ReasonStale, fmt.Errorf("%s stream at %s is %s behind the newest stored candle: nothing is stored until it passes it",
					c.Symbol, c.Start.Format(time.RFC3339), e.Behind))
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
		if !s.subs.Acked(f.Symbol, s.w.cfg.Now()) {
			return nil
		}
		s.reportSubs(false)
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
	rateLimited := f.Error == "Exceeded msg rate"
	targets := s.subs.Refused(f.Symbol, rateLimited, s.w.cfg.Now())
	s.reportSubs(false)
	if rateLimited {
		s.rejected(ReasonRateLimited, fmt.Errorf("subscribe %v: %s", targets, f.Error))
	} else {
		s.rejected(ReasonSubscribe, fmt.Errorf("subscribe %v: %s", targets, f.Error))
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
