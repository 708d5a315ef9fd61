package auth_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/gateway/auth"
	"cryptostream/natstest"
	"cryptostream/streams"
)

func TestGuard(t *testing.T) {
	now := time.Unix(1000, 0)
	g := auth.NewGuard(auth.GuardConfig{
		AddrBurst: 4, AddrEvery: time.Minute,
		PairBurst: 2, PairEvery: time.Minute,
		UserBurst: 3, UserEvery: time.Minute,
	}, func() time.Time { return now })
	try := func(user, addr string) bool {
		a, wait, ok := g.Begin(user, addr)
		if ok != (wait == 0) {
			t.Fatalf("Begin(%s, %s) = ok %v with wait %s", user, addr, ok, wait)
		}
		if ok {
			a.Failed()
		}
		return ok
	}
	// Per (user, address): two failures.
	if !try("alice", "a1") || !try("alice", "a1") || try("alice", "a1") {
		t.Fatal("pair budget is not 2")
	}
	// Successes are free and forgive the pair's failures.
	for range 10 {
		a, _, ok := g.Begin("bob", "b1")
		if !ok {
			t.Fatal("a succeeding address was refused")
		}
		a.Succeeded()
	}
	if !try("bob", "b1") || !try("bob", "b1") {
		t.Fatal("successes were charged")
	}
	a, _, ok := g.Begin("carol", "c1")
	if !ok {
		t.Fatal("fresh pair refused")
	}
	a.Failed()
	a, _, _ = g.Begin("carol", "c1")
	a.Succeeded()
	if !try("carol", "c1") || !try("carol", "c1") {
		t.Fatal("a success did not clear the pair's failures")
	}
	// Per address, across names: a4 fails 4 times over 4 names, then any
	// name is refused.
	for i := range 4 {
		if !try(fmt.Sprint("name", i), "a4") {
			t.Fatalf("address refused at failure %d", i)
		}
	}
	if try("someone", "a4") {
		t.Fatal("address budget is not 4")
	}
	// The brake: dave fails from three addresses, spending his budget.
	for _, addr := range []string{"d1", "d2", "d3"} {
		if !try("dave", addr) {
			t.Fatalf("dave from %s refused", addr)
		}
	}
	if try("dave", "d1") {
		t.Fatal("a failing address passed the brake")
	}
	if !try("dave", "d9") {
		t.Fatal("a clean address was stopped by the brake")
	}
	// Refills: a minute gives one failure back everywhere.
	now = now.Add(time.Minute)
	if !try("alice", "a1") {
		t.Fatal("no refill")
	}
}

// Concurrent attempts cannot all slip past the budget before the first
// fails: Begin holds the budget.
func TestGuardHoldsBudgetDuringAttempt(t *testing.T) {
	g := auth.NewGuard(auth.GuardConfig{AddrBurst: 10, AddrEvery: time.Hour, PairBurst: 2, PairEvery: time.Hour, UserBurst: 10, UserEvery: time.Hour}, nil)
	var held []*auth.Attempt
	for range 2 {
		a, _, ok := g.Begin("erin", "e1")
		if !ok {
			t.Fatal("refused within budget")
		}
		held = append(held, a)
	}
	if _, _, ok := g.Begin("erin", "e1"); ok {
		t.Fatal("a third concurrent attempt passed a budget of 2")
	}
	held[0].Release()
	if _, _, ok := g.Begin("erin", "e1"); !ok {
		t.Fatal("a released attempt did not give its budget back")
	}
}

// countingKV counts the reads that reach the bucket.
type countingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

func (c *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	c.gets.Add(1)
	return c.KeyValue.Get(ctx, key)
}

// Once the mirror is synced, checking a good token reads nothing from the
// bucket; a change made by another writer (another replica, the CLI)
// revokes as soon as the watch delivers it (issue 11 item 6).
func TestSessionsMirror(t *testing.T) {
	kv := &countingKV{KeyValue: usersBucket(t)}
	users := auth.NewUsers(kv, nil)
	sessions := auth.NewSessions(users, kv, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- sessions.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	u, err := users.Create(t.Context(), streams.User{Username: "Frank", Role: streams.RoleUser, PasswordHash: "x"})
	if err != nil || u.Username != "frank" || u.ID == "" {
		t.Fatalf("create = %+v, %v", u, err)
	}
	claims := auth.Claims{UID: u.ID, Gen: u.TokenGen}
	claims.Subject = u.Username
	natstest.WaitFor(t, time.Minute, "the mirror to sync", sessions.Synced)
	before := kv.gets.Load()
	for range 100 {
		if err := sessions.Check(t.Context(), claims); err != nil {
			t.Fatal(err)
		}
	}
	if n := kv.gets.Load() - before; n != 0 {
		t.Fatalf("%d bucket reads for 100 checks of a good token", n)
	}
	// Another writer changes the password.
	cli := auth.NewUsers(kv.KeyValue, nil)
	if _, err := cli.Update(t.Context(), "frank", func(u *streams.User) error { u.PasswordHash = "y"; return nil }); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, time.Minute, "the password change to revoke", func() bool {
		return sessions.Check(t.Context(), claims) == auth.ErrRevoked
	})
	// A profile change is no revocation.
	fresh, _, err := users.Get(t.Context(), "frank")
	if err != nil {
		t.Fatal(err)
	}
	claims.Gen = fresh.TokenGen
	if _, err := users.Update(t.Context(), "frank", func(u *streams.User) error { u.FullName = "Frank"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := sessions.Check(t.Context(), claims); err != nil {
		t.Fatalf("after a profile change: %v", err)
	}
	// Deleted and created again: a new account, the old token is dead.
	_, rev, err := users.Get(t.Context(), "frank")
	if err != nil {
		t.Fatal(err)
	}
	if err := users.Delete(t.Context(), "frank", rev); err != nil {
		t.Fatal(err)
	}
	if err := sessions.Check(t.Context(), claims); err != auth.ErrRevoked {
		t.Fatalf("after delete: %v", err)
	}
	again, err := users.Create(t.Context(), streams.User{Username: "frank", Role: streams.RoleUser, PasswordHash: "z"})
	if err != nil || again.ID == u.ID {
		t.Fatalf("re-create = %+v, %v", again, err)
	}
	if err := sessions.Check(t.Context(), claims); err != auth.ErrRevoked {
		t.Fatalf("old token on the re-created account: %v", err)
	}
}

func TestCanonicalUsername(t *testing.T) {
	for in, want := range map[string]string{
		"alice": "alice", "ALICE": "alice", "Bob_9": "bob_9", "\u212Aate": "kate", "a-b": "a-b",
		"x": "", "a.b": "", "a b": "", "al\u00efce": "", "root\x00": "", string(make([]byte, 200)): "",
		"\xff\xfe\xfd": "",
	} {
		got, err := auth.CanonicalUsername(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("CanonicalUsername(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// Canonicalize moves legacy names, renames on a collision, and is
// idempotent.
func TestCanonicalize(t *testing.T) {
	kv := usersBucket(t)
	for _, name := range []string{"Gina", "hank", "HANK", "hank-2"} {
		if _, err := kv.Put(t.Context(), name, []byte(`{"username":"`+name+`","role":"user","password_hash":"h-`+name+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	users := auth.NewUsers(kv, nil)
	renamed, err := users.Canonicalize(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []auth.Rename{{From: "Gina", To: "gina"}, {From: "HANK", To: "hank-3", Collided: true}}
	if fmt.Sprint(renamed) != fmt.Sprint(want) {
		t.Fatalf("renamed %v, want %v", renamed, want)
	}
	for name, hash := range map[string]string{"gina": "h-Gina", "hank": "h-hank", "hank-3": "h-HANK", "hank-2": "h-hank-2"} {
		u, _, err := users.Get(t.Context(), name)
		moved := name == "gina" || name == "hank-3"
		if err != nil || u.PasswordHash != hash || (moved && u.ID == "") {
			t.Fatalf("%s = %+v, %v", name, u, err)
		}
	}
	if again, err := users.Canonicalize(t.Context()); err != nil || len(again) != 0 {
		t.Fatalf("second run = %v, %v", again, err)
	}
}
