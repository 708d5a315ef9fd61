package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// item is one input of a flight.
type item struct {
	raw jetstream.Msg
	in  Msg
	// outs is how many of the flight's outputs, next in order, are this
	// input's.
	outs int
	// rejected is the permanent error that terminates the input.
	rejected error
	// covered: delivered again after its series moved past it.
	covered bool
}

// flight is one batch on its way: stepped in order, each input's outputs
// published asynchronously as soon as it is stepped, then every PubAck
// awaited and the inputs settled. The runner keeps at most two, so that a
// backlog's next batch is stepped while the server stores the previous
// one, and lands them in order.
type flight struct {
	batch []jetstream.Msg
	items []item
	outs  []*nats.Msg
	// acks are the outputs sent, in order: outs[i] is acks[i].
	acks []pending
	// batches are the fast batches the flight sent into.
	batches []*fastBatch
	// stepErr stopped the stepping short: items are the inputs before it.
	stepErr error
	// refused: a send failed or met an ended batch, so the rest of the
	// outputs go one at a time when the flight lands, and nothing behind
	// it may be published before.
	refused bool
	// lastDone says the last PubAck came in (lastErr its failure) while
	// the runner waited for inputs: its future yields it once only.
	lastDone bool
	lastErr  error
	began    time.Time
	// free are outputs of a batch that landed, to be filled again
	// (streams.RenewMsg) rather than made anew. async: an output went
	// by PublishMsgAsync, whose future keeps the message to send again
	// (no responders), so the flight's outputs are not reused.
	free  []*nats.Msg
	async bool
}

// reset empties fl for batch, keeping its buffers. It is called on a
// flight that has landed, or whose inputs went into a retry: nothing
// sends its outputs any more.
func (fl *flight) reset(batch []jetstream.Msg) {
	free := fl.free
	if !fl.async {
		free = append(free, fl.outs...)
	}
	clear(fl.items)
	clear(fl.outs)
	clear(fl.acks)
	clear(fl.batches)
	*fl = flight{batch: batch, items: fl.items[:0], outs: fl.outs[:0], acks: fl.acks[:0], batches: fl.batches[:0], free: free}
}

// newOut is a message for the next output, a landed one when fl has one.
func (fl *flight) newOut(ev streams.Event) (*nats.Msg, error) {
	n := len(fl.free)
	if n == 0 {
		return streams.NewMsg(ev)
	}
	msg := fl.free[n-1]
	if err := streams.RenewMsg(msg, ev); err != nil {
		return nil, err
	}
	fl.free[n-1] = nil
	fl.free = fl.free[:n-1]
	return msg, nil
}

// release tells the batches fl sent into that it has landed (or was
// dropped for a retry).
func (fl *flight) release() {
	for _, b := range fl.batches {
		b.flights--
	}
	clear(fl.batches)
	fl.batches = fl.batches[:0]
}

func (fl *flight) uses(b *fastBatch) bool {
	for _, u := range fl.batches {
		if u == b {
			return true
		}
	}
	return false
}

// idle waits while fl's PubAcks come in: until the last is in, more
// inputs arrive (signal), or bound passes.
func (r *Runner) idle(fl *flight, signal <-chan struct{}, bound time.Duration) {
	if len(fl.acks) == 0 || fl.lastDone {
		return
	}
	last := fl.acks[len(fl.acks)-1]
	t := time.NewTimer(bound)
	defer t.Stop()
	if last.b != nil {
		for {
			acked, ended, wake := last.b.state()
			if acked >= last.seq || ended {
				return
			}
			r.bs.needAck(last.b, last.seq)
			select {
			case <-signal:
				return
			case <-wake:
			case <-t.C:
				return
			}
		}
	}
	select {
	case <-signal:
	case <-last.fut.Ok():
		fl.lastDone = true
	case err := <-last.fut.Err():
		fl.lastDone, fl.lastErr = true, err
	case <-t.C:
	}
}

// launch steps fl's batch in order, publishing each input's outputs
// asynchronously as it goes, and stops at the first step that fails with
// an error worth retrying.
func (r *Runner) launch(ctx context.Context, fl *flight) {
	fl.began = time.Now()
	r.m.batch.Observe(float64(len(fl.batch)))
	for _, raw := range fl.batch {
		from := len(fl.outs)
		it, err := r.step(ctx, raw, fl)
		if err != nil {
			fl.stepErr = err
			return
		}
		fl.items = append(fl.items, it)
		// After a refused send the rest go one at a time, in order,
		// when the flight lands.
		for _, m := range fl.outs[from:] {
			if fl.refused {
				break
			}
			if err := r.publish(ctx, fl, m); err != nil {
				r.log.Debug("publish refused", "subject", m.Subject, "err", err)
				fl.refused = true
				break
			}
		}
	}
}

// publish sends m into its stream's fast batch, or asynchronously on its
// own when the stream takes no batches.
func (r *Runner) publish(ctx context.Context, fl *flight, m *nats.Msg) error {
	stream, err := r.streamOf(ctx, m.Subject)
	if err != nil {
		return err
	}
	tok, err := r.token(ctx, stream.name)
	if err != nil {
		return err
	}
	if stream.batched {
		return r.sendBatched(fl, stream.name, m, tok)
	}
	if tok != nil {
		// Expectations on one subject go one at a time on a
		// replicated stream (server_fence.go).
		return errFencedAlone
	}
	fl.async = true
	f, err := r.js.PublishMsgAsync(m)
	if err != nil {
		return err
	}
	fl.acks = append(fl.acks, pending{fut: f})
	return nil
}

// step runs one input through the stage, warming its series first when
// needed, and appends its outputs to fl's. An error is a failure worth
// retrying; a rejection is in the item.
func (r *Runner) step(ctx context.Context, raw jetstream.Msg, fl *flight) (item, error) {
	it := item{raw: raw}
	md, err := raw.Metadata()
	if err != nil {
		it.rejected = streams.Permanent(fmt.Errorf("pipeline: metadata: %w", err))
		return it, nil
	}
	it.in = Msg{Stream: md.Stream, Subject: raw.Subject(), Seq: md.Sequence.Stream, Time: md.Timestamp, Data: raw.Data()}
	r.stepping.Store(time.Now().UnixNano())
	evs, err := r.d.step(ctx, it.in)
	r.stepping.Store(0)
	switch {
	case errors.Is(err, errCovered):
		it.covered = true
		return it, nil
	case errors.Is(err, streams.ErrPermanent):
		it.rejected = err
		return it, nil
	case err != nil:
		return it, err
	}
	from := len(fl.outs)
	for _, ev := range evs {
		msg, err := fl.newOut(ev)
		if err != nil {
			clear(fl.outs[from:])
			fl.outs = fl.outs[:from]
			it.rejected = invalidOutput(it.in, err)
			return it, nil
		}
		fl.outs = append(fl.outs, msg)
	}
	it.outs = len(evs)
	return it, nil
}

// land waits for fl's PubAcks and acks each input whose outputs are all
// stored. It returns how many inputs of fl's batch it settled and, when
// it stopped short, why.
func (r *Runner) land(ctx context.Context, fl *flight) (int, error) {
	stored, pubErr := r.confirm(ctx, fl)
	fl.release()
	done, k := 0, 0
	var acked, covered, termed int
	for i := range fl.items {
		it := &fl.items[i]
		if k+it.outs > stored {
			break
		}
		k += it.outs
		done++
		switch {
		case it.rejected != nil:
			r.log.Warn("input rejected", "subject", it.in.Subject, "seq", it.in.Seq, "err", it.rejected)
			if err := it.raw.TermWithReason(truncate(it.rejected.Error(), 200)); err != nil {
				r.log.Debug("term failed", "subject", it.in.Subject, "err", err)
			}
			termed++
			continue
		case it.covered:
			r.log.Debug("input already covered", "subject", it.in.Subject, "seq", it.in.Seq)
			covered++
		default:
			acked++
		}
		if err := it.raw.Ack(); err != nil {
			r.log.Debug("ack failed", "subject", it.in.Subject, "err", err)
		}
	}
	r.m.acked.Add(float64(acked))
	r.m.covered.Add(float64(covered))
	r.m.termed.Add(float64(termed))
	r.m.outputs.Add(float64(stored))
	if pubErr != nil {
		return done, pubErr
	}
	return done, fl.stepErr
}

// confirm waits for fl's PubAcks in order. From the first one that failed
// or timed out, the rest go again one at a time, in order (the server
// drops what it already holds by msg-id). A fast batch stores only a
// prefix of what it was sent, so an output is then never stored after a
// later one; an output published asynchronously on its own could have
// been, by a new stream leader, while the old one lost it. It returns how
// many of fl's outputs, from the start, are stored.
func (r *Runner) confirm(ctx context.Context, fl *flight) (int, error) {
	stored := 0
	if len(fl.acks) > 0 {
		timeout := time.NewTimer(r.cfg.PublishTimeout)
		defer timeout.Stop()
	wait:
		for i, p := range fl.acks {
			if p.b != nil {
				if !r.bs.awaitBatched(p, timeout.C) {
					r.m.cut.Inc()
					why := p.b.reason()
					r.log.Debug("fast batch ended short", "stream", p.b.stream, "seq", p.seq, "err", why)
					if r.fence != nil && wrongLastSeq(why) {
						// The batch's first message met another
						// owner's marker, or a stale token.
						if err := r.fenced(ctx, p.b.stream, why); errors.Is(err, ErrFenced) {
							return stored, err
						}
					}
					break wait
				}
				stored++
				continue
			}
			if i == len(fl.acks)-1 && fl.lastDone {
				if fl.lastErr == nil {
					stored++
				}
				break
			}
			// What has come in first: a timer that ran out while the
			// runner stepped the next flight must not win over a
			// PubAck that is already there.
			select {
			case <-p.fut.Ok():
				stored++
				continue
			case err := <-p.fut.Err():
				r.log.Debug("async publish failed", "subject", p.fut.Msg().Subject, "err", err)
				break wait
			default:
			}
			select {
			case <-p.fut.Ok():
				stored++
			case err := <-p.fut.Err():
				r.log.Debug("async publish failed", "subject", p.fut.Msg().Subject, "err", err)
				break wait
			case <-timeout.C:
				break wait
			}
		}
	}
	for ; stored < len(fl.outs); stored++ {
		r.m.republished.Inc()
		if err := r.publishAlone(ctx, fl.outs[stored]); err != nil {
			return stored, err
		}
	}
	return stored, nil
}

// errFencedAlone turns a fenced output into a stream that takes no
// batches to the one-at-a-time path, where it waits for its PubAck.
var errFencedAlone = errors.New("pipeline: fenced output goes alone")

// publishAlone publishes m and waits for its PubAck, carrying the fence's
// expectation when the runner owns a partition.
func (r *Runner) publishAlone(ctx context.Context, m *nats.Msg) error {
	out := m
	var stream string
	if r.fence != nil {
		s, err := r.streamOf(ctx, m.Subject)
		if err != nil {
			return err
		}
		stream = s.name
		tok, err := r.token(ctx, stream)
		if err != nil {
			return err
		}
		if tok != nil {
			out = withToken(m, *tok)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	_, err := r.js.PublishMsg(pctx, out)
	cancel()
	if err == nil {
		return nil
	}
	err = fmt.Errorf("pipeline: publish %s: %w", m.Header.Get(jetstream.MsgIDHeader), err)
	if r.fence != nil && out != m && wrongLastSeq(err) {
		return r.fenced(ctx, stream, err)
	}
	return err
}

// finish lands fl and takes what it could not settle to the end (see
// retry). next is the flight launched behind fl, or nil; finish returns
// it when it is still to land, or nil when its inputs went into the
// retry.
func (r *Runner) finish(ctx context.Context, stop <-chan struct{}, fl, next *flight) *flight {
	defer func(began time.Time) { r.m.duration.Observe(time.Since(began).Seconds()) }(fl.began)
	n, err := r.land(ctx, fl)
	if next == nil {
		// Nothing follows: a batch left open would end on the server's
		// inactivity timer, and the next flight's first send fail.
		r.bs.closeIdle()
	}
	if err == nil {
		return next
	}
	rest := fl.batch[n:]
	if next != nil && r.cfg.Retry == RetryInPlace {
		// next was stepped after inputs that are now retried: it is
		// retried behind them, in order. Its outputs already published
		// go again under the same msg-ids, which the server drops.
		rest = append(slices.Clone(rest), next.batch...)
		next.release()
		next = nil
	}
	r.retry(ctx, stop, rest, err)
	return next
}

// handle takes a batch to the end, alone.
func (r *Runner) handle(ctx context.Context, stop <-chan struct{}, batch []jetstream.Msg) {
	fl := &flight{batch: batch}
	r.launch(ctx, fl)
	r.finish(ctx, stop, fl, nil)
}

// retry takes the rest of a batch whose step or publish failed with err to
// the end: every input acked or terminated, or handed back in order when
// stop closes during a retry in place; under RetryRedeliver, handed back
// at once for a delayed redelivery.
func (r *Runner) retry(ctx context.Context, stop <-chan struct{}, batch []jetstream.Msg, err error) {
	delay := 100 * time.Millisecond
	for len(batch) > 0 {
		// Whatever the stage holds may include inputs whose outputs are
		// not stored: warm every series again before going on.
		r.d.resetAll()
		if r.cfg.Retry == RetryRedeliver {
			r.log.Debug("input retried", "subject", batch[0].Subject(), "err", err)
			r.settle(batch, "nak", func(m jetstream.Msg) error {
				d := time.Second
				if md, err := m.Metadata(); err == nil {
					d = streams.NakDelay(md.NumDelivered)
				}
				return m.NakWithDelay(d)
			})
			return
		}
		r.m.retries.Inc()
		r.log.Warn("batch failed, retrying in place", "subject", batch[0].Subject(), "left", len(batch), "err", err, "in", delay)
		select {
		case <-stop:
			// In order and at once, so that whoever consumes next gets
			// them before anything newer.
			r.settle(batch, "nak", func(m jetstream.Msg) error { return m.Nak() })
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
		fl := &flight{batch: batch}
		r.launch(ctx, fl)
		var n int
		n, err = r.land(ctx, fl)
		r.bs.closeIdle()
		batch = batch[n:]
		if err == nil {
			return
		}
	}
}

func (r *Runner) settle(batch []jetstream.Msg, outcome string, f func(jetstream.Msg) error) {
	for _, m := range batch {
		if err := f(m); err != nil {
			r.log.Debug("settle failed", "subject", m.Subject(), "outcome", outcome, "err", err)
		}
	}
	r.m.inputs.WithLabelValues(outcome).Add(float64(len(batch)))
}
