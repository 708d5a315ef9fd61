package hub

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
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
	// kick wakes run: clients were listed. pause waits until the next
	// round may start (sleep; tests replace it), with timer.
	kick  chan struct{}
	pause func(time.Duration, <-chan struct{}) bool
	timer *time.Timer
	nb    nbWriter // the round's goroutine alone uses it
	// ring batches a round's writes (nil where io_uring is not allowed:
	// noRing). It and the batch's scratch below are the round's alone.
	ring   *sendRing
	noRing bool
	taken  []*client
	rcs    []syscall.RawConn
	each   [][][]byte
}

// startFlushers starts the flushers the first time a client needs one.
func (h *Hub) startFlushers() {
	h.flushOnce.Do(func() {
		for _, f := range h.flushers {
			go f.run(h.flushStop)
		}
	})
}

// run starts a round when clients are listed, at most one per WriteDelay:
// a round runs at once when the last one started at least WriteDelay ago
// (an idle hub writes a frame as soon as its fan-out ends, rather than at
// the next tick of a clock), and otherwise when that WriteDelay is up,
// with what was queued meanwhile: a busy hub still writes each client at
// most once per WriteDelay, several frames per write.
func (f *flusher) run(stop <-chan struct{}) {
	defer f.closeRing()
	var bufs [][]byte
	var last time.Time
	for {
		select {
		case <-f.kick:
		case <-stop:
			return
		}
		if !last.IsZero() {
			if wait := f.h.cfg.WriteDelay - time.Since(last); wait > 0 && !f.pause(wait, stop) {
				return
			}
		}
		f.mu.Lock()
		idle := len(f.dirty) == 0
		f.mu.Unlock()
		if idle {
			continue
		}
		last = time.Now()
		bufs = f.round(bufs)
		f.h.m.round.Observe(time.Since(last).Seconds())
	}
}

// sleep is the flusher's pause until its next round may start; false when
// stop came first.
func (f *flusher) sleep(d time.Duration, stop <-chan struct{}) bool {
	if f.timer == nil {
		f.timer = time.NewTimer(d)
	} else {
		f.timer.Reset(d)
	}
	select {
	case <-f.timer.C:
		return true
	case <-stop:
		return false
	}
}

// list puts c in the next round; the caller holds c.qmu. The first client
// listed wakes the flusher, unless a fan-out is walking its subscribers:
// it wakes the flushers when its walk ends (fanoutDone), so that one
// event's frames go out in one round, not in a round of the first few
// clients and another a WriteDelay later.
func (f *flusher) list(c *client) {
	f.mu.Lock()
	f.dirty = append(f.dirty, c)
	first := len(f.dirty) == 1
	f.mu.Unlock()
	if first && f.h.fanouts.Load() == 0 {
		f.wake()
	}
}

func (f *flusher) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// fanoutStart and fanoutDone bracket a fan-out's walk (topic.dispatch).
func (h *Hub) fanoutStart() { h.fanouts.Add(1) }

func (h *Hub) fanoutDone() {
	h.fanouts.Add(-1)
	for _, f := range h.flushers {
		f.mu.Lock()
		dirty := len(f.dirty) > 0
		f.mu.Unlock()
		if dirty {
			f.wake()
		}
	}
}

// round writes what each listed client queued. bufs is scratch space,
// returned for the next round.
//
// Nine tenths of a round is the system calls themselves (profile at 10,000
// clients; BenchmarkNonBlockingWrite: ~8.5 us of CPU per writev, so ~85 ms
// per round over 10,000 clients whatever the rest does). So where io_uring
// is allowed the round sends a batch of clients at a time with one
// io_uring_enter (sendRing), and elsewhere one writev per client. Around
// them it does as little per client as it can: the counters of writes and
// frames are added once per round, a batch's writes start at the clock
// reading that ended the last one, and the queue's condition is signalled
// only when someone waits on it.
func (f *flusher) round(bufs [][]byte) [][]byte {
	f.mu.Lock()
	dirty := f.dirty
	f.dirty = f.spare[:0]
	f.mu.Unlock()
	f.openRing()
	var st roundStats
	now := time.Now()
	for from := 0; from < len(dirty); from += yieldEvery {
		if from > 0 {
			runtime.Gosched()
			now = time.Now()
		}
		batch := dirty[from:min(len(dirty), from+yieldEvery)]
		bufs, now = f.batch(batch, bufs, now, &st)
		clear(batch)
	}
	if st.writes > 0 {
		f.h.m.writes.Add(float64(st.writes))
	}
	if st.frames > 0 {
		f.h.m.frames.Add(float64(st.frames))
	}
	if st.calls > 0 {
		f.h.m.syscalls.Add(float64(st.calls))
	}
	if cap(dirty) > 1<<16 {
		dirty = nil
	}
	f.mu.Lock()
	f.spare = dirty
	f.mu.Unlock()
	return bufs
}

// openRing sets up the flusher's ring the first time, unless the hub
// writes plainly (no RingWrites) or io_uring is not allowed here.
func (f *flusher) openRing() {
	if f.ring != nil || f.noRing {
		return
	}
	if !f.h.cfg.RingWrites {
		f.noRing = true
		return
	}
	ring, err := newSendRing(yieldEvery)
	if err != nil {
		f.noRing = true
		f.h.log.Info("websocket flusher: one writev per client", "reason", err)
		return
	}
	f.ring = ring
}

func (f *flusher) closeRing() {
	if f.ring != nil {
		f.ring.close()
		f.ring = nil
	}
}

// roundStats are the writes and frames of one round, added to the metrics
// at its end.
type roundStats struct{ writes, frames, calls int }

// batch writes what the clients queued, starting at start (the clock when
// the last batch ended), and returns bufs and when its writes ended.
func (f *flusher) batch(clients []*client, bufs [][]byte, start time.Time, st *roundStats) ([][]byte, time.Time) {
	bufs = bufs[:0]
	f.taken = f.taken[:0]
	f.rcs = f.rcs[:0]
	f.each = f.each[:0]
	for _, c := range clients {
		from := len(bufs)
		var ok bool
		if bufs, ok = f.take(c, bufs, start); ok {
			f.taken = append(f.taken, c)
			f.rcs = append(f.rcs, c.rc)
			f.each = append(f.each, bufs[from:len(bufs):len(bufs)])
		}
	}
	if len(f.taken) == 0 {
		return bufs, start
	}
	var res []int32
	if f.ring != nil && !f.overIOV() {
		var err error
		st.calls++
		if res, err = f.ring.send(f.rcs, f.each); err != nil {
			f.h.log.Warn("websocket flusher: io_uring failed, one writev per client from now on", "err", err)
			f.closeRing()
			f.noRing, res = true, nil
		}
	}
	end := start
	for i, c := range f.taken {
		var n int
		var err error
		if res != nil {
			n, err = ringResult(res[i], f.each[i])
		} else {
			n, err = f.nb.writev(c.rc, f.each[i])
			st.calls++
			end = time.Now()
			f.h.m.stWrite.Observe(end.Sub(start).Seconds())
			start = end
		}
		f.done(c, f.each[i], n, err, st)
	}
	if res != nil {
		end = time.Now()
		f.h.m.stWrite.Observe(end.Sub(start).Seconds())
	}
	clear(f.taken)
	clear(f.rcs)
	clear(f.each)
	clear(bufs)
	return bufs, end
}

// overIOV: a client queued more buffers than one sendmsg takes; the batch
// goes out by writev, which loops over them.
func (f *flusher) overIOV() bool {
	for _, b := range f.each {
		if len(b) > iovMax {
			return true
		}
	}
	return false
}

// ringResult is a sendmsg's completion as writev would have answered.
func ringResult(res int32, bufs [][]byte) (int, error) {
	if res < 0 {
		if errno := syscall.Errno(-res); errno != syscall.EAGAIN {
			return 0, errno
		}
		return 0, errWouldBlock
	}
	want := 0
	for _, b := range bufs {
		want += len(b)
	}
	if int(res) < want {
		return int(res), errWouldBlock
	}
	return int(res), nil
}

// take moves c's queue onto bufs for a write and marks the write under
// way; false when there is nothing for the flusher to write.
func (f *flusher) take(c *client, bufs [][]byte, start time.Time) ([][]byte, bool) {
	c.qmu.Lock()
	c.listed = false
	if c.closing || c.handed || len(c.q) == 0 {
		c.qmu.Unlock()
		return bufs, false
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
	f.h.m.stQueue.Observe(start.Sub(oldest).Seconds())
	return bufs, true
}

// done ends c's write of bufs, of which n bytes went out.
func (f *flusher) done(c *client, bufs [][]byte, n int, err error, st *roundStats) {
	rest := advance(bufs, n)
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.fwriting = false
	c.roomLocked() // a closing writer may be waiting for this write
	switch {
	case err != nil && !errors.Is(err, errWouldBlock):
		c.killLocked(closeAbnormal, "")
		return
	case len(rest) == 0:
		st.writes++
		st.frames += len(bufs)
		return
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
