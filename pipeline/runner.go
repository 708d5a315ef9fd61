package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/streams"
)

// JetStream is what the runner needs from the bus.
type JetStream interface {
	streams.StreamLookup
	streams.Publisher
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// Retry is what the runner does with an input whose step or publish failed
// with an error worth retrying.
type Retry int

const (
	// RetryInPlace keeps the input and retries it (warming its series
	// again) until it succeeds or the runner stops, telling the server
	// it is still working. A stage with per-series order needs it: a
	// redelivery would arrive after newer inputs.
	RetryInPlace Retry = iota
	// RetryRedeliver naks the input with a growing delay and lets the
	// consumer's MaxDeliver bound the attempts: for work queues (jobs),
	// where order does not matter and one bad job must not block the rest.
	RetryRedeliver
)

// Config is a runner's configuration.
type Config struct {
	// Name labels the runner's metrics and logs ("features", ...).
	Name string
	// Stream and Consumer name the durable pull consumer to read.
	Stream, Consumer string
	// Batch bounds the inputs handled together. It is also capped by the
	// consumer's MaxAckPending, which should equal it for a stage with
	// per-series order: then no instance ever has more than one batch in
	// flight, and after a failover the unacked batch comes back before
	// anything newer. 0 means the consumer's MaxAckPending.
	Batch int
	// Pinned consumes through streams.PriorityGroup: one instance owns
	// the consumer, and a change of owner resets every series.
	Pinned bool
	Retry  Retry
	// PublishTimeout bounds waiting for a batch's PubAcks (default 5s).
	PublishTimeout time.Duration
	// LagEvery is how often the consumer's backlog is read (default 15s).
	LagEvery time.Duration
}

// Deps are the runner's collaborators.
type Deps struct {
	JS       JetStream
	Log      *slog.Logger
	Registry prometheus.Registerer
}

// Runner feeds one durable consumer through a Stage.
type Runner struct {
	cfg Config
	js  JetStream
	log *slog.Logger
	m   metrics

	// Owned by the Run goroutine.
	d   driver
	pin string
}

// New validates cfg and builds a runner; it does no I/O.
func New(cfg Config, stage Stage, deps Deps) (*Runner, error) {
	if stage == nil || deps.JS == nil || deps.Log == nil || deps.Registry == nil {
		return nil, errors.New("pipeline: stage, JS, Log and Registry are required")
	}
	if cfg.Name == "" || cfg.Stream == "" || cfg.Consumer == "" {
		return nil, errors.New("pipeline: Name, Stream and Consumer are required")
	}
	if cfg.Batch < 0 {
		return nil, fmt.Errorf("pipeline: batch %d", cfg.Batch)
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if cfg.LagEvery <= 0 {
		cfg.LagEvery = 15 * time.Second
	}
	r := &Runner{
		cfg: cfg, js: deps.JS,
		log: deps.Log.With("stage", cfg.Name, "consumer", cfg.Consumer),
		m:   newMetrics(deps.Registry, cfg.Name),
	}
	r.d = driver{stage: stage, hist: StreamHistory{JS: deps.JS}, warm: map[string]uint64{}, warmed: r.m.warmups.Inc}
	return r, nil
}

// Run consumes until ctx ends, then drains: inputs already fetched are
// handled, published and acked before Run returns. A stop while still
// starting is a clean stop (nil).
func (r *Runner) Run(ctx context.Context) error {
	err := r.run(ctx)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

func (r *Runner) run(ctx context.Context) error {
	cons, err := r.js.Consumer(ctx, r.cfg.Stream, r.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("pipeline: %s: consumer %s: %w", r.cfg.Name, r.cfg.Consumer, err)
	}
	max, ackWait := r.cfg.Batch, 30*time.Second
	if info := cons.CachedInfo(); info != nil {
		if p := info.Config.MaxAckPending; p > 0 && (max == 0 || max > p) {
			max = p
		}
		if info.Config.AckWait > 0 {
			ackWait = info.Config.AckWait
		}
	}
	if max <= 0 {
		max = 256
	}
	in := newInbox()
	opts := []jetstream.PullConsumeOpt{
		jetstream.PullMaxMessages(max),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { r.log.Debug("consume", "err", err) }),
	}
	if r.cfg.Pinned {
		opts = append(opts, jetstream.PullPriorityGroup(streams.PriorityGroup))
	}
	cc, err := cons.Consume(in.put, opts...)
	if err != nil {
		return fmt.Errorf("pipeline: %s: consume: %w", r.cfg.Name, err)
	}
	go r.watchLag(ctx, cons)
	go func() {
		<-ctx.Done()
		cc.Drain()
	}()
	// Inputs run on a context that outlives ctx, so that draining can
	// finish what was fetched instead of failing it; ctx.Done() still
	// ends a retry that would never succeed.
	hctx := context.WithoutCancel(ctx)
	kctx, stopKeep := context.WithCancel(hctx)
	defer stopKeep()
	go in.keepAlive(kctx, ackWait)
	batch := make([]jetstream.Msg, 0, max)
	for {
		select {
		case <-in.signal:
		case <-cc.Closed():
			if in.len() == 0 {
				r.unpin(hctx)
				return nil
			}
		}
		for in.len() > 0 {
			batch = in.take(max, batch[:0])
			if r.cfg.Pinned && r.newOwner(batch) {
				held := r.takeOver(hctx, cons, in, batch)
				for len(held) > 0 {
					n := min(max, len(held))
					r.handle(hctx, ctx.Done(), held[:n])
					held = held[n:]
				}
			} else {
				r.handle(hctx, ctx.Done(), batch)
			}
			in.setBusy(nil)
		}
	}
}

// newOwner says whether batch is the first since this instance became the
// consumer's owner (a start or a new pin id), which resets every series.
func (r *Runner) newOwner(batch []jetstream.Msg) bool {
	pin := batch[0].Headers().Get("Nats-Pin-Id")
	if pin == "" || pin == r.pin {
		return false
	}
	if r.pin != "" {
		r.log.Info("owner changed, warming every series again", "from", r.pin, "to", pin)
	}
	r.pin = pin
	r.d.resetAll()
	return true
}

// takeOver makes a new owner start where the previous one stopped. A crashed
// owner's unacked inputs come back only when their AckWait ends, and the
// server may meanwhile deliver newer inputs to the new owner, which would
// step a series out of order. So the new owner holds what it got, keeping
// it alive, until it holds everything the consumer has in flight, and then
// goes on in stream order.
func (r *Runner) takeOver(ctx context.Context, cons jetstream.Consumer, in *inbox, batch []jetstream.Msg) []jetstream.Msg {
	held := slices.Clone(batch)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		in.setBusy(held)
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := cons.Info(ictx)
		cancel()
		if err != nil {
			r.log.Warn("takeover: consumer info", "err", err)
			break // the stage's covered check is all that is left
		}
		if info.NumAckPending <= len(held)+in.len() {
			break
		}
		select {
		case <-in.signal:
		case <-poll.C:
		}
	}
	// Sorted in a copy: the inbox's keep-alive reads the busy one.
	sorted := slices.Clone(in.take(0, held))
	slices.SortFunc(sorted, func(a, b jetstream.Msg) int { return cmp.Compare(streamSeq(a), streamSeq(b)) })
	in.setBusy(sorted)
	return sorted
}

func streamSeq(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}

// unpin hands the consumer over at once after a clean stop, instead of
// leaving a restarted or standby instance waiting for the pin to expire.
func (r *Runner) unpin(ctx context.Context) {
	if r.pin == "" {
		return // a standby: unpinning would unseat the active instance
	}
	uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := streams.Unpin(uctx, r.js, r.cfg.Stream, r.cfg.Consumer); err != nil {
		r.log.Warn("unpin after stop", "err", err)
	}
}

func (r *Runner) watchLag(ctx context.Context, c jetstream.Consumer) {
	streams.WatchLag(ctx, c, r.cfg.LagEvery, r.m.lag.Set)
}

// item is one input of a batch on its way through.
type item struct {
	raw  jetstream.Msg
	in   Msg
	outs []*nats.Msg
	// rejected is the permanent error that terminates the input.
	rejected error
	// covered: delivered again after its series moved past it.
	covered bool
}

// handle takes a batch to the end: every input acked or terminated, or,
// when stop closes during a retry, the rest handed back in order.
func (r *Runner) handle(ctx context.Context, stop <-chan struct{}, batch []jetstream.Msg) {
	began := time.Now()
	r.m.batch.Observe(float64(len(batch)))
	delay := 100 * time.Millisecond
	for len(batch) > 0 {
		n, err := r.process(ctx, batch)
		batch = batch[n:]
		if err == nil {
			break
		}
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
			break
		}
		r.m.retries.Inc()
		r.log.Warn("batch failed, retrying in place", "subject", batch[0].Subject(), "left", len(batch), "err", err, "in", delay)
		select {
		case <-stop:
			// In order and at once, so that whoever consumes next gets
			// them before anything newer.
			r.settle(batch, "nak", func(m jetstream.Msg) error { return m.Nak() })
			batch = nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
	r.m.duration.Observe(time.Since(began).Seconds())
}

func (r *Runner) settle(batch []jetstream.Msg, outcome string, f func(jetstream.Msg) error) {
	for _, m := range batch {
		if err := f(m); err != nil {
			r.log.Debug("settle failed", "subject", m.Subject(), "outcome", outcome, "err", err)
		}
	}
	r.m.inputs.WithLabelValues(outcome).Add(float64(len(batch)))
}

// process steps the batch in order, publishes every output and acks each
// input whose outputs are all stored. It returns how many inputs it
// settled and, when it stopped short, why.
func (r *Runner) process(ctx context.Context, batch []jetstream.Msg) (int, error) {
	items := make([]item, 0, len(batch))
	var stepErr error
	for _, raw := range batch {
		it, err := r.step(ctx, raw)
		if err != nil {
			stepErr = err
			break
		}
		items = append(items, it)
	}
	var outs []*nats.Msg
	for _, it := range items {
		outs = append(outs, it.outs...)
	}
	stored, pubErr := r.publish(ctx, outs)
	// Settle the inputs whose outputs are all stored.
	done, k := 0, 0
	for _, it := range items {
		if k+len(it.outs) > stored {
			break
		}
		k += len(it.outs)
		done++
		if it.rejected != nil {
			r.log.Warn("input rejected", "subject", it.in.Subject, "seq", it.in.Seq, "err", it.rejected)
			if err := it.raw.TermWithReason(truncate(it.rejected.Error(), 200)); err != nil {
				r.log.Debug("term failed", "subject", it.in.Subject, "err", err)
			}
			r.m.inputs.WithLabelValues("term").Inc()
			continue
		}
		if err := it.raw.Ack(); err != nil {
			r.log.Debug("ack failed", "subject", it.in.Subject, "err", err)
		}
		if it.covered {
			r.log.Debug("input already covered", "subject", it.in.Subject, "seq", it.in.Seq)
			r.m.inputs.WithLabelValues("covered").Inc()
			continue
		}
		r.m.inputs.WithLabelValues("ack").Inc()
	}
	r.m.outputs.Add(float64(stored))
	if pubErr != nil {
		return done, pubErr
	}
	return done, stepErr
}

// step runs one input through the stage, warming its series first when
// needed. An error is a failure worth retrying; a rejection is in the item.
func (r *Runner) step(ctx context.Context, raw jetstream.Msg) (item, error) {
	it := item{raw: raw}
	md, err := raw.Metadata()
	if err != nil {
		it.rejected = streams.Permanent(fmt.Errorf("pipeline: metadata: %w", err))
		return it, nil
	}
	it.in = Msg{Stream: md.Stream, Subject: raw.Subject(), Seq: md.Sequence.Stream, Time: md.Timestamp, Data: raw.Data()}
	it.outs, err = r.run1(ctx, it.in)
	if errors.Is(err, errCovered) {
		it.covered, err = true, nil
	}
	if errors.Is(err, streams.ErrPermanent) {
		it.rejected, err = err, nil
	}
	return it, err
}

func (r *Runner) run1(ctx context.Context, m Msg) ([]*nats.Msg, error) {
	evs, err := r.d.step(ctx, m)
	if err != nil {
		return nil, err
	}
	outs := make([]*nats.Msg, 0, len(evs))
	for _, ev := range evs {
		msg, err := streams.NewMsg(ev)
		if err != nil {
			return nil, invalidOutput(m, err)
		}
		outs = append(outs, msg)
	}
	return outs, nil
}

// publish stores outs in order: all of them asynchronously, then every
// PubAck awaited. From the first one that failed or timed out, the rest go
// again one at a time, in order (the server drops what it already holds by
// msg-id), so an output is never stored after a later one that a single
// connection's in-order delivery could not have put ahead of it. It
// returns how many of outs, from the start, are stored.
func (r *Runner) publish(ctx context.Context, outs []*nats.Msg) (int, error) {
	if len(outs) == 0 {
		return 0, nil
	}
	futs := make([]jetstream.PubAckFuture, 0, len(outs))
	for _, m := range outs {
		f, err := r.js.PublishMsgAsync(m)
		if err != nil {
			break
		}
		futs = append(futs, f)
	}
	timeout := time.NewTimer(r.cfg.PublishTimeout)
	defer timeout.Stop()
	stored := 0
wait:
	for _, f := range futs {
		select {
		case <-f.Ok():
			stored++
		case err := <-f.Err():
			r.log.Debug("async publish failed", "subject", f.Msg().Subject, "err", err)
			break wait
		case <-timeout.C:
			break wait
		}
	}
	for ; stored < len(outs); stored++ {
		r.m.republished.Inc()
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		_, err := r.js.PublishMsg(pctx, outs[stored])
		cancel()
		if err != nil {
			return stored, fmt.Errorf("pipeline: publish %s: %w", outs[stored].Header.Get(jetstream.MsgIDHeader), err)
		}
	}
	return stored, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// StreamHistory answers History from JetStream with streams.Tail.
type StreamHistory struct {
	JS streams.StreamLookup
}

// Tail implements History.
func (h StreamHistory) Tail(ctx context.Context, stream, subject string, n int, before uint64) ([]Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msgs, err := streams.Tail(ctx, h.JS, stream, subject, n, before)
	if err != nil {
		return nil, err
	}
	out := make([]Msg, len(msgs))
	for i, m := range msgs {
		out[i] = Msg{Stream: stream, Subject: subject, Seq: m.Seq, Data: m.Data}
	}
	return out, nil
}
