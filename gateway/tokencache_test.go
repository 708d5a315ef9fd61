package gateway_test

import (
	"net/http"
	"testing"
	"time"

	"cryptostream/gateway/auth"
	"cryptostream/natstest"
)

// The REST fast path caches verified tokens; revocation still holds: a
// deleted user's token, already used (so cached), is refused on the very
// next request, and a cached token is refused once it expires.
func TestTokenCacheKeepsRevocation(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	bob := s.signup("bob", "bob-password")
	publish(t, s, candle(1))
	for range 3 {
		s.expect(s.call("GET", "/crypto/asset_latest/BTC-USD", bob, nil), http.StatusOK)
	}
	s.expect(s.call("DELETE", "/auth/users/bob", admin, nil), http.StatusNoContent)
	if r := s.call("GET", "/crypto/asset_latest/BTC-USD", bob, nil); r.status != http.StatusUnauthorized || r.errCode(t) != "invalid_token" {
		t.Fatalf("a deleted user's cached token = %d %s", r.status, r.body)
	}

	// A token that expires a few seconds from now, used while valid.
	short, err := auth.NewTokens(s.key, time.Minute, func() time.Time { return time.Now().Add(-57 * time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	tok := s.issue(short, adminName)
	s.expect(s.call("GET", "/crypto/asset_latest/BTC-USD", tok, nil), http.StatusOK)
	natstest.WaitFor(t, time.Minute, "the cached token to be refused past its expiry", func() bool {
		return s.call("GET", "/crypto/asset_latest/BTC-USD", tok, nil).status == http.StatusUnauthorized
	})
}
