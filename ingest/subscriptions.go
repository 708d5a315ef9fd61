package ingest

import (
	"slices"
	"time"
)

// The subscription table of one connection: which tracked symbols are
// queued, pending an ack, acked or refused, and when each may be tried
// again. It is plain code over the times it is given, so its timing (paced
// batches, the back-off after "Exceeded msg rate" or a refusal, the
// resubscription of a silent subscription) is tested without a socket or a
// clock; the session does the writes it asks for.

type subState int

const (
	subQueued subState = iota
	subPending
	subAcked
	subFailed
)

var subStateNames = [...]string{"queued", "pending", "acked", "failed"}

type sub struct {
	state    subState
	since    time.Time // when the state was entered
	lastData time.Time
	retryAt  time.Time
}

// subTable is not safe for concurrent use: the session's loop owns it.
type subTable struct {
	batch  int           // symbols per subscribe request
	pace   time.Duration // between subscribe requests
	silent time.Duration // an acked subscription without data for this long is resubscribed
	subs   map[string]*sub
	last   time.Time // the last subscribe request
}

func newSubTable(batch int, pace, silent time.Duration) *subTable {
	return &subTable{batch: batch, pace: pace, silent: silent, subs: map[string]*sub{}}
}

// Len is the number of symbols in the table, whatever their state.
func (t *subTable) Len() int { return len(t.subs) }

// State returns a symbol's state.
func (t *subTable) State(sym string) (subState, bool) {
	if sb := t.subs[sym]; sb != nil {
		return sb.state, true
	}
	return 0, false
}

// Reconcile makes the table hold desired: new symbols are queued, and the
// ones no longer wanted are removed and returned, with whether the server
// may hold a subscription for them (to unsubscribe).
func (t *subTable) Reconcile(desired []string, now time.Time) (added []string, removed map[string]bool) {
	want := make(map[string]bool, len(desired))
	for _, sym := range desired {
		want[sym] = true
		if _, ok := t.subs[sym]; !ok {
			t.subs[sym] = &sub{state: subQueued, since: now}
			added = append(added, sym)
		}
	}
	for sym, sb := range t.subs {
		if want[sym] {
			continue
		}
		if removed == nil {
			removed = map[string]bool{}
		}
		removed[sym] = sb.state == subAcked || sb.state == subPending
		delete(t.subs, sym)
	}
	return added, removed
}

func (t *subTable) set(sym string, st subState, now time.Time) {
	if sb := t.subs[sym]; sb != nil {
		sb.state, sb.since = st, now
	}
}

// NextBatch returns the next subscribe request's symbols (sorted, at most
// batch of them) and marks them pending, or nil when the pace or the
// symbols' retry times say wait.
func (t *subTable) NextBatch(now time.Time) []string {
	if now.Sub(t.last) < t.pace {
		return nil
	}
	var batch []string
	for sym, sb := range t.subs {
		if (sb.state == subQueued || sb.state == subFailed) && !now.Before(sb.retryAt) {
			batch = append(batch, sym)
		}
	}
	if len(batch) == 0 {
		return nil
	}
	slices.Sort(batch)
	batch = batch[:min(len(batch), t.batch)]
	t.last = now
	for _, sym := range batch {
		t.set(sym, subPending, now)
	}
	return batch
}

// Acked records a subscription's ack; it reports false when the symbol is
// not in the table or was acked already (a repeated ack starts nothing).
func (t *subTable) Acked(sym string, now time.Time) bool {
	sb := t.subs[sym]
	if sb == nil || sb.state == subAcked {
		return false
	}
	t.set(sym, subAcked, now)
	return true
}

// Refused records a refused subscribe for sym, or for every pending symbol
// when sym is empty (Kraken does not always say which), and returns them.
// A rate-limited request is queued again after four paces; any other
// refusal (one market under maintenance) is retried after a minute rather
// than never.
func (t *subTable) Refused(sym string, rateLimited bool, now time.Time) []string {
	targets := []string{sym}
	if sym == "" {
		targets = targets[:0]
		for s, sb := range t.subs {
			if sb.state == subPending {
				targets = append(targets, s)
			}
		}
		slices.Sort(targets)
	}
	for _, s := range targets {
		sb := t.subs[s]
		if sb == nil || sb.state != subPending {
			continue
		}
		if rateLimited {
			sb.retryAt = now.Add(4 * t.pace)
			t.set(s, subQueued, now)
		} else {
			sb.retryAt = now.Add(time.Minute)
			t.set(s, subFailed, now)
		}
	}
	return targets
}

// Data records a candle of sym received at now.
func (t *subTable) Data(sym string, now time.Time) {
	if sb := t.subs[sym]; sb != nil {
		sb.lastData = now
	}
}

// Silent returns the acked subscriptions that delivered nothing for longer
// than the silence bound since their ack or their last candle, and queues
// them again: the caller unsubscribes them, and the next batch subscribes
// them anew.
func (t *subTable) Silent(now time.Time) map[string]time.Duration {
	var out map[string]time.Duration
	for sym, sb := range t.subs {
		if sb.state != subAcked {
			continue
		}
		seen := sb.since
		if sb.lastData.After(seen) {
			seen = sb.lastData
		}
		if d := now.Sub(seen); d > t.silent {
			if out == nil {
				out = map[string]time.Duration{}
			}
			out[sym] = d
			t.set(sym, subQueued, now)
		}
	}
	return out
}

// Counts is the number of symbols in each state, indexed by subState.
func (t *subTable) Counts() [len(subStateNames)]int {
	var n [len(subStateNames)]int
	for _, sb := range t.subs {
		n[sb.state]++
	}
	return n
}
