package gateway

import (
	"context"
	"fmt"
	"sync"
	"time"

	"cryptostream/gateway/auth"
	"cryptostream/streams"
)

// maxRefusedKeys bounds the distinct (action, username, address) keys held
// between two flushes; past it, refusals are counted under one overflow key
// so that a flood of distinct addresses costs neither memory nor AUDIT
// space.
const maxRefusedKeys = 10_000

// overflow is the username and address of the overflow key.
const overflow = "*"

type refusedKey struct{ action, target, remote, outcome, detail string }

type refusedCount struct {
	n           int
	first, last time.Time
}

// auditAgg counts refused (rate-limited) attempts between flushes. An
// attacker's refused attempts are the cheapest requests there are, so each
// must not become an AUDIT message: they become one counted event per key
// and flush period.
type auditAgg struct {
	max int

	mu      sync.Mutex
	pending map[refusedKey]*refusedCount
}

func newAuditAgg(max int) *auditAgg {
	return &auditAgg{max: max, pending: map[refusedKey]*refusedCount{}}
}

// add counts one refusal. target must already be a valid username or empty.
func (a *auditAgg) add(k refusedKey, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.pending[k]
	if !ok && len(a.pending) >= a.max {
		k = refusedKey{k.action, overflow, overflow, k.outcome, k.detail}
		c, ok = a.pending[k]
	}
	if !ok {
		c = &refusedCount{first: at}
		a.pending[k] = c
	}
	c.n++
	c.last = at
}

// drain returns what was counted and starts over.
func (a *auditAgg) drain() map[refusedKey]*refusedCount {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.pending
	a.pending = map[refusedKey]*refusedCount{}
	return out
}

// refusedAttempt counts a rate-limited attempt for the next aggregated
// audit event.
func (g *Gateway) refusedAttempt(action, target, remote string) {
	g.countAttempt(action, target, remote, "rate_limited", "attempts refused")
}

// countAttempt counts an attempt that tells nothing one by one (refused,
// or naming no possible user) for the next aggregated audit event.
func (g *Gateway) countAttempt(action, target, remote, outcome, detail string) {
	g.refused.add(refusedKey{action, target, remote, outcome, detail}, g.now().UTC())
}

// flushRefused writes one counted audit event per key counted since the
// last flush.
func (g *Gateway) flushRefused(ctx context.Context) {
	for k, c := range g.refused.drain() {
		ev := &streams.AuditEvent{ID: auth.NewID(), Action: k.action, Actor: k.target, Target: k.target, Outcome: k.outcome,
			Remote: k.remote, Detail: fmt.Sprintf("%d %s", c.n, k.detail), At: c.first, Until: c.last, Count: c.n}
		g.publishAudit(ctx, ev)
	}
}

// flushRefusedEvery flushes on a period and once more when ctx ends, so a
// clean stop loses no count.
func (g *Gateway) flushRefusedEvery(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			g.flushRefused(ctx)
		case <-ctx.Done():
			g.flushRefused(context.WithoutCancel(ctx))
			return nil
		}
	}
}

// audit records an event on AUDIT. A failed publication is logged and
// counted, not returned: the request it describes already happened. Every
// field that comes from a request must be bounded by then (a validated
// username, an address): AUDIT keeps what it is given.
func (g *Gateway) audit(ctx context.Context, action, actor, target, outcome, remote, detail string) {
	g.publishAudit(ctx, &streams.AuditEvent{ID: auth.NewID(), Action: action, Actor: actor, Target: target, Outcome: outcome, Remote: remote, Detail: detail, At: g.now().UTC()})
}

func (g *Gateway) publishAudit(ctx context.Context, ev *streams.AuditEvent) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.IOTimeout)
	defer cancel()
	if _, err := streams.Publish(ctx, g.d.Publisher, ev); err != nil {
		g.m.audit.WithLabelValues("failed").Inc()
		g.log.Error("audit event lost", "action", ev.Action, "actor", ev.Actor, "target", ev.Target, "outcome", ev.Outcome, "count", ev.Count, "err", err)
		return
	}
	g.m.audit.WithLabelValues("ok").Inc()
}
