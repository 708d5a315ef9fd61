package hub

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

// Frames are built here rather than by gorilla's writer because gorilla
// flushes every message with its own write call: with thousands of clients
// the write syscalls are the cost (centrifuge measured the same), and
// coalescing several queued frames into one writev needs the frames as
// bytes. Server frames are unmasked, so a frame is a header and the payload;
// gorilla still does the handshake and all the reading.

const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA

	maxHeader = 10
)

// header appends a final frame's header for a payload of n bytes.
func header(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

// wsFrame frames a payload that was built after maxHeader reserved bytes:
// the header goes into the reserve, so the payload is not copied.
func wsFrame(op byte, buf []byte) []byte {
	n := len(buf) - maxHeader
	var h [maxHeader]byte
	hb := header(h[:0], op, n)
	start := maxHeader - len(hb)
	copy(buf[start:], hb)
	return buf[start:]
}

// control frames a control message (at most 125 bytes of payload).
func control(op byte, payload []byte) []byte {
	b := header(make([]byte, 0, 2+len(payload)), op, len(payload))
	return append(b, payload...)
}

// textFrame frames a message this client alone receives.
func textFrame(payload []byte) []byte {
	b := header(make([]byte, 0, maxHeader+len(payload)), opText, len(payload))
	return append(b, payload...)
}

// qitem is a frame waiting for the socket. sub is set for a frame of a
// conflating channel, so a newer tick can take its place.
type qitem struct {
	b   []byte
	sub *clientSub
}

// conflateDepth is how many unsent ticks of one channel a client may have
// queued before it counts as behind and its oldest unsent tick of that
// channel makes way for the newest.
const conflateDepth = 4

var errQueueClosed = errors.New("hub: client closing")

// closeAbnormal is the code of a close that sends no close frame.
const closeAbnormal = websocket.CloseAbnormalClosure

// enqueueLive queues a shared live frame for cs; the caller holds c.qmu. It
// never blocks: a client whose queue is full, or whose oldest queued frame
// has waited longer than SlowAfter, is closed as slow.
func (c *client) enqueueLive(cs *clientSub, b []byte, now time.Time) bool {
	if c.closing {
		return false
	}
	if len(c.q) > 0 && now.Sub(c.oldest) > c.h.cfg.SlowAfter {
		c.slowLocked("client too slow: frames waited too long")
		return false
	}
	if cs.conflate && cs.nq >= conflateDepth {
		// Running-candle ticks: a client that is behind gets the newest
		// conflateDepth. They move up one place among the places its
		// ticks hold in the queue, the oldest dropped, so the channel's
		// order holds, nothing else moves and the queue does not grow.
		// (Replacing the last kept the oldest three: at a 250 ms round
		// the ticks a starved client got were as old as the round, and
		// after a stall every one it was sent was as old as the stall.)
		// c.oldest stays when the first place was filled: SlowAfter and
		// the queue stage count the client's wait for a write.
		for k := range conflateDepth - 1 {
			c.q[cs.ring[k]].b = c.q[cs.ring[k+1]].b
		}
		c.q[cs.ring[conflateDepth-1]].b = b
		c.h.m.conflated.Inc()
		return true
	}
	if c.nlive >= c.h.cfg.QueueSize {
		c.slowLocked("client too slow: queue overflowed")
		return false
	}
	it := qitem{b: b}
	if cs.conflate {
		it.sub = cs
	}
	c.pushLocked(it, now)
	c.nlive++
	if cs.conflate {
		cs.ring[cs.nq] = len(c.q) - 1
		cs.nq++
	}
	return true
}

func (c *client) pushLocked(it qitem, now time.Time) {
	if len(c.q) == 0 {
		c.oldest = now
	}
	c.q = append(c.q, it)
	if c.fl != nil && !c.handed && !c.closing {
		if !c.listed {
			c.listed = true
			c.fl.list(c)
		}
		return
	}
	c.wakeWriterLocked()
}

// waitRoomLocked waits on c.room; the caller holds c.qmu.
func (c *client) waitRoomLocked() {
	c.roomWaiters++
	c.room.Wait()
	c.roomWaiters--
}

// roomLocked wakes whoever waits on c.room: the queue has room, a write
// ended or the client is closing. A flusher calls it twice per client per
// round and almost never finds a waiter, which a Broadcast checks only
// after its own bookkeeping.
func (c *client) roomLocked() {
	if c.roomWaiters > 0 {
		c.room.Broadcast()
	}
}

func (c *client) wakeWriterLocked() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// sendWait queues one of this client's own frames (replies, snapshots,
// backlog) in order with its live frames, waiting until fewer than room
// frames other than live ones are queued rather than overflowing: a resume
// of thousands of events is paced by the socket.
func (c *client) sendWait(b []byte, room int) error {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	for !c.closing && len(c.q)-c.nlive >= room {
		c.waitRoomLocked()
	}
	if c.closing {
		return errQueueClosed
	}
	c.pushLocked(qitem{b: b}, c.h.d.Now())
	return nil
}

// catchUpRoom is how many frames of a snapshot, a backlog or the live
// events held during one may wait in the queue: half of QueueSize, on top
// of it. Live frames are never waited for (the fan-out must not block), so
// QueueSize of them closes the client with 4008, and only they count
// against it: a catch-up counted with them filled the queue to the brim and
// closed a healthy client whenever a live frame came before the next write
// took the queue (one of its other channels during a resume, or the first
// live event after the seam), and once it was held to half the queue, a
// resuming client still had only the other half for its live frames.
// Apart, a client catching up has the same room for live frames between
// two writes as one that is not, and a catch-up is paced by its own bound.
func (c *client) catchUpRoom() int { return max(1, c.h.cfg.QueueSize/2) }

// ping runs on the pinger timer: it queues a ping and rearms the timer.
func (c *client) ping() {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closing {
		return
	}
	c.pushLocked(qitem{b: control(opPing, nil)}, c.h.d.Now())
	c.pinger.Reset(c.h.cfg.PingInterval)
}

// sendControl queues a control frame (a pong) past the bound: the reader
// must not wait on the writer.
func (c *client) sendControl(b []byte) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if !c.closing {
		c.pushLocked(qitem{b: b}, c.h.d.Now())
	}
}

func (c *client) kill(code int, reason string) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.killLocked(code, reason)
}

func (c *client) killLocked(code int, reason string) {
	if c.closing {
		return
	}
	c.closing = true
	c.closeCode, c.closeReason = code, reason
	c.roomLocked()
	close(c.done)
	c.wakeWriterLocked()
}

func (c *client) slowLocked(reason string) {
	if c.closing {
		return
	}
	c.h.m.slow.Inc()
	// The writer may be blocked on a write this client is slow to take:
	// give it a whole WriteTimeout from now to take that and its close.
	_ = c.nc.SetWriteDeadline(c.h.d.Now().Add(c.h.cfg.WriteTimeout))
	c.killLocked(CloseSlowClient, reason)
}

// writer writes the socket of a client that no flusher writes (no
// WriteDelay, or not a plain TCP connection), or that a flusher handed over
// because its socket was full, and sends the close frame. It takes every
// queued frame at once and writes them with one writev, outside the lock.
func (c *client) writer() {
	h := c.h
	c.qmu.Lock()
	c.pinger = time.AfterFunc(h.cfg.PingInterval, c.ping)
	c.qmu.Unlock()
	var batch []qitem
	var bufs net.Buffers
	var deadline time.Time
	var last time.Time // when this writer's last write started
	for {
		<-c.wake
		if h.cfg.WriteDelay > 0 && c.fl == nil {
			// As a flusher's rounds: a client written longer than
			// WriteDelay ago is written at once, a busy one at most
			// once per WriteDelay, with what it queued meanwhile.
			if wait := h.cfg.WriteDelay - time.Since(last); wait > 0 {
				time.Sleep(wait)
			}
		}
		c.qmu.Lock()
		if c.fl != nil && !c.handed && !c.closing {
			c.qmu.Unlock()
			continue // the flusher writes this client
		}
		closing := c.closing
		// A flusher's write in progress ends before the close frame.
		for closing && c.fwriting {
			c.waitRoomLocked()
		}
		carry := c.carry
		bufs = append(bufs[:0], carry...)
		c.carry = nil
		oldest := c.oldest
		batch, c.q = c.q, batch[:0]
		c.nlive = 0
		for _, it := range batch {
			if it.sub != nil {
				it.sub.nq = 0
			}
		}
		if cap(c.q) > 64 {
			c.q = nil // a burst grew it: an idle client keeps no big queue
		}
		c.roomLocked()
		c.qmu.Unlock()
		if closing {
			if len(bufs) > 0 {
				// The rest of a frame cut short goes before the close.
				_ = c.nc.SetWriteDeadline(h.d.Now().Add(h.cfg.WriteTimeout))
				if _, err := bufs.WriteTo(c.nc); err != nil {
					c.qmu.Lock()
					c.closeCode = closeAbnormal
					c.qmu.Unlock()
				}
			}
			c.finish()
			return
		}
		carried := len(bufs)
		for _, it := range batch {
			bufs = append(bufs, it.b)
		}
		if len(bufs) > 0 {
			// Setting a deadline costs as much as a small write: renew it only
			// when less than three quarters of WriteTimeout are left.
			if now := h.d.Now(); deadline.Sub(now) < h.cfg.WriteTimeout*3/4 {
				deadline = now.Add(h.cfg.WriteTimeout)
				_ = c.nc.SetWriteDeadline(deadline)
			}
			b := bufs // WriteTo consumes its receiver
			start := time.Now()
			last = start
			if len(batch) > 0 {
				h.m.stQueue.Observe(start.Sub(oldest).Seconds())
			}
			if _, err := b.WriteTo(c.nc); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					c.qmu.Lock()
					c.killLocked(closeAbnormal, "")
					c.qmu.Unlock()
					_ = c.nc.Close()
					return
				}
				// A socket that took too little for WriteTimeout is
				// a slow client: the deadline can pass before any
				// delivery finds the oldest frame past SlowAfter (no
				// events, or a loaded fan-out). It gets one more
				// WriteTimeout to take the rest of the frame cut
				// short, and then its 4008, from the closing branch;
				// the frames after the cut are dropped.
				c.qmu.Lock()
				if k := len(bufs) - len(b); k < len(bufs) {
					orig := 0
					if k < carried {
						orig = len(carry[k])
					} else {
						orig = len(batch[k-carried].b)
					}
					if len(b[0]) < orig {
						c.carry = net.Buffers{b[0]}
					}
				}
				c.slowLocked("client too slow: write timed out")
				c.wakeWriterLocked() // it may have been closing already
				c.qmu.Unlock()
				clear(batch)
				continue
			}
			clear(batch)
			h.m.stWrite.Observe(time.Since(start).Seconds())
			h.m.writes.Inc()
			h.m.frames.Add(float64(len(bufs) - carried))
			for i := range bufs {
				bufs[i] = nil
			}
		}
		if cap(batch) > 64 {
			batch, bufs = nil, nil
		}
		if c.fl != nil {
			// Give the client back to its flusher once nothing waits;
			// what was queued meanwhile woke this writer again.
			c.qmu.Lock()
			back := len(c.q) == 0 && !c.closing
			if back {
				c.handed = false
			}
			c.qmu.Unlock()
			if back && !deadline.IsZero() {
				// The flusher's writes never wait: a deadline left
				// from this write would fail them once it passed.
				deadline = time.Time{}
				_ = c.nc.SetWriteDeadline(deadline)
			}
		}
	}
}

// finish sends the close frame, when there is one to send, and closes.
func (c *client) finish() {
	if c.closeCode != closeAbnormal {
		_ = c.nc.SetWriteDeadline(c.h.d.Now().Add(c.h.cfg.WriteTimeout))
		_, _ = c.nc.Write(control(opClose, websocket.FormatCloseMessage(c.closeCode, c.closeReason)))
	}
	_ = c.nc.Close()
}
