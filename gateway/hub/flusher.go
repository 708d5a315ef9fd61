package hub

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"time"
)

// With a WriteDelay, plain TCP connections are written by a few flushers,
// one per core, rather than by each client's writer: every WriteDelay a
// flusher takes the queue of each of its clients that has frames and writes
// it with one non-blocking writev. At ten thousand clients the per-client
// writers' wake-up, sleep and park around each write cost as much CPU as
// the write itself, and each frame waited a whole delay; a round waits half
// of one on average and costs one system call per client with frames. A
// write the socket cannot take whole (a client behind) hands the client,
// with the bytes left over, to its own writer, which blocks on it under the
// write deadline as before and gives the client back once its queue is
// empty, so that one slow socket never holds up a round.

// yieldEvery is how many clients a round writes before it lets other
// goroutines run. A round of thousands of writes runs for tens to hundreds
// of milliseconds on a busy machine, and with a flusher on every P the
// channel readers and fan-outs that feed every client (the NATS client's
// read loop, the consumer's callback, the fan-out: several hand-offs per
// event) each waited for the scheduler's 10 ms preemption of a flusher.
const yieldEvery = 64

// flusher is one round-robin writer over a share of the clients.
type flusher struct {
	h     *Hub
	mu    sync.Mutex
	dirty []*client // clients that queued frames since the last round
	spare []*client
	nb    nbWriter // the round's goroutine alone uses it
}

// startFlushers starts the flushers the first time a client needs one.
func (h *Hub) startFlushers() {
	h.flushOnce.Do(func() {
		for _, f := range h.flushers {
			go f.run(h.flushStop)
		}
	})
}

func (f *flusher) run(stop <-chan struct{}) {
	t := time.NewTicker(f.h.cfg.WriteDelay)
	defer t.Stop()
	var bufs [][]byte
	for {
		select {
		case <-t.C:
		case <-stop:
			return
		}
		start := time.Now()
		bufs = f.round(bufs)
		f.h.m.round.Observe(time.Since(start).Seconds())
	}
}

// list puts c in the next round; the caller holds c.qmu.
func (f *flusher) list(c *client) {
	f.mu.Lock()
	f.dirty = append(f.dirty, c)
	f.mu.Unlock()
}

// round writes what each listed client queued. bufs is scratch space,
// returned for the next round.
//
// Nine tenths of a round is the writev system calls themselves (profile at
// 10,000 clients; BenchmarkNonBlockingWrite: ~8.5 us of CPU per write, so
// ~85 ms per round over 10,000 clients whatever the rest does). Around them
// it does as little per client as it can: the counters of writes and frames
// are added once per round, a client's write starts at the clock reading
// that ended the last one, and the queue's condition is signalled only when
// someone waits on it. Together that was about 2% of a round.
func (f *flusher) round(bufs [][]byte) [][]byte {
	f.mu.Lock()
	dirty := f.dirty
	f.dirty = f.spare[:0]
	f.mu.Unlock()
	var st roundStats
	now := time.Now()
	for i, c := range dirty {
		bufs, now = f.flush(c, bufs[:0], now, &st)
		clear(bufs)
		dirty[i] = nil
		if i%yieldEvery == yieldEvery-1 {
			runtime.Gosched()
			now = time.Now()
		}
	}
	if st.writes > 0 {
		f.h.m.writes.Add(float64(st.writes))
	}
	if st.frames > 0 {
		f.h.m.frames.Add(float64(st.frames))
	}
	if cap(dirty) > 1<<16 {
		dirty = nil
	}
	f.mu.Lock()
	f.spare = dirty
	f.mu.Unlock()
	return bufs
}

// roundStats are the writes and frames of one round, added to the metrics
// at its end.
type roundStats struct{ writes, frames int }

// flush writes what c queued, starting at start (the clock when the last
// client's write ended), and returns bufs and when its own write ended.
func (f *flusher) flush(c *client, bufs [][]byte, start time.Time, st *roundStats) ([][]byte, time.Time) {
	h := f.h
	c.qmu.Lock()
	c.listed = false
	if c.closing || c.handed || len(c.q) == 0 {
		c.qmu.Unlock()
		return bufs, start
	}
	for i, it := range c.q {
		bufs = append(bufs, it.b)
		if it.sub != nil {
			it.sub.nq = 0
		}
		c.q[i] = qitem{}
	}
	c.q = c.q[:0]
	c.nlive = 0
	if cap(c.q) > 64 {
		c.q = nil // a burst grew it: an idle client keeps no big queue
	}
	oldest := c.oldest
	c.fwriting = true
	c.roomLocked()
	c.qmu.Unlock()

	h.m.stQueue.Observe(start.Sub(oldest).Seconds())
	n, err := f.nb.writev(c.rc, bufs)
	end := time.Now()
	h.m.stWrite.Observe(end.Sub(start).Seconds())
	rest := advance(bufs, n)

	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.fwriting = false
	c.roomLocked() // a closing writer may be waiting for this write
	switch {
	case err != nil && !errors.Is(err, errWouldBlock):
		c.killLocked(closeAbnormal, "")
		return bufs, end
	case len(rest) == 0:
		st.writes++
		st.frames += len(bufs)
		return bufs, end
	}
	if n > 0 {
		st.writes++
	}
	st.frames += len(bufs)
	// The socket is full: the client's writer takes over, with what is
	// left of this write before anything queued since (or before its
	// close frame, if it is closing now).
	c.carry = append(net.Buffers(nil), rest...)
	c.handed = true
	c.wakeWriterLocked()
	return bufs, end
}

// advance drops the first n bytes of bufs, keeping the rest in order.
func advance(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 {
		rest := make([][]byte, len(bufs))
		copy(rest, bufs)
		rest[0] = rest[0][n:]
		return rest
	}
	return bufs
}
