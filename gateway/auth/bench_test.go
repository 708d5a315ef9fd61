package auth_test

import (
	"context"
	"testing"
	"time"

	"cryptostream/gateway/auth"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// BenchmarkCheckPassword compares a wrong password for a known user with
// one for an unknown user at the same cost: the two should take the same
// time (their ratio is the figure, not either value).
func BenchmarkCheckPassword(b *testing.B) {
	const cost = 10
	hash, err := auth.HashPassword("the-real-password", cost)
	if err != nil {
		b.Fatal(err)
	}
	auth.CheckPassword("", "warm the dummy", cost)
	b.Run("known", func(b *testing.B) {
		for b.Loop() {
			auth.CheckPassword(hash, "a-wrong-password", cost)
		}
	})
	b.Run("unknown", func(b *testing.B) {
		for b.Loop() {
			auth.CheckPassword("", "a-wrong-password", cost)
		}
	})
}

// BenchmarkTokenCheck is the per-request cost of revocation: Sessions.Check
// from the synced mirror, against the token's signature check it follows
// (the reference) and against reading the user from the bucket (what a
// check without the mirror costs).
func BenchmarkTokenCheck(b *testing.B) {
	_, js := natstest.Connect(b, natstest.Server(b))
	if err := streams.Ensure(b.Context(), js, streams.Declare(1)); err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(b.Context(), streams.BucketUsers)
	if err != nil {
		b.Fatal(err)
	}
	users := auth.NewUsers(kv, nil)
	u, err := users.Create(b.Context(), streams.User{Username: "bench", Role: streams.RoleUser, PasswordHash: "x"})
	if err != nil {
		b.Fatal(err)
	}
	tokens, err := auth.NewTokens([]byte("0123456789abcdef0123456789abcdef"), time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	tok, _, err := tokens.Issue(u)
	if err != nil {
		b.Fatal(err)
	}
	claims, err := tokens.Verify(tok)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("verify-signature", func(b *testing.B) {
		for b.Loop() {
			if _, err := tokens.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sessions-mirror", func(b *testing.B) {
		s := auth.NewSessions(users, kv, nil)
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		defer func() { cancel(); <-done }()
		natstest.WaitFor(b, time.Minute, "sync", s.Synced)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Check(b.Context(), claims); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("bucket-read", func(b *testing.B) {
		s := auth.NewSessions(users, nil, nil) // never synced: reads the bucket
		for b.Loop() {
			if err := s.Check(b.Context(), claims); err != nil {
				b.Fatal(err)
			}
		}
	})
}
