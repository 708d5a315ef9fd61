package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/lease"
	"cryptostream/streams"
)

// JetStream is what the runner needs from the bus.
type JetStream interface {
	streams.StreamLookup
	streams.Publisher
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
	// StreamNameBySubject and Conn serve the fast-ingest batches (batch.go).
	StreamNameBySubject(ctx context.Context, subject string) (string, error)
	Conn() *nats.Conn
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
	// Batch bounds the inputs in flight: fetched and not yet acked. The
	// runner handles them as two batches of half as many, stepping one
	// while the server stores the other's outputs. It is also capped by
	// the consumer's MaxAckPending, which should equal it for a stage
	// with per-series order: then after a failover what the lost
	// instance held comes back before anything newer. 0 means the
	// consumer's MaxAckPending.
	Batch int
	// Pinned consumes through streams.PriorityGroup: one instance owns
	// the consumer, and a change of owner resets every series.
	Pinned bool
	Retry  Retry
	// PublishTimeout bounds waiting for a batch's PubAcks (default 5s).
	PublishTimeout time.Duration
	// LagEvery is how often the consumer's backlog is read (default 15s).
	LagEvery time.Duration
	// Partitioned shares the stage by symbol with its other instances
	// (see partition.go): Consumer and Pinned are then those of each
	// partition, and Deps.Leases is required.
	Partitioned *streams.Partitioned
	// LeaseTTL is how long a partition's lease outlives its owner's last
	// renewal (default DefaultLeaseTTL).
	LeaseTTL time.Duration
	// With are other streams partitioned by the same symbols, whose
	// partitions go with Partitioned's: the instance that owns a symbol
	// also consumes that symbol's consumer of each, under the same lease
	// and fence, so that a stage whose state joins several streams (the
	// notifier's closes, ticks and predictions) holds a symbol's whole
	// state on one instance. Only with Partitioned.
	With []Companion
}

// Companion is a stream whose partitions follow a partitioned stage's
// (Config.With): its per-symbol consumers, and the stage that handles
// them.
type Companion struct {
	// Name labels its runners' metrics and logs.
	Name        string
	Partitioned streams.Partitioned
	Stage       Stage
}

// Deps are the runner's collaborators.
type Deps struct {
	JS       JetStream
	Log      *slog.Logger
	Registry prometheus.Registerer
	// Leases is the leases bucket, for a partitioned stage; when nil, Run
	// opens streams.BucketLeases through JS.
	Leases Leases
	// Instance names this instance among a partitioned stage's; a random
	// id when empty.
	Instance string
	// OnOwner, when set, is told each time this instance takes (true) or
	// has given up (false) a partition: after the partition's runner has
	// drained, or once its lease may have expired and nothing more is
	// stepped or published, so that its inputs were all handled within
	// the call pair. It may be called from several goroutines.
	OnOwner func(partition string, owned bool)
	// Now is the clock of a partitioned stage's lease deadlines; time.Now
	// when nil.
	Now func() time.Time
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
	bs  *batches

	// For a partitioned stage.
	leases  Leases
	id      string
	baseLog *slog.Logger
	reg     prometheus.Registerer
	onOwner func(string, bool)
	now     func() time.Time
	// setLag reports the consumer's backlog; the group sums its
	// partitions'.
	setLag func(float64)
	// fence is a partition owner's server-side fence (server_fence.go);
	// nil for a runner that owns no partition.
	fence *serverFence
	// consumerInfo asks the server what the consumer has in flight; a
	// test stands between to force an interleaving.
	consumerInfo func(context.Context, jetstream.Consumer) (*jetstream.ConsumerInfo, error)
	// resetOnMove: the runner owns its consumer through a lease, so that
	// a new pin while it runs (the consumer's leader moved with a lost
	// node) is its own, and it may rewind the consumer to its ack floor
	// instead of waiting AckWait for the deliveries lost on the way.
	resetOnMove bool
	// resetConsumer rewinds a consumer to its ack floor, answered once
	// the reset is applied, with the sequence it restarts from; a test
	// stands between to delay or lose it.
	resetConsumer func(ctx context.Context, stream, consumer string) (uint64, error)
	// alive says whether what the runner holds may still be worked on:
	// a partition runner's inputs may not once its fence's deadline has
	// passed, and are then no longer kept alive, so that a runner stuck
	// in a step does not keep them from its partition's next owner.
	alive func() bool
	// stepping is when the step under way began (Unix nanoseconds), 0
	// between steps: the partition's round stops renewing the lease of a
	// stage stuck in a step (see stuckStep).
	stepping atomic.Int64
}

// New validates cfg and builds a runner; it does no I/O.
func New(cfg Config, stage Stage, deps Deps) (*Runner, error) {
	if stage == nil || deps.JS == nil || deps.Log == nil || deps.Registry == nil {
		return nil, errors.New("pipeline: stage, JS, Log and Registry are required")
	}
	if cfg.Name == "" || cfg.Stream == "" || (cfg.Consumer == "" && cfg.Partitioned == nil) {
		return nil, errors.New("pipeline: Name, Stream and Consumer are required")
	}
	if len(cfg.With) > 0 && cfg.Partitioned == nil {
		return nil, errors.New("pipeline: With needs Partitioned")
	}
	for _, c := range cfg.With {
		if c.Stage == nil || c.Name == "" {
			return nil, errors.New("pipeline: a companion needs a Name and a Stage")
		}
	}
	if cfg.Partitioned != nil && deps.Leases == nil {
		if _, ok := deps.JS.(leaseOpener); !ok {
			return nil, errors.New("pipeline: a partitioned stage needs Leases")
		}
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
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
	r.leases, r.id, r.baseLog, r.reg, r.onOwner = deps.Leases, deps.Instance, deps.Log, deps.Registry, deps.OnOwner
	if r.id == "" {
		r.id = lease.NewID()
	}
	if r.onOwner == nil {
		r.onOwner = func(string, bool) {}
	}
	r.now = deps.Now
	if r.now == nil {
		r.now = time.Now
	}
	r.setLag = r.m.lag.Set
	r.consumerInfo = func(ctx context.Context, c jetstream.Consumer) (*jetstream.ConsumerInfo, error) { return c.Info(ctx) }
	r.resetConsumer = r.reset
	r.alive = func() bool { return true }
	r.bs = newBatches(deps.JS.Conn())
	r.d = driver{stage: stage, hist: StreamHistory{JS: deps.JS}, warm: map[string]uint64{}, warmed: func(d time.Duration) {
		r.m.warmups.Inc()
		r.m.warmupSeconds.Observe(d.Seconds())
	}}
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
	if r.cfg.Partitioned != nil {
		return r.runPartitioned(ctx)
	}
	defer r.bs.stop()
	cons, err := r.js.Consumer(ctx, r.cfg.Stream, r.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("pipeline: %s: consumer %s: %w", r.cfg.Name, r.cfg.Consumer, err)
	}
	window, ackWait := r.cfg.Batch, 30*time.Second
	if info := cons.CachedInfo(); info != nil {
		if p := info.Config.MaxAckPending; p > 0 && (window == 0 || window > p) {
			window = p
		}
		if info.Config.AckWait > 0 {
			ackWait = info.Config.AckWait
		}
	}
	if window <= 0 {
		window = 256
	}
	in := newInbox()
	opts := []jetstream.PullConsumeOpt{
		jetstream.PullMaxMessages(window),
		// A pull request waiting on a consumer leader that is lost with
		// its node is noticed only when two heartbeats are missed: half
		// the expiry each, so the default 30s expiry stalled a consumer
		// 30s after a node loss (TestClusterFailover).
		jetstream.PullExpiry(pullExpiry),
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
	go in.keepAlive(kctx, ackWait, r.alive)
	stop := ctx.Done()
	// Two flights at most, window inputs between them: while one awaits its
	// PubAcks the next is stepped, so a backlog keeps the stage and the
	// server busy at once. Each is half the window, so that the second
	// is already delivered when the first is published.
	per := max(1, window/2)
	var flights [2]flight
	var prev *flight
	for {
		// Nothing is stepped past a failed step, nor published behind
		// an output that still has to go one at a time.
		canLaunch := prev == nil || (prev.stepErr == nil && !prev.refused && len(prev.batch) < window)
		switch {
		case prev == nil && in.len() == 0:
			select {
			case <-in.signal:
			case <-cc.Closed():
				if in.len() == 0 {
					r.unpin(hctx)
					return nil
				}
			}
		case prev != nil && canLaunch && in.len() == 0:
			r.idle(prev, in.signal, r.cfg.PublishTimeout)
		}
		var cur *flight
		if canLaunch && in.len() > 0 {
			cur = &flights[0]
			if prev == cur {
				cur = &flights[1]
			}
			inflight := 0
			if prev != nil {
				inflight = len(prev.batch)
			}
			cur.reset(in.take(min(per, window-inflight), cur.batch[:0]))
			if r.cfg.Pinned && r.pinChanged(cur.batch) {
				// A new owner starts from nothing: what is in flight
				// lands first.
				if prev != nil {
					r.finish(hctx, stop, prev, nil)
					prev = nil
				}
				moved := r.pin != ""
				r.newOwner(cur.batch)
				began := time.Now()
				held, ok := r.takeOver(hctx, stop, cons, in, cur.batch, moved && r.resetOnMove)
				if !ok {
					r.unpin(hctx)
					return nil
				}
				// Timed, and told when a pin moved or a partition was
				// taken, for a failover's breakdown of its resume:
				// TestClusterFailover's resumes of 10-15 s logged
				// nothing between the fence claim and the first output.
				waited := time.Since(began)
				r.m.takeoverSeconds.Observe(waited.Seconds())
				if moved || r.resetOnMove {
					r.log.Info("takeover: every input in flight held, going on in order", "waited", waited, "held", len(held))
				}
				for len(held) > 0 {
					n := min(window, len(held))
					r.handle(hctx, stop, held[:n])
					held = held[n:]
				}
				in.setBusy()
				continue
			}
			r.launch(hctx, cur)
		}
		if prev != nil {
			cur = r.finish(hctx, stop, prev, cur)
		}
		prev = cur
		if prev != nil {
			in.setBusy(prev.batch)
		} else {
			in.setBusy()
		}
	}
}

// pullExpiry bounds a pull request's life, and so how long a consumer
// whose leader moved waits for its next pull: twice its heartbeat, half of
// it.
const pullExpiry = 5 * time.Second

// pinChanged says whether batch is the first since this instance became
// the consumer's owner (a start or a new pin id).
func (r *Runner) pinChanged(batch []jetstream.Msg) bool {
	pin := batch[0].Headers().Get("Nats-Pin-Id")
	return pin != "" && pin != r.pin
}

// newOwner takes the ownership batch brings, which resets every series
// when the pin moved while the runner ran.
func (r *Runner) newOwner(batch []jetstream.Msg) {
	pin := batch[0].Headers().Get("Nats-Pin-Id")
	r.m.owners.Inc()
	if r.pin == "" {
		// The runner's first pin: its series are new, or kept from a
		// retake of the same partition that nobody held in between
		// (partition.go's kept).
		r.pin = pin
		return
	}
	r.log.Info("owner changed, warming every series again", "from", r.pin, "to", pin)
	r.pin = pin
	r.d.resetAll()
}

// takeOver makes a new owner start where the previous one stopped. A crashed
// owner's unacked inputs come back only when their AckWait ends, and the
// server may meanwhile deliver newer inputs to the new owner, which would
// step a series out of order: the newer input's warm-up would take in the
// lost ones from history without stepping them, and their redelivery would
// then be covered, so what they should have produced is never published.
// So the new owner holds what it got, keeping it alive, until it holds
// everything the consumer has in flight, and then goes on in stream order.
// It returns false, having handed back everything it held, when stop closes
// first: going on would step out of order.
//
// With reset, the runner holds its consumer's lease and the new pin is its
// own (a lost node took the consumer's leader, and with it deliveries that
// never arrived: TestClusterFailover stalled 30 s, AckWait, in 5 of 55
// runs). It rewinds the consumer to its ack floor first, so that whatever
// is in flight comes again at once; a reset not answered is tried again
// each second. Once one is answered, the server has forgotten what it
// delivered before and delivers again, in stream order, from the sequence
// it was reset to: only what the runner holds from there up to what the
// server has delivered counts, and what it holds beyond (copies from
// before the reset) is dropped, to come again. Nothing held is dropped at
// the answer itself: redeliveries may arrive before it does.
func (r *Runner) takeOver(ctx context.Context, stop <-chan struct{}, cons jetstream.Consumer, in *inbox, batch []jetstream.Msg, reset bool) ([]jetstream.Msg, bool) {
	held := slices.Clone(batch)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	// The last time the wait was logged: once a second at most, so that a
	// takeover that waits long (TestClusterFailover's 30 s stalls) says
	// what it waits for.
	var logged, resetAt time.Time
	// from is the sequence the consumer was reset to, once it was.
	var from uint64
	for warned := false; ; {
		if reset && time.Since(resetAt) >= time.Second {
			resetAt = time.Now()
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			seq, err := r.resetConsumer(rctx, r.cfg.Stream, r.cfg.Consumer)
			cancel()
			if err != nil {
				r.log.Warn("takeover: reset to the ack floor", "err", err)
			} else {
				reset, from = false, max(seq, 1)
				r.log.Info("takeover: consumer reset to its ack floor", "from", from, "held", len(held))
			}
		}
		// Taken before asking, and only what was taken goes on from
		// here: an input delivered while the answer is on its way is in
		// the server's count only if it was delivered before the server
		// answered, so counting it afterwards could stand in for an input
		// still held by the lost owner (issue 12's missed alert); and
		// after a reset, one delivered after the answer lies beyond the
		// answer's last delivered, where only copies from before the
		// reset are dropped: dropping it lost it for AckWait
		// (TestPartitionTakeoverKeepsWhatCameAfterItsAnswer). Later
		// inputs stay queued, behind what this returns. Distinct
		// sequences, because an input whose AckWait ran out in our hands
		// comes again and is held twice.
		held = in.take(0, held)
		in.setBusy(held)
		seqs := heldSeqs(held)
		have := len(seqs)
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := r.consumerInfo(ictx, cons)
		cancel()
		if err == nil && from > 0 {
			have = 0
			for q := range seqs {
				if q >= from && q <= info.Delivered.Stream {
					have++
				}
			}
		}
		switch {
		case err != nil:
			// Not knowing what is in flight is no reason to step out of
			// order: ask again.
			if !warned {
				r.log.Warn("takeover: consumer info", "err", err)
				warned = true
			}
		case info.NumAckPending > have:
			if time.Since(logged) >= time.Second {
				logged = time.Now()
				r.log.Debug("takeover: waiting for inputs in flight", "held", have, "ack_pending", info.NumAckPending,
					"delivered", info.Delivered.Stream, "ack_floor", info.AckFloor.Stream)
			}
		default:
			// Sorted in a copy: the inbox's keep-alive reads the busy one.
			// Of two copies of an input the later delivery is kept, the
			// one the server holds in flight now.
			sorted := slices.Clone(held)
			slices.Reverse(sorted)
			slices.SortStableFunc(sorted, func(a, b jetstream.Msg) int { return cmp.Compare(streamSeq(a), streamSeq(b)) })
			sorted = slices.CompactFunc(sorted, func(a, b jetstream.Msg) bool { return streamSeq(a) == streamSeq(b) })
			if from > 0 {
				sorted = slices.DeleteFunc(sorted, func(m jetstream.Msg) bool {
					q := streamSeq(m)
					return q < from || q > info.Delivered.Stream
				})
			}
			in.setBusy(sorted)
			return sorted, true
		}
		select {
		case <-in.signal:
		case <-poll.C:
		case <-stop:
			// Handed back in order, for whoever consumes next to take
			// over from.
			all := slices.Clone(in.take(0, held))
			slices.SortFunc(all, func(a, b jetstream.Msg) int { return cmp.Compare(streamSeq(a), streamSeq(b)) })
			r.settle(all, "nak", func(m jetstream.Msg) error { return m.Nak() })
			in.setBusy()
			return nil, false
		}
	}
}

// reset rewinds a consumer to its ack floor. The server answers a
// replicated consumer's reset once it is applied.
func (r *Runner) reset(ctx context.Context, stream, consumer string) (uint64, error) {
	s, err := r.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	resp, err := s.ResetConsumer(ctx, consumer)
	if err != nil {
		return 0, err
	}
	return resp.ResetSeq, nil
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
	streams.WatchLag(ctx, c, r.cfg.LagEvery, r.setLag)
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

// Next implements NextFinder with one direct get.
func (h StreamHistory) Next(ctx context.Context, stream, subject string, from uint64) (uint64, error) {
	return streams.NextSeq(ctx, h.JS, stream, subject, from)
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
