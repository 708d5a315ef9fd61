package notifier_test

import (
	"errors"
	"testing"

	"cryptostream/natstest"
	"cryptostream/notifier"
	"cryptostream/streams"
)

func TestStoreCAS(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Server(t))
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), streams.BucketAlertRules)
	if err != nil {
		t.Fatal(err)
	}
	st := notifier.NewStore(kv, 2, nil)
	r := notifier.Rule{Owner: "alice", Kind: notifier.KindPriceCross, Symbol: "BTC/USD", Threshold: 100}
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
	other.Owner = "bob"
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
	mine, err := st.List(t.Context(), "alice")
	if err != nil || len(mine) != 1 {
		t.Fatalf("alice's rules %v %v", mine, err)
	}
	if _, _, err := st.Get(t.Context(), "../x"); !errors.Is(err, notifier.ErrRuleNotFound) {
		t.Fatalf("bad id: %v", err)
	}
}
