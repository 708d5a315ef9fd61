package gateway_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"cryptostream/gateway"
	"cryptostream/natstest"
	"cryptostream/pgtest"
	"cryptostream/store"
)

// The proof of concept's PUT /auth/user/me still works, marked deprecated
// (issue 11 item 18).
func TestDeprecatedPutUserMeAlias(t *testing.T) {
	s := newStack(t)
	tok := s.signup("alice", "alice-password")
	r := s.expect(s.call("PUT", "/auth/user/me", tok, map[string]string{"full_name": "Alice Old Path"}), http.StatusOK)
	if r.json(t)["full_name"] != "Alice Old Path" || r.header.Get("Deprecation") != "true" {
		t.Fatalf("PUT /auth/user/me = %s, Deprecation %q", r.body, r.header.Get("Deprecation"))
	}
	if got := s.expect(s.call("GET", "/auth/users/me", tok, nil), http.StatusOK).json(t)["full_name"]; got != "Alice Old Path" {
		t.Fatalf("full_name after the alias = %v", got)
	}
	// The alias keeps every rule of the real route.
	if r := s.call("PUT", "/auth/user/me", tok, `{"role":"admin"}`); r.status != http.StatusBadRequest {
		t.Fatalf("role through the alias = %d %s", r.status, r.body)
	}
	if r := s.call("PUT", "/auth/user/me", "", map[string]string{"full_name": "x"}); r.status != http.StatusUnauthorized {
		t.Fatalf("alias without a token = %d", r.status)
	}
}

// A limit above the maximum is refused, not silently clamped (issue 11
// item 8).
func TestHistoryLimitAboveMaximum(t *testing.T) {
	s := newStack(t)
	user := s.signup("bob", "bob-password")
	for _, path := range []string{
		"/crypto/asset_history/BTC-USD?limit=1001",
		"/crypto/alert_history/BTC-USD?limit=5000",
	} {
		r := s.call("GET", path, user, nil)
		if r.status != http.StatusBadRequest || r.errCode(t) != "invalid_limit" {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
	}
	s.expect(s.call("GET", "/crypto/alert_history/BTC-USD?limit=1000", user, nil), http.StatusOK)
}

// History during a PostgreSQL outage answers 503 with Retry-After, and 200
// again once the database is back (issue 11 item 8).
func TestHistoryDuringDatabaseOutage(t *testing.T) {
	pg := pgtest.PrivateServer(t)
	pool, err := pgxpool.New(t.Context(), pgtest.Database(t, pg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, func(_ *gateway.Config, d *gateway.Deps) { d.Reader = store.NewReader(pool) })
	admin := s.login(adminName, adminPass)
	s.expect(s.call("POST", "/crypto/assets", admin, map[string]string{"symbol": "BTC/USD"}), http.StatusCreated)
	user := s.signup("bob", "bob-password")
	const path = "/crypto/asset_history/BTC-USD?limit=5"
	s.expect(s.call("GET", path, user, nil), http.StatusOK)

	pg.Stop(t)
	for range 3 {
		r := s.call("GET", path, user, nil)
		if r.status != http.StatusServiceUnavailable || r.errCode(t) != "unavailable" || r.header.Get("Retry-After") == "" {
			t.Fatalf("history during the outage = %d %s, Retry-After %q", r.status, r.body, r.header.Get("Retry-After"))
		}
	}
	pg.Start(t)
	natstest.WaitFor(t, time.Minute, "history answers again", func() bool {
		return s.call("GET", path, user, nil).status == http.StatusOK
	})
}
