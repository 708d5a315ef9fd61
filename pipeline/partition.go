package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/lease"
	"cryptostream/streams"
)

// Partitioned work.
//
// A partitioned stage (streams.Partitioned) has one durable consumer per
// symbol, and each instance of the stage runs a Runner on the consumers of
// the symbols it owns. Ownership is a lease in the leases bucket, one key
// per symbol, renewed every LeaseTTL/5 with a compare-and-swap on its
// revision; every instance also renews a member key. Each instance watches
// both, computes the same balanced assignment of symbols to live members,
// gives up the symbols that are no longer its own (drain, ack, unpin, delete
// the lease) and takes the ones that are: a free lease is created, a lease
// nobody renewed for LeaseTTL is taken over with a compare-and-swap on the
// revision it saw, and the new owner then lifts the dead owner's pin and
// resets the consumer to its ack floor, so that what the dead owner held
// comes back at once instead of after AckWait. The watch is only a view:
// a takeover reads the lease from the bucket first (refresh), since a
// watch lags for 10 s and more while its consumer is rebuilt after a node
// loss, a revision the view gets late counts from when the server stored
// it rather than from its arrival (seenAt), and a round runs as soon as a
// seen lease or membership runs out rather than at the next tick. An owner whose pin moves while it holds
// the lease (the consumer's leader lost with a node, and the deliveries it
// had sent) resets the consumer itself, and a new owner starts its runner
// only once its reset is answered (runner.go's takeOver says why). The
// round never waits for a partition to start or stop: one whose consumer
// is slow to reset, that drains, or that hangs in a step, must not keep
// the other leases from being renewed or taken, and a stage stuck in a
// step lets its lease expire. The server's pin stays as
// the guard that two instances never both receive a symbol's inputs. An
// owner steps and publishes a partition only while its fence is open: up
// to a local deadline set from its last renewal that reached the bucket
// (partition_fence.go), so that an owner cut off from the bucket has
// stopped before anyone can take its lease over. The server fences it too:
// a new owner writes a marker with its lease's revision into each output
// stream as it takes the partition, and the server refuses the old owner's
// outputs against it (server_fence.go), for an owner that stalled between
// a step and its publish.
//
// A stage whose state joins several streams by symbol (the notifier's
// closes, ticks and predictions) names the others as companions
// (Config.With): their partitions are not leased on their own but follow
// the stage's, so a symbol's runners on every stream start, stop and move
// together, behind one fence.
//
// Why this and not the alternatives: a stream subject transform with
// partition(n, wildcard) would change the stored subjects every reader of
// MARKET and FEATURES relies on (tails, direct gets, the gateway, the sink);
// orbit.go's pcgroups copies the stream into a work queue per group (a
// second store and sequences that are not the ones the stages key their
// outputs on) and its membership is administrative (a new instance takes no
// partitions until an operator adds it). One consumer per symbol needs
// neither: sequences are the stream's, a new instance takes its share by
// itself, and a per-symbol consumer's order is the per-symbol order the
// stages need. Its cost is a consumer per symbol and stage (about 50 for 25
// pairs, each a raft group on a cluster); at hundreds of pairs, hashing
// symbols into a fixed number of partitions would bound that.

// Leases is what the partition owners need from the leases bucket: an
// election's calls, Put for the member keys, and Get to read a lease
// itself when the watch lags.
type Leases interface {
	lease.Store
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
}

// leaseOpener is a JetStream that can open the leases bucket itself.
type leaseOpener interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// DefaultLeaseTTL is how long a partition's lease outlives its owner's last
// renewal: the longest a lost instance's symbols wait for a new owner.
const DefaultLeaseTTL = 5 * time.Second

// lockedStage lets the runners of one instance's partitions share a Stage,
// which is called from one goroutine at a time.
type lockedStage struct {
	mu sync.Mutex
	s  Stage
}

func (l *lockedStage) Key(m Msg) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Key(m)
}

func (l *lockedStage) Warm(ctx context.Context, h History, key string, first Msg) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Warm(ctx, h, key, first)
}

func (l *lockedStage) Step(ctx context.Context, m Msg) ([]streams.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Step(ctx, m)
}

func (l *lockedStage) Reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.s.Reset(key)
}

type companion struct {
	name  string
	spec  streams.Partitioned
	stage *lockedStage
}

// owned is a partition this instance holds.
type owned struct {
	rev    uint64
	fence  *fence
	cancel context.CancelFunc
	done   chan struct{}
	lag    float64
	// stopping: its runner was told to stop and is draining; the
	// partition is not taken again until it has ended. release: the lease
	// goes back once it has (a clean hand-over), and is renewed meanwhile.
	stopping, release bool
	// subs are the partition's runners once they start (guarded by the
	// group's mu); stuck: the lease was left to expire because one of
	// them was stuck in a step.
	subs  []*Runner
	stuck bool
	// call is the lease's renewal still out, if any.
	call *renewal
	// expired: its fence shut at its deadline (guard, renew); fenced:
	// another owner's marker stopped it.
	expired, fenced atomic.Bool
	// warm is what the partition's runners' series covered when they
	// ended (each runner's, the stage's first), for a retake that may
	// go on from it (see kept); nil when they never ran.
	warm []map[string]uint64
}

// kept is the stage state of a partition this instance stopped without
// handing it over (its fence shut before a renewal came back), and rev the
// last revision of the lease this instance wrote. A retake whose
// compare-and-swap on that very revision succeeds proves that the key was
// not written since, so nobody else held the partition in between, and no
// output of another owner can have been stored after this instance's: the
// runners go on from the state they had instead of warming every series
// again (an expiry storm under load retook each partition with a reset
// and a warm-up, a 21.7 s stall in TestClusterFailover). The state is
// whole: a runner ends only after every input it stepped has its outputs
// stored, or with the series reset that a failed step or publish forces
// (retry), and the stage's series of a partition are stepped by nobody
// else meanwhile.
type kept struct {
	rev  uint64
	warm []map[string]uint64
}

// seen is the last revision of a lease or member key and when it came.
type seen struct {
	value string
	rev   uint64
	at    time.Time
}

// group runs one instance's share of a partitioned stage.
type group struct {
	r     *Runner
	spec  streams.Partitioned
	stage *lockedStage
	// with are the companions (Config.With), each stage shared by the
	// runners of its partitions.
	with []companion
	id   string
	ttl  time.Duration
	log  *slog.Logger
	now  func() time.Time
	// expired counts partitions given up because no renewal came back
	// before their fence's deadline.
	expired prometheus.Counter
	// retained counts partitions taken again with their state kept.
	retained prometheus.Counter

	mu      sync.Mutex // guards members and owners, written by the watcher
	members map[string]seen
	owners  map[string]seen

	own        map[string]*owned
	kept       map[string]kept
	partitions []string
	created    map[string]bool
	// ended wakes the round when a partition's runner has ended, so that
	// one stopped is settled, and taken again when it is still this
	// instance's, without waiting for the next tick.
	ended chan struct{}
}

func (g *group) memberKey(id string) string  { return g.spec.Stage + ".member." + id }
func (g *group) ownerKey(part string) string { return g.spec.Stage + ".owner." + part }
func (g *group) memberPrefix() string        { return g.spec.Stage + ".member." }
func (g *group) ownerPrefix() string         { return g.spec.Stage + ".owner." }
func (g *group) observe(part string, on bool) {
	g.r.m.owned.Add(map[bool]float64{true: 1, false: -1}[on])
	g.r.onOwner(part, on)
}

// runPartitioned is Run for a partitioned stage.
func (r *Runner) runPartitioned(ctx context.Context) error {
	g := &group{
		r: r, spec: *r.cfg.Partitioned, stage: &lockedStage{s: r.d.stage},
		id: r.id, ttl: r.cfg.LeaseTTL, log: r.log.With("instance", r.id), now: r.now,
		members: map[string]seen{}, owners: map[string]seen{},
		own: map[string]*owned{}, kept: map[string]kept{}, created: map[string]bool{}, ended: make(chan struct{}, 1),
		expired: register(r.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_lease_expiries_total",
			Help: "Partitions an instance stopped because no renewal of their lease came back before its local deadline (a stalled or lost leases bucket).",
		}, []string{"stage"})).WithLabelValues(r.cfg.Name),
		retained: register(r.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_partition_state_kept_total",
			Help: "Partitions an instance took again after their lease expired with nobody holding them in between, going on from their state without a warm-up.",
		}, []string{"stage"})).WithLabelValues(r.cfg.Name),
	}
	for _, c := range r.cfg.With {
		g.with = append(g.with, companion{name: c.Name, spec: c.Partitioned, stage: &lockedStage{s: c.Stage}})
	}
	if r.leases == nil {
		kv, err := r.js.(leaseOpener).KeyValue(ctx, streams.BucketLeases)
		if err != nil {
			return fmt.Errorf("pipeline: %s: leases: %w", r.cfg.Name, err)
		}
		r.leases = kv
	}
	w, err := r.leases.Watch(ctx, g.spec.Stage+".>")
	if err != nil {
		return fmt.Errorf("pipeline: %s: watch leases: %w", r.cfg.Name, err)
	}
	defer func() { _ = w.Stop() }()
	go g.watch(w)
	// Every step of the loop renews, so it runs several times a lease.
	tick := time.NewTicker(g.ttl / 5)
	defer tick.Stop()
	defer g.leave()
	for {
		g.step(ctx)
		// A dead instance's lease and membership run out between two
		// ticks: a round at that moment takes its partitions over up to
		// a tick sooner than the next tick would.
		var expiry *time.Timer
		var expired <-chan time.Time
		if d, ok := g.nextExpiry(); ok && d < g.ttl/5 {
			expiry = time.NewTimer(d + time.Millisecond)
			expired = expiry.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-expired:
		case <-g.ended:
		}
		if expiry != nil {
			expiry.Stop()
		}
	}
}

// nextExpiry is how long until the first lease or membership of another
// instance that is still live runs out, unless renewed meanwhile.
func (g *group) nextExpiry() (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var next time.Duration
	found := false
	for _, m := range []map[string]seen{g.members, g.owners} {
		for _, s := range m {
			if s.value == g.id {
				continue
			}
			if d := s.at.Add(g.ttl).Sub(now); d > 0 && (!found || d < next) {
				next, found = d, true
			}
		}
	}
	return next, found
}

// seenAt is when a lease or member revision stored at created counts
// from: when it is seen, or the server's store time plus clockSkew when
// it is seen later than that. A watch that lags (its consumer rebuilt
// after a node loss) delivers a dead owner's last renewal seconds late,
// and counted from its arrival it held the lease that much longer: a
// detect of 8.2 s for a 5 s TTL in TestClusterFailover, the kill 14 s
// after the node loss. The store time is on the server's clock: as long
// as the instance's clock runs no more than clockSkew ahead of it, the
// revision is still counted from no earlier than it was written, so the
// lease is never taken sooner than LeaseTTL after its owner's renewal,
// and the owner's fence has shut a leaseMargin before that.
func (g *group) seenAt(created time.Time) time.Time {
	now := g.now()
	if created.IsZero() {
		return now
	}
	if at := created.Add(clockSkew(g.ttl)); at.Before(now) {
		return at
	}
	return now
}

// clockSkew is how far an instance's clock may run ahead of the servers'
// without a late-seen revision's lease being taken over sooner than
// LeaseTTL after it was written (seenAt).
func clockSkew(ttl time.Duration) time.Duration { return ttl / 10 }

// watch keeps the view of members and owners up to date.
func (g *group) watch(w jetstream.KeyWatcher) {
	for e := range w.Updates() {
		if e == nil {
			continue // the initial values are in
		}
		g.mu.Lock()
		key := e.Key()
		var m map[string]seen
		var name string
		switch {
		case len(key) > len(g.memberPrefix()) && key[:len(g.memberPrefix())] == g.memberPrefix():
			m, name = g.members, key[len(g.memberPrefix()):]
		case len(key) > len(g.ownerPrefix()) && key[:len(g.ownerPrefix())] == g.ownerPrefix():
			m, name = g.owners, key[len(g.ownerPrefix()):]
		}
		if old, ok := m[name]; ok && e.Revision() <= old.rev {
			// Already known from refresh, which read the bucket itself:
			// a watch catching up after its consumer was rebuilt.
			m = nil
		}
		if m != nil {
			if e.Operation() == jetstream.KeyValuePut {
				m[name] = seen{value: string(e.Value()), rev: e.Revision(), at: g.seenAt(e.Created())}
			} else {
				delete(m, name)
			}
		}
		g.mu.Unlock()
	}
}

// step is one round: renew, discover, rebalance.
func (g *group) step(ctx context.Context) {
	// The membership beside the leases, on a timeout of its own.
	member := make(chan struct{})
	go func() {
		defer close(member)
		mctx, cancel := context.WithTimeout(ctx, g.ttl/2)
		defer cancel()
		if _, err := g.r.leases.Put(mctx, g.memberKey(g.id), []byte(g.id)); err != nil {
			g.log.Debug("renew membership", "err", err)
		}
	}()
	// The leases, each call bounded by its fence: a stalled bucket must
	// not hold up a renewal, nor the rest of the round for longer than a
	// lease lasts.
	g.renew(ctx)
	<-member
	ictx, cancel := context.WithTimeout(ctx, g.ttl/2)
	defer cancel()
	g.discover(ictx)
	mine := g.assigned()
	for part := range g.own {
		if !mine[part] {
			g.release(ctx, part)
		}
	}
	for _, part := range g.partitions {
		if mine[part] && g.own[part] == nil {
			g.acquire(ictx, ctx, part)
		}
	}
	lag := 0.0
	g.mu.Lock()
	for _, o := range g.own {
		lag += o.lag
	}
	g.mu.Unlock()
	g.r.m.lag.Set(lag)
}

// renewal is one lease's renewal call; done closes when it has come back.
type renewal struct {
	sent time.Time
	rev  uint64
	err  error
	done chan struct{}
}

// renew extends every lease held, each moving its fence; a lease found
// taken is given up at once, and one whose fence shut (see guard) is
// stopped, to be taken again when it is still this instance's. The calls
// go side by side, each bounded by its own fence, and the round waits for
// them one tick at most: one after the other, a call that hung until its
// fence's deadline held back every renewal behind it until theirs had
// passed too, and the instance's leases expired together
// (TestPartitionRenewalsNotHeldByOneStalled). A call still out is
// answered at a later round, and its lease is not renewed again before.
func (g *group) renew(ctx context.Context) {
	var sent []*owned
	for part, o := range g.own {
		select {
		case <-o.done:
			if !o.stopping && !o.expired.Load() && !o.fenced.Load() {
				// The runner ended on its own (an error): let the
				// partition go, to be taken again. One whose fence
				// shut keeps its lease unrenewed instead, for this
				// instance to take again on the revision it wrote
				// last, which proves nobody held it in between
				// (kept); a lease handed back and created again
				// proves nothing.
				g.release(ctx, part)
			}
			g.settle(ctx, part, o, false)
			continue
		default:
		}
		if o.stopping && !o.release {
			continue // lost: nothing to renew
		}
		left := o.fence.left()
		if left <= 0 {
			// Shut aside: closing waits for a step or publish under
			// way, which must not hold up the other renewals.
			o.release = false
			go g.expire(part, o)
			g.stop(part, false)
			continue
		}
		if o.call != nil || g.stuck(part, o) {
			continue
		}
		c := &renewal{done: make(chan struct{})}
		o.call = c
		sent = append(sent, o)
		go func(key string, rev uint64) {
			defer close(c.done)
			rctx, cancel := context.WithTimeout(ctx, left)
			defer cancel()
			for {
				c.sent = g.now()
				c.rev, c.err = g.r.leases.Update(rctx, key, []byte(g.id), rev)
				// A request no server took (the bucket's leader
				// being elected) wrote nothing: sent again at once,
				// not a tick later. Any other failure may have been
				// written, and only the next round's call tells.
				if !errors.Is(c.err, jetstream.ErrNoStreamResponse) || rctx.Err() != nil {
					return
				}
				select {
				case <-rctx.Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}(g.ownerKey(part), o.rev)
	}
	wait := time.NewTimer(g.ttl / 5)
	defer wait.Stop()
waiting:
	for _, o := range sent {
		select {
		case <-o.call.done:
		case <-wait.C:
			break waiting
		}
	}
	for part, o := range g.own {
		if o.call == nil {
			continue
		}
		select {
		case <-o.call.done:
		default:
			continue
		}
		c := o.call
		o.call = nil
		if o.stopping && !o.release {
			continue
		}
		switch {
		case c.err == nil:
			o.rev = c.rev
			o.fence.extend(g.deadline(c.sent))
		case errors.Is(c.err, jetstream.ErrKeyRevisionMismatch) || errors.Is(c.err, jetstream.ErrKeyNotFound):
			g.log.Warn("partition lease lost", "partition", part, "err", c.err)
			g.stop(part, true)
		default:
			g.log.Debug("renew lease", "partition", part, "err", c.err)
		}
	}
}

// stuckStep is how long a step may run before its partition's lease is
// left to expire: far beyond a step's compute, a warm-up's reads of history
// (30 s at most) and a publish (PublishTimeout), so that only a stage that
// hangs lets its partition go. A stuck stage kept renewing would hold its
// partition for good: its inputs kept alive (the runner's keep-alive) and
// never stepped. Set by a test.
var stuckStep = 2 * time.Minute

// stuck says whether one of a partition's runners has been in one step
// for longer than stuckStep; the lease is then no longer renewed, its
// fence expires and another instance takes it over.
func (g *group) stuck(part string, o *owned) bool {
	g.mu.Lock()
	subs := o.subs
	g.mu.Unlock()
	for _, sub := range subs {
		if at := sub.stepping.Load(); at != 0 && time.Since(time.Unix(0, at)) > stuckStep {
			if !o.stuck {
				o.stuck = true
				g.log.Error("partition stage stuck in a step: its lease is left to expire", "partition", part, "stage", sub.cfg.Name,
					"since", time.Unix(0, at))
			}
			return true
		}
	}
	return false
}

// deadline is when a lease written by a call sent at sent stops being
// safe to act on (see partition_fence.go).
func (g *group) deadline(sent time.Time) time.Time {
	return sent.Add(g.ttl - leaseMargin(g.ttl))
}

// guard shuts a partition's fence when its deadline passes with no
// renewal to move it, however long the renewal call itself is stuck, and
// stops its runner.
func (g *group) guard(part string, o *owned) {
	for {
		left := o.fence.left()
		if left <= 0 {
			break
		}
		t := time.NewTimer(left)
		select {
		case <-t.C:
		case <-o.done:
			t.Stop()
			return
		}
	}
	g.expire(part, o)
	o.cancel()
}

// expire shuts a fence whose deadline passed, and reports it once.
func (g *group) expire(part string, o *owned) {
	o.expired.Store(true)
	if o.fence.close() {
		g.expired.Inc()
		g.log.Warn("partition lease not renewed in time: stopped", "partition", part)
		g.observe(part, false)
	}
}

// discover lists the symbols in the stage's stream and creates the
// consumer of any not seen before.
func (g *group) discover(ctx context.Context) {
	s, err := g.r.js.Stream(ctx, g.spec.Stream)
	if err != nil {
		g.log.Debug("discover partitions", "err", err)
		return
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(g.spec.Filter()))
	if err != nil {
		g.log.Debug("discover partitions", "err", err)
		return
	}
	parts := map[string]bool{}
	for subj := range info.State.Subjects {
		if p, ok := g.spec.Partition(subj); ok {
			parts[p] = true
		}
	}
	var list []string
	for p := range parts {
		if !g.created[p] {
			if err := ensureConsumer(ctx, s, g.spec, p); err != nil {
				g.log.Warn("partition consumer", "partition", p, "err", err)
				continue
			}
			g.created[p] = true
		}
		list = append(list, p)
	}
	slices.Sort(list)
	g.partitions = list
}

// ensureConsumer creates a partition's consumer when it does not exist. A
// new one starts where the stage's single durable had got to, when there
// is one, so that partitioning a running deployment redoes nothing.
func ensureConsumer(ctx context.Context, s jetstream.Stream, p streams.Partitioned, part string) error {
	spec := p.Consumer(part)
	if _, err := s.Consumer(ctx, spec.Config.Durable); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	cfg := spec.Config
	if p.Legacy != "" {
		if c, err := s.Consumer(ctx, p.Legacy); err == nil {
			if info := c.CachedInfo(); info != nil && info.AckFloor.Stream > 0 {
				cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
				cfg.OptStartSeq = info.AckFloor.Stream + 1
			}
		}
	}
	_, err := s.CreateConsumer(ctx, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return nil // another instance made it first
	}
	return err
}

// assigned is this instance's share: every live member computes the same
// from the same view. Partitions are taken in a hashed order, each by its
// highest-ranked member (rendezvous hashing) that has fewer than its fair
// share, so that shares differ by one at most and a change of members
// moves few partitions.
func (g *group) assigned() map[string]bool {
	g.mu.Lock()
	live := []string{g.id}
	for id, s := range g.members {
		if id != g.id && time.Since(s.at) < g.ttl {
			live = append(live, id)
		}
	}
	g.mu.Unlock()
	slices.Sort(live)
	parts := slices.Clone(g.partitions)
	slices.SortFunc(parts, func(a, b string) int { return cmp.Or(cmp.Compare(hash(a, ""), hash(b, "")), cmp.Compare(a, b)) })
	share := (len(parts) + len(live) - 1) / max(len(live), 1)
	load := map[string]int{}
	mine := map[string]bool{}
	for _, p := range parts {
		ranked := slices.Clone(live)
		slices.SortFunc(ranked, func(a, b string) int { return cmp.Or(cmp.Compare(hash(p, b), hash(p, a)), cmp.Compare(a, b)) })
		for _, m := range ranked {
			if load[m] < share {
				load[m]++
				mine[p] = m == g.id
				break
			}
		}
	}
	return mine
}

func hash(p, member string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(p))
	h.Write([]byte{0})
	h.Write([]byte(member))
	return h.Sum64()
}

// acquire takes a partition that is free or whose owner stopped renewing,
// and starts its runner aside (see start): the round goes on at once.
func (g *group) acquire(ctx, runCtx context.Context, part string) {
	g.mu.Lock()
	cur, held := g.owners[part]
	g.mu.Unlock()
	if held {
		cur, held = g.refresh(ctx, part)
	}
	var rev uint64
	var err error
	sent := g.now()
	// A kept state stays kept while a retake fails: the revision it was
	// kept at proves, or disproves, the next one.
	prev, ok := g.kept[part]
	var warm []map[string]uint64
	switch {
	case !held:
		rev, err = g.r.leases.Create(ctx, g.ownerKey(part), []byte(g.id))
	case cur.value == g.id:
		// This instance's own lease, whose fence shut before a renewal
		// came back: taken again unless someone took it meanwhile.
		rev, err = g.r.leases.Update(ctx, g.ownerKey(part), []byte(g.id), cur.rev)
		if err == nil && ok && prev.rev == cur.rev {
			warm = prev.warm
		}
	case g.now().Sub(cur.at) > g.ttl:
		g.log.Info("taking over a partition from an owner that stopped renewing", "partition", part, "from", cur.value)
		rev, err = g.r.leases.Update(ctx, g.ownerKey(part), []byte(g.id), cur.rev)
	default:
		return // its owner lets it go or is still alive
	}
	if err != nil {
		g.log.Debug("acquire partition", "partition", part, "err", err)
		if errors.Is(err, jetstream.ErrKeyExists) {
			g.refresh(ctx, part)
		}
		return
	}
	delete(g.kept, part)
	o := &owned{rev: rev, fence: newFence(g.now, g.deadline(sent)), done: make(chan struct{})}
	rctx, cancel := context.WithCancel(runCtx)
	o.cancel = cancel
	g.own[part] = o
	g.observe(part, true)
	if warm != nil {
		g.retained.Inc()
		g.log.Info("partition owned again, nobody held it in between: its state is kept", "partition", part)
	} else {
		g.log.Info("partition owned", "partition", part)
	}
	go g.guard(part, o)
	go g.start(rctx, part, o, rev, warm)
}

// start makes a partition's consumers ready and runs its runners, while
// the round renews the lease. It ran inside the round until now: its
// unpin, reset and fence claims (under load a second or more each) held
// up the round, so the other leases went unrenewed meanwhile, and the
// next partition's takeover failed on what was left of the round's
// timeout ("context deadline exceeded") and waited for the next round
// (TestClusterFailover: a 9.8 s detect, twice the TTL). A partition that
// cannot start ends (o.done) without starting: the next round hands its
// lease back, and takes it again when it is still this instance's.
func (g *group) start(ctx context.Context, part string, o *owned, epoch uint64, warm []map[string]uint64) {
	runners, ok := g.ready(ctx, part, o, epoch)
	if !ok {
		close(o.done)
		return
	}
	if len(warm) == len(runners) {
		for i, sub := range runners {
			sub.d.warm = warm[i]
		}
	}
	// One runner ending on its own ends the others: the partition is
	// then given up whole, and taken again whole.
	var wg sync.WaitGroup
	for _, sub := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer o.cancel()
			if err := sub.Run(ctx); err != nil {
				g.log.Warn("partition runner stopped", "partition", part, "stage", sub.cfg.Name, "err", err)
			}
		}()
	}
	wg.Wait()
	for _, sub := range runners {
		o.warm = append(o.warm, sub.d.warm)
	}
	// Given up as soon as nothing runs, not when a round settles it: a
	// round may be held up by a stalled bucket, and the next owner then
	// took the partition while this one still reported it owned, its
	// drain long over (TestPartitionRetakenAfterAnotherHeldItWarms).
	g.shut(part, o)
	close(o.done)
	select {
	case g.ended <- struct{}{}:
	default:
	}
}

// ready makes the runners of a partition just taken: the stage's own, then
// its companions', all behind the lease's fence, each consumer rid of the
// previous owner's pin and rewound to its ack floor. epoch is the lease's
// revision as taken (o.rev moves with each renewal).
func (g *group) ready(ctx context.Context, part string, o *owned, epoch uint64) ([]*Runner, bool) {
	cfg := g.r.cfg
	cfg.Partitioned, cfg.With = nil, nil
	cfg.Pinned = true
	parts := []partSpec{{cfg, g.spec, g.stage}}
	for _, c := range g.with {
		ccfg := cfg
		ccfg.Name, ccfg.Stream = c.name, c.spec.Stream
		parts = append(parts, partSpec{ccfg, c.spec, c.stage})
	}
	var subs []*Runner
	for i, p := range parts {
		cons := p.spec.Consumer(part).Config.Durable
		if i > 0 {
			// A companion's consumer is made when its partition is
			// first taken: its stream may have no message of the
			// symbol yet.
			cctx, cancel := context.WithTimeout(ctx, g.ttl/2)
			err := g.companionConsumer(cctx, p.spec, part)
			cancel()
			if err != nil {
				g.log.Warn("companion partition consumer", "partition", part, "stream", p.spec.Stream, "err", err)
				return nil, false
			}
		}
		// Whatever the previous owner held and did not ack comes back
		// now: lift its pin, and rewind the consumer to its ack floor.
		// After a clean hand-over both are no-ops. Each has a timeout of
		// its own: under load a shared one ran out first ("context
		// deadline exceeded"), and the dead owner's inputs then came
		// back only after AckWait, a 10 s stall after the takeover in
		// TestClusterFailover.
		uctx, cancel := context.WithTimeout(ctx, g.ttl/2)
		if err := streams.Unpin(uctx, g.r.js, p.spec.Stream, cons); err != nil {
			g.log.Debug("unpin on acquire", "partition", part, "consumer", cons, "err", err)
		}
		cancel()
		// The runner starts only once the reset is answered (applied):
		// one that lands later, while the runner holds newer inputs and
		// waits for the dead owner's, empties what the server counts in
		// flight, and the takeover would then step the newer inputs
		// before the dead owner's came again, and lose those. The lease
		// goes back instead, to be taken again.
		sctx, cancel := context.WithTimeout(ctx, g.ttl/2)
		_, err := g.r.resetConsumer(sctx, p.spec.Stream, cons)
		cancel()
		if err != nil {
			g.log.Warn("reset on acquire: lease given back", "partition", part, "consumer", cons, "err", err)
			return nil, false
		}
		p.cfg.Consumer = cons
		sub, err := New(p.cfg, fencedStage{Stage: p.stage, f: o.fence}, Deps{JS: fencedJS{JetStream: g.r.js, f: o.fence}, Log: g.r.baseLog, Registry: g.r.reg})
		if err != nil {
			g.log.Error("partition runner", "partition", part, "err", err)
			return nil, false
		}
		sub.resetOnMove = true
		sub.resetConsumer, sub.consumerInfo = g.r.resetConsumer, g.r.consumerInfo
		sub.alive = func() bool { return o.fence.left() > 0 }
		// The partition's batches go where the instance's would (a
		// test stands between them and the connection).
		sub.bs.send = g.r.bs.send
		subs = append(subs, sub)
	}
	subs[0].setLag = func(v float64) {
		g.mu.Lock()
		o.lag = v
		g.mu.Unlock()
	}
	// The server fences the stage's own outputs; its companions declare
	// none (the notifier's alerts are deduplicated by msg-id).
	if !serverFenceOff.Load() {
		subs[0].fence = &serverFence{stage: g.spec.Stage, part: part, instance: g.id, epoch: epoch, outputs: g.spec.Outputs, tokens: map[string]fenceToken{},
			lost: func() {
				o.fenced.Store(true)
				g.shut(part, o)
				o.cancel()
			}}
		// The old owner is fenced off from here on, not from this
		// owner's first output into each stream; a stream that does
		// not answer now is claimed at the first output instead.
		for _, out := range g.spec.Outputs {
			fctx, cancel := context.WithTimeout(ctx, g.ttl/2)
			if _, err := subs[0].fenceToken(fctx, out); err != nil {
				g.log.Warn("claim partition fence", "partition", part, "stream", out, "err", err)
			}
			cancel()
		}
	}
	if ctx.Err() != nil {
		return nil, false // stopped, or its fence shut, meanwhile
	}
	g.mu.Lock()
	o.subs = subs
	g.mu.Unlock()
	return subs, true
}

// partSpec is one of a partition's runners: the stage's, or a companion's.
type partSpec struct {
	cfg   Config
	spec  streams.Partitioned
	stage Stage
}

// companionConsumer creates a companion's consumer of a partition when it
// does not exist.
func (g *group) companionConsumer(ctx context.Context, spec streams.Partitioned, part string) error {
	s, err := g.r.js.Stream(ctx, spec.Stream)
	if err != nil {
		return err
	}
	return ensureConsumer(ctx, s, spec, part)
}

// refresh reads a partition's lease from the bucket itself and returns it.
// The watch's view lags while its consumer is rebuilt (after a node loss:
// until it has missed its heartbeats, 10 to 20 s measured in
// TestClusterFailover), and a takeover with a revision that is no longer
// the last fails every round until it catches up. A revision newer than
// the view's is a renewal the view missed: it is counted from no earlier
// than when it was written (seenAt), so the lease is never taken sooner
// than LeaseTTL after its owner's last renewal.
func (g *group) refresh(ctx context.Context, part string) (seen, bool) {
	e, err := g.r.leases.Get(ctx, g.ownerKey(part))
	g.mu.Lock()
	defer g.mu.Unlock()
	cur, held := g.owners[part]
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// Released: deleted keys read as not found.
		delete(g.owners, part)
		return seen{}, false
	case err != nil:
		g.log.Debug("read lease", "partition", part, "err", err)
	case !held || e.Revision() > cur.rev:
		cur = seen{value: string(e.Value()), rev: e.Revision(), at: g.seenAt(e.Created())}
		g.owners[part] = cur
		held = true
	}
	return cur, held
}

// stop tells a partition's runner to end, and does not wait for its drain:
// the round goes on renewing the other leases meanwhile. A round that
// waited let them go unrenewed for as long as a drain took, and at load
// their fences expired in turn (a stall of its own on each). The partition
// stays this instance's, not to be taken again, until a later round finds
// its runner ended and settles it. lost: the lease may be another's, so
// the fence shuts first and the drain steps and publishes nothing more.
func (g *group) stop(part string, lost bool) {
	o := g.own[part]
	if o == nil {
		return
	}
	o.stopping = true
	if lost {
		// Shut aside, as in renew (closing waits for a step under
		// way), and only then cancelled, so that the drain steps and
		// publishes nothing more.
		o.release = false
		go func() {
			g.shut(part, o)
			o.cancel()
		}()
		return
	}
	o.cancel()
}

// settle forgets a partition whose runner has ended, and hands its lease
// back when it was released: at once, so that the member the assignment
// now names takes it at its next round. wait: the call is awaited (a clean
// stop of the instance); otherwise it does not hold up the round.
func (g *group) settle(ctx context.Context, part string, o *owned, wait bool) {
	delete(g.own, part)
	g.shut(part, o)
	if !o.release {
		if !o.stuck && slices.ContainsFunc(o.warm, func(m map[string]uint64) bool { return len(m) > 0 }) {
			g.kept[part] = kept{rev: o.rev, warm: o.warm}
		}
		return
	}
	rev, call := o.rev, o.call
	del := func() {
		if call != nil {
			// A renewal still out moves the revision to hand back.
			<-call.done
			if call.err == nil {
				rev = call.rev
			}
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.ttl)
		defer cancel()
		if err := g.r.leases.Delete(dctx, g.ownerKey(part), jetstream.LastRevision(rev)); err != nil {
			g.log.Debug("release lease", "partition", part, "err", err)
		}
		g.log.Info("partition released", "partition", part)
	}
	if wait {
		del()
	} else {
		go del()
	}
}

// shut closes a partition's fence, and reports it given up the first time.
func (g *group) shut(part string, o *owned) {
	if o.fence.close() {
		g.observe(part, false)
	}
}

// release stops a partition whose lease is to go back once it has
// drained; its lease is renewed meanwhile.
func (g *group) release(_ context.Context, part string) {
	o := g.own[part]
	if o == nil || o.stopping {
		return
	}
	o.release = true
	g.stop(part, false)
}

// leave releases everything on a clean stop, and the membership.
func (g *group) leave() {
	ctx := context.Background()
	for part := range g.own {
		g.release(ctx, part)
	}
	// Drained side by side, then handed back.
	for part, o := range g.own {
		<-o.done
		g.settle(ctx, part, o, true)
	}
	dctx, cancel := context.WithTimeout(ctx, g.ttl)
	defer cancel()
	if err := g.r.leases.Delete(dctx, g.memberKey(g.id)); err != nil {
		g.log.Debug("leave", "err", err)
	}
}
