package pipeline

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// lateEntry is a lease revision stored at created.
type lateEntry struct {
	jetstream.KeyValueEntry
	key, value string
	rev        uint64
	created    time.Time
}

func (e lateEntry) Key() string                     { return e.key }
func (e lateEntry) Value() []byte                   { return []byte(e.value) }
func (e lateEntry) Revision() uint64                { return e.rev }
func (e lateEntry) Created() time.Time              { return e.created }
func (e lateEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

type lateWatcher struct {
	jetstream.KeyWatcher
	c chan jetstream.KeyValueEntry
}

func (w lateWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.c }

type lateLeases struct {
	Leases
	e lateEntry
}

func (l lateLeases) Get(context.Context, string) (jetstream.KeyValueEntry, error) { return l.e, nil }

// TestLateSeenLeaseCountsFromItsWrite: a dead owner's last renewal that
// the view gets seconds after it was stored (a watch rebuilt after a node
// loss, or a read of the lease that finds a revision the watch missed)
// runs out LeaseTTL after it was stored, plus the clock skew allowed, and
// not LeaseTTL after it arrived: the takeover came that much later, a
// detect of 8.2 s for a 5 s TTL in TestClusterFailover.
func TestLateSeenLeaseCountsFromItsWrite(t *testing.T) {
	const ttl = 5 * time.Second
	now := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	stored := now.Add(-3 * time.Second)
	want := stored.Add(ttl + clockSkew(ttl)).Sub(now) // 2.5 s
	newGroup := func(leases Leases) *group {
		return &group{r: &Runner{leases: leases}, spec: streams.Partitioned{Stage: "features"}, id: "features-1", ttl: ttl,
			now: func() time.Time { return now }, members: map[string]seen{}, owners: map[string]seen{}}
	}

	g := newGroup(nil)
	w := lateWatcher{c: make(chan jetstream.KeyValueEntry, 2)}
	w.c <- lateEntry{key: "features.owner.BTC-USDT", value: "features-2", rev: 7, created: stored}
	w.c <- lateEntry{key: "features.member.features-2", value: "features-2", rev: 8, created: stored}
	close(w.c)
	g.watch(w)
	if d, ok := g.nextExpiry(); !ok || d != want {
		t.Fatalf("watched: the dead owner's lease and membership run out in %v (%v), want %v", d, ok, want)
	}

	g = newGroup(lateLeases{e: lateEntry{key: "features.owner.BTC-USDT", value: "features-2", rev: 9, created: stored}})
	g.owners["BTC-USDT"] = seen{value: "features-2", rev: 7, at: now.Add(-4 * time.Second)}
	cur, held := g.refresh(t.Context(), "BTC-USDT")
	if !held || cur.rev != 9 || cur.at.Add(ttl).Sub(now) != want {
		t.Fatalf("read: %+v (held %v), want revision 9 running out in %v", cur, held, want)
	}

	// A revision seen as it is stored counts from when it is seen: the
	// skew allowed never brings a takeover forward.
	g = newGroup(nil)
	w = lateWatcher{c: make(chan jetstream.KeyValueEntry, 1)}
	w.c <- lateEntry{key: "features.owner.BTC-USDT", value: "features-2", rev: 7, created: now.Add(-10 * time.Millisecond)}
	close(w.c)
	g.watch(w)
	if d, _ := g.nextExpiry(); d != ttl {
		t.Fatalf("seen at once: runs out in %v, want %v", d, ttl)
	}
}
