package gateway

import (
	"sync"
	"time"

	"cryptostream/gateway/auth"
)

// tokenCache remembers tokens whose signature and claims were verified.
// What a token says never changes for its lifetime, so verifying it again
// on every request (a JWT parse and an HMAC, a third of asset_latest's own
// cost) buys nothing; what can change, the account behind it, is still
// checked on every request by Sessions.Check, so a deleted, disabled or
// demoted user loses access at once as before. An entry is used only
// before the token's expiry.
type tokenCache struct {
	verify func(string) (auth.Claims, error)
	now    func() time.Time
	max    int

	mu sync.RWMutex
	m  map[string]auth.Claims
}

func newTokenCache(verify func(string) (auth.Claims, error), now func() time.Time, max int) *tokenCache {
	return &tokenCache{verify: verify, now: now, max: max, m: make(map[string]auth.Claims)}
}

func (tc *tokenCache) Verify(token string) (auth.Claims, error) {
	tc.mu.RLock()
	c, ok := tc.m[token]
	tc.mu.RUnlock()
	if ok && c.ExpiresAt != nil && tc.now().Before(c.ExpiresAt.Time) {
		return c, nil
	}
	c, err := tc.verify(token)
	if err != nil || c.ExpiresAt == nil {
		if ok {
			tc.mu.Lock()
			delete(tc.m, token)
			tc.mu.Unlock()
		}
		return c, err
	}
	tc.mu.Lock()
	if len(tc.m) >= tc.max {
		// Bounded: drop the expired, and everything if that is not
		// enough (a flood of distinct valid tokens only costs re-verifying).
		now := tc.now()
		for k, e := range tc.m {
			if !now.Before(e.ExpiresAt.Time) {
				delete(tc.m, k)
			}
		}
		if len(tc.m) >= tc.max {
			clear(tc.m)
		}
	}
	tc.m[token] = c
	tc.mu.Unlock()
	return c, nil
}
