package notifier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/natstest"
	"cryptostream/notifier"
	"cryptostream/streams"
)

// rulesBucket is the alert-rules bucket of a server of the test's own.
func rulesBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Server(t))
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), streams.BucketAlertRules)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestStoreCAS(t *testing.T) {
	kv := rulesBucket(t)
	st := notifier.NewStore(kv, 2, nil)
	r := notifier.Rule{Owner: "alice", OwnerID: "id-alice", Kind: notifier.KindPriceCross, Symbol: "BTC/USD", Threshold: 100}
	a, err := st.Create(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(t.Context(), r); !errors.Is(err, notifier.ErrTooManyRules) {
		t.Fatalf("third rule: %v", err)
	}
	other := r
	other.Owner, other.OwnerID = "bob", "id-bob"
	if _, err := st.Create(t.Context(), other); err != nil {
		t.Fatalf("the cap is per owner: %v", err)
	}
	got, rev, err := st.Get(t.Context(), a.ID)
	if err != nil || got.Owner != "alice" || got.Threshold != 100 {
		t.Fatalf("get %+v %v", got, err)
	}
	// A write between read and delete makes the delete a conflict.
	if _, err := st.Update(t.Context(), a.ID, func(r *notifier.Rule) error { r.Threshold = 200; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(t.Context(), a.ID, rev); !errors.Is(err, notifier.ErrConflict) {
		t.Fatalf("stale delete: %v", err)
	}
	got, rev, _ = st.Get(t.Context(), a.ID)
	if got.Threshold != 200 || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("after update %+v", got)
	}
	if err := st.Delete(t.Context(), a.ID, rev); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Get(t.Context(), a.ID); !errors.Is(err, notifier.ErrRuleNotFound) {
		t.Fatalf("deleted rule: %v", err)
	}
	mine, err := st.ListOwned(t.Context(), "id-alice")
	if err != nil || len(mine) != 1 {
		t.Fatalf("alice's rules %v %v", mine, err)
	}
	if _, _, err := st.Get(t.Context(), "../x"); !errors.Is(err, notifier.ErrRuleNotFound) {
		t.Fatalf("bad id: %v", err)
	}
}

// Rules stored when they were keyed by username are adopted by the account
// that made them; those of accounts that are gone are deleted, including
// when a newcomer took the name after the rule was made.
func TestAdoptOwners(t *testing.T) {
	kv := rulesBucket(t)
	made := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := notifier.NewStore(kv, 0, func() time.Time { return made })
	legacy := func(owner string) notifier.Rule {
		r, err := st.Create(t.Context(), notifier.Rule{Owner: owner, Kind: notifier.KindPriceCross, Symbol: "BTC/USD", Interval: streams.Interval1m, Threshold: 100})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	alice, gone, taken := legacy("alice"), legacy("carol"), legacy("dave")
	sys, err := st.Create(t.Context(), notifier.Rule{Kind: notifier.KindPriceCross, Symbol: "BTC/USD", Interval: streams.Interval1m, Threshold: 100})
	if err != nil {
		t.Fatal(err)
	}
	accounts := map[string]notifier.Account{
		"alice": {ID: "id-alice", CreatedAt: made.Add(-time.Hour)},
		// dave's account was deleted and the name signed up for again.
		"dave": {ID: "id-dave-2", CreatedAt: made.Add(time.Hour)},
	}
	lookup := func(_ context.Context, name string) (notifier.Account, bool, error) {
		a, ok := accounts[name]
		return a, ok, nil
	}
	// Not evaluated before adoption: it would reach nobody.
	var r notifier.Rule = alice
	r.Normalize()
	if err := r.Validate(); err == nil {
		t.Fatal("a rule naming no account validates")
	}

	adopted, removed, err := st.AdoptOwners(t.Context(), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if len(adopted) != 1 || adopted[0].ID != alice.ID || adopted[0].OwnerID != "id-alice" || len(removed) != 2 {
		t.Fatalf("adopted %+v, removed %+v", adopted, removed)
	}
	for _, id := range []string{gone.ID, taken.ID} {
		if _, _, err := st.Get(t.Context(), id); !errors.Is(err, notifier.ErrRuleNotFound) {
			t.Errorf("rule %s of a gone account: %v", id, err)
		}
	}
	if got, _, err := st.Get(t.Context(), sys.ID); err != nil || !got.System() {
		t.Fatalf("system rule %+v %v", got, err)
	}
	if mine, err := st.ListOwned(t.Context(), "id-alice"); err != nil || len(mine) != 1 || mine[0].ID != alice.ID {
		t.Fatalf("alice's rules %+v %v", mine, err)
	}
	if mine, _ := st.ListOwned(t.Context(), "id-dave-2"); len(mine) != 0 {
		t.Fatalf("the new dave inherited %+v", mine)
	}
	// A second run (another process, the next start) changes nothing.
	if a, rm, err := st.AdoptOwners(t.Context(), lookup); err != nil || len(a)+len(rm) != 0 {
		t.Fatalf("second run %v %v %v", a, rm, err)
	}
}

// An account's rules go with it: DeleteOwned deletes exactly that account's
// rules (one changed meanwhile too, none of anyone else's, never a system
// rule), and DropOrphans the rules of every account that is no longer
// listed, keeping those from before rules named accounts for AdoptOwners.
func TestDeleteOwnedAndOrphans(t *testing.T) {
	st := notifier.NewStore(rulesBucket(t), 0, nil)
	mk := func(owner, id string) notifier.Rule {
		t.Helper()
		r, err := st.Create(t.Context(), notifier.Rule{Owner: owner, OwnerID: id, Kind: notifier.KindPriceCross, Symbol: "BTC/USD", Threshold: 100})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a1, a2 := mk("alice", "id-alice"), mk("alice", "id-alice")
	b := mk("bob", "id-bob")
	sys := mk(notifier.SystemOwner, notifier.SystemOwner)
	legacy := mk("carol", "")
	orphan := mk("dave", "id-dave")
	// A write the deleter did not read (the worker marking a once rule
	// fired) does not save the rule.
	if _, err := st.Update(t.Context(), a2.ID, func(r *notifier.Rule) error { now := time.Now(); r.FiredAt = &now; return nil }); err != nil {
		t.Fatal(err)
	}
	gone, err := st.DeleteOwned(t.Context(), "id-alice")
	if err != nil || len(gone) != 2 {
		t.Fatalf("deleted %v, %v", gone, err)
	}
	for _, id := range []string{a1.ID, a2.ID} {
		if _, _, err := st.Get(t.Context(), id); !errors.Is(err, notifier.ErrRuleNotFound) {
			t.Errorf("alice's %s: %v", id, err)
		}
	}
	if again, err := st.DeleteOwned(t.Context(), "id-alice"); err != nil || len(again) != 0 {
		t.Fatalf("a second pass deleted %v, %v", again, err)
	}
	if _, err := st.DeleteOwned(t.Context(), notifier.SystemOwner); err == nil {
		t.Fatal("the system rules deleted as an account's")
	}
	gone, err = st.DropOrphans(t.Context(), func(context.Context) (map[string]bool, error) {
		return map[string]bool{"id-bob": true}, nil
	})
	if err != nil || len(gone) != 1 || gone[0].ID != orphan.ID {
		t.Fatalf("orphans deleted %v, %v", gone, err)
	}
	for _, r := range []notifier.Rule{b, sys, legacy} {
		if _, _, err := st.Get(t.Context(), r.ID); err != nil {
			t.Errorf("%s's rule: %v", r.Owner, err)
		}
	}
}

// A stored rule that does not decode is skipped by every listing, and
// reported, instead of failing them all: the other rules still list, and
// the sweeps built on listings still run.
func TestUnreadableRuleIsSkipped(t *testing.T) {
	kv := rulesBucket(t)
	st := notifier.NewStore(kv, 0, nil)
	var bad []string
	st.OnUnreadable = func(id string, err error) {
		if !errors.Is(err, notifier.ErrUnreadableRule) {
			t.Errorf("reported %v", err)
		}
		bad = append(bad, id)
	}
	good, err := st.Create(t.Context(), notifier.Rule{Owner: "alice", OwnerID: "id-alice", Kind: notifier.KindPriceCross, Symbol: "BTC/USD", Threshold: 100})
	if err != nil {
		t.Fatal(err)
	}
	for id, raw := range map[string]string{"rgarbage": `{"id":`, "rfuture": `{"v":99,"id":"rfuture","owner":"alice","owner_id":"id-alice"}`} {
		if _, err := kv.Put(t.Context(), id, []byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	all, err := st.List(t.Context())
	if err != nil || len(all) != 1 || all[0].ID != good.ID || len(bad) != 2 {
		t.Fatalf("listed %v (%v), skipped %v", all, err, bad)
	}
	if gone, err := st.DeleteOwned(t.Context(), "id-alice"); err != nil || len(gone) != 1 {
		t.Fatalf("deleted %v, %v", gone, err)
	}
}
