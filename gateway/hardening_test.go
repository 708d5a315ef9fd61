package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"cryptostream/gateway"
	"cryptostream/gateway/auth"
	"cryptostream/natstest"
	"cryptostream/pgtest"
	"cryptostream/store"
	"cryptostream/streams"
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

// callFrom is call from the client address ip (any 127/8 address reaches
// the loopback server), for tests where who is asking matters.
func (s *stack) callFrom(ip, method, path, token string, body any) reply {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	cl := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	resp, err := cl.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

func loginBody(user, pass string) map[string]string {
	return map[string]string{"username": user, "password": pass}
}

// auditBytes is the size of the AUDIT stream.
func (s *stack) auditBytes() uint64 {
	s.t.Helper()
	st, err := s.js.Stream(s.t.Context(), streams.StreamAudit)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(s.t.Context())
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.Bytes
}

// An unauthenticated flood of logins with huge usernames, most of them
// rate-limited, cannot fill AUDIT: the name is validated before anything is
// audited, and refused attempts become one counted event (issue 11 item 2).
func TestLoginFloodCannotFillAudit(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) {
		c.LoginIPBurst, c.LoginIPEvery = 10, time.Hour
		// One flush, at the stop: with the 10 s default the 190 requests
		// spanned two flushes on a loaded machine and the victim's refusals
		// were rightly split in two events.
		c.AuditFlushEvery = time.Hour
	})
	before := s.auditBytes()
	huge := strings.Repeat("A", 60<<10)
	const floods = 40
	for range floods {
		r := s.call("POST", "/auth/login", "", loginBody(huge, "whatever-password"))
		if r.status != http.StatusUnauthorized && r.status != http.StatusTooManyRequests {
			t.Fatalf("huge username = %d %s", r.status, r.body)
		}
	}
	// A valid name refused again and again: one event, counted.
	const refused = 150
	for range refused {
		if r := s.call("POST", "/auth/login", "", loginBody("victim", "guess-password")); r.status != http.StatusTooManyRequests {
			t.Fatalf("past the address's budget = %d %s", r.status, r.body)
		}
	}
	s.stopRun()
	evs := s.auditEvents()
	for _, e := range evs {
		if len(e.Target) > 32 || len(e.Actor) > 32 || len(e.Detail) > 200 {
			t.Fatalf("an audit event carries client input unbounded: target %d bytes, detail %d bytes", len(e.Target), len(e.Detail))
		}
	}
	if n := countAudit(evs, "auth.login", "rate_limited", "victim"); n != 1 {
		t.Fatalf("%d rate-limited events for victim, want one counted event", n)
	}
	if got := sumAuditCount(evs, "auth.login", "rate_limited"); got != floods-10+refused {
		t.Fatalf("refusals counted %d, want %d", got, floods-10+refused)
	}
	// The ten huge names the address's budget let through: failures that
	// name no possible user, counted in one event too.
	if n, got := countAudit(evs, "auth.login", "failed", ""), sumAuditCount(evs, "auth.login", "failed"); n != 1 || got != 10 {
		t.Fatalf("%d failed events counting %d, want one counting 10", n, got)
	}
	// 200 requests, 60 KiB each: AUDIT grew by a few KiB at most.
	if grown := s.auditBytes() - before; grown > 16<<10 {
		t.Fatalf("AUDIT grew by %d bytes", grown)
	}
}

// A stolen token cannot brute-force the password through the profile
// route: its current-password check shares login's budget (issue 11 item
// 4).
func TestPasswordChangeCheckIsRateLimited(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) {
		c.LoginUserBurst, c.LoginUserEvery = 3, time.Hour
	})
	tok := s.signup("alice", "alice-password")
	change := func(current string) reply {
		return s.call("PUT", "/auth/users/me", tok, map[string]string{"password": "new-password-1", "current_password": current})
	}
	for i := range 3 {
		if r := change(fmt.Sprint("guess-", i)); r.status != http.StatusForbidden {
			t.Fatalf("guess %d = %d %s", i, r.status, r.body)
		}
	}
	r := change("alice-password")
	if r.status != http.StatusTooManyRequests || r.errCode(t) != "rate_limited" || r.header.Get("Retry-After") == "" {
		t.Fatalf("4th check = %d %s", r.status, r.body)
	}
	// The same budget as login's: this address is failing for alice.
	if r := s.call("POST", "/auth/login", "", loginBody("alice", "alice-password")); r.status != http.StatusTooManyRequests {
		t.Fatalf("login after the failed checks = %d", r.status)
	}
	// A profile change that checks no password is not limited.
	s.expect(s.call("PUT", "/auth/users/me", tok, map[string]string{"full_name": "Alice"}), http.StatusOK)
	s.stopRun()
	if n := sumAuditCount(s.auditEvents(), "user.update", "rate_limited"); n != 1 {
		t.Fatalf("%d refused checks audited, want 1", n)
	}
}

// One address guessing the admin's password, however often, does not keep
// the admin out from another address (issue 11 item 5).
func TestGuessingElsewhereDoesNotLockOut(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) {
		// The defaults' bursts; refills slow enough that none happens.
		c.LoginIPBurst, c.LoginIPEvery = 20, time.Hour
		c.LoginUserBurst, c.LoginUserEvery = 5, time.Hour
		c.LoginBrakeBurst, c.LoginBrakeEvery = 8, time.Hour
	})
	const admin, attacker = "127.0.0.1", "127.0.0.2"
	refusedAttacker := 0
	for round := range 7 {
		for range 3 {
			switch r := s.callFrom(attacker, "POST", "/auth/login", "", loginBody(adminName, "guess-password")); r.status {
			case http.StatusUnauthorized:
			case http.StatusTooManyRequests:
				refusedAttacker++
			default:
				t.Fatalf("attacker = %d %s", r.status, r.body)
			}
		}
		if r := s.callFrom(admin, "POST", "/auth/login", "", loginBody(adminName, adminPass)); r.status != http.StatusOK {
			t.Fatalf("correct admin login %d of 7 = %d %s", round+1, r.status, r.body)
		}
	}
	if refusedAttacker != 21-5 {
		t.Fatalf("the attacker was refused %d times, want %d", refusedAttacker, 21-5)
	}

	// A campaign spread over many addresses spends the per-username brake
	// (8 failures): then an address that has failed once may not try again
	// even within its own budget, a clean one still may, and the right
	// password from a clean address gets in.
	for i := range 8 {
		s.callFrom(fmt.Sprintf("127.0.1.%d", i+1), "POST", "/auth/login", "", loginBody("root", "spread-guess"))
	}
	if r := s.callFrom("127.0.1.1", "POST", "/auth/login", "", loginBody(adminName, "spread-guess-2")); r.status != http.StatusTooManyRequests {
		t.Fatalf("a failing address under the brake = %d", r.status)
	}
	if r := s.callFrom("127.0.2.1", "POST", "/auth/login", "", loginBody(adminName, "fresh-guess")); r.status != http.StatusUnauthorized {
		t.Fatalf("a clean address under the brake = %d", r.status)
	}
	if r := s.callFrom("127.0.3.1", "POST", "/auth/login", "", loginBody(adminName, adminPass)); r.status != http.StatusOK {
		t.Fatalf("the right password from a clean address under the brake = %d %s", r.status, r.body)
	}
	// The admin's own address never failed: still in.
	s.expect(s.callFrom(admin, "POST", "/auth/login", "", loginBody(adminName, adminPass)), http.StatusOK)
}

// A token names its account, not only its username: it dies with the
// account, with a password or role change, and never opens an account
// created later under the same name (issue 11 item 6).
func TestTokenBoundToAccount(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	old := s.signup("bob", "bob-password")
	s.expect(s.call("GET", "/crypto/assets", old, nil), http.StatusOK)
	s.expect(s.call("POST", "/crypto/assets", admin, map[string]string{"symbol": "BTC/USD"}), http.StatusCreated)
	s.expect(s.call("PUT", "/auth/users/me/preferences", old, map[string]any{"watchlist": []string{"BTC/USD"}}), http.StatusOK)
	s.expect(s.call("DELETE", "/auth/users/bob", admin, nil), http.StatusNoContent)
	for _, path := range []string{"/auth/users/me", "/crypto/assets", "/crypto/alert_history/BTC-USD"} {
		if r := s.call("GET", path, old, nil); r.status != http.StatusUnauthorized || r.errCode(t) != "invalid_token" {
			t.Fatalf("GET %s with a deleted account's token = %d %s", path, r.status, r.body)
		}
	}
	// Someone else signs up as bob: the old token does not open it.
	fresh := s.signup("bob", "other-password")
	if r := s.call("GET", "/auth/users/me", old, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("old bob's token on new bob = %d %s", r.status, r.body)
	}
	if _, resp, err := s.dialWS(old, false); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("websocket with old bob's token = %v, %v", resp, err)
	}
	s.expect(s.call("GET", "/auth/users/me", fresh, nil), http.StatusOK)
	// Nor does old bob's data pass to new bob.
	if wl := s.expect(s.call("GET", "/auth/users/me/preferences", fresh, nil), http.StatusOK).json(t)["watchlist"]; len(wl.([]any)) != 0 {
		t.Fatalf("new bob sees old bob's watchlist %v", wl)
	}

	// A change made outside this gateway (another replica, the CLI) also
	// revokes, as soon as the users watch delivers it.
	natstest.WaitFor(t, time.Minute, "the users mirror to sync", s.gw.SessionsSynced)
	other := auth.NewUsers(s.usersKV(), nil)
	if _, err := other.Update(t.Context(), "bob", func(u *streams.User) error { u.Role = streams.RoleAdmin; return nil }); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, time.Minute, "the role change to revoke the token", func() bool {
		return s.call("GET", "/auth/users/me", fresh, nil).status == http.StatusUnauthorized
	})
}

// Usernames are one account in any case or normal form, and accounts
// stored before keep working under their canonical name (issue 11 item 7).
func TestUsernamesAreCanonical(t *testing.T) {
	s := newStack(t)
	r := s.expect(s.call("POST", "/auth/signup", "", map[string]string{"username": "ALICE", "password": "alice-password"}), http.StatusCreated)
	if r.json(t)["username"] != "alice" {
		t.Fatalf("signup ALICE = %s", r.body)
	}
	for _, name := range []string{"alice", "Alice"} {
		if r := s.call("POST", "/auth/signup", "", map[string]string{"username": name, "password": "other-password"}); r.status != http.StatusConflict {
			t.Fatalf("signup %s beside ALICE = %d %s", name, r.status, r.body)
		}
	}
	s.login("aLiCe", "alice-password")
	// The Kelvin sign folds to k: one account, not a look-alike.
	s.expect(s.call("POST", "/auth/signup", "", map[string]string{"username": "kate", "password": "kate-password"}), http.StatusCreated)
	if r := s.call("POST", "/auth/signup", "", map[string]string{"username": "\u212Aate", "password": "kate-password"}); r.status != http.StatusConflict {
		t.Fatalf("signup with a Kelvin sign = %d %s", r.status, r.body)
	}
	s.login("\u212Aate", "kate-password")

	// Accounts stored before names were canonical: Bob alone, and CAROL
	// beside carol.
	kv := s.usersKV()
	hash, err := auth.HashPassword("legacy-password", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Bob", "carol", "CAROL"} {
		b, _ := json.Marshal(streams.User{Username: name, Role: streams.RoleUser, PasswordHash: hash})
		if _, err := kv.Put(t.Context(), name, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.gw.EnsureAdmin(t.Context(), adminName, adminPass); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bob", "Bob", "BOB", "carol", "carol-2"} {
		tok := s.login(name, "legacy-password")
		me := s.expect(s.call("GET", "/auth/users/me", tok, nil), http.StatusOK).json(t)
		if want := strings.ToLower(name); me["username"] != want {
			t.Fatalf("login %s is %v", name, me["username"])
		}
	}
	keys, err := kv.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k != strings.ToLower(k) {
			t.Fatalf("a non-canonical key is left: %q in %v", k, keys)
		}
	}
	if evs := s.auditEvents(); countAudit(evs, "user.rename", "ok", "carol-2") != 1 || countAudit(evs, "user.rename", "ok", "bob") != 1 {
		t.Fatalf("renames not audited: %+v", evs)
	}
}

// An open websocket dies with its token's account too: deleted here, or
// changed through another replica, it is closed with 4001 at once, not when
// its token expires; another user's connection stays (issue 11 item 6).
func TestRevocationClosesWebsockets(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	bob := s.signup("bob", "bob-password")
	carol := s.signup("carol", "carol-password")
	s.track("BTC/USD")
	natstest.WaitFor(t, time.Minute, "the users mirror to sync", s.gw.SessionsSynced)

	open := func(tok string) *wsClient {
		t.Helper()
		c, _, err := s.dialWS(tok, false)
		if err != nil {
			t.Fatal(err)
		}
		c.send(map[string]any{"op": "subscribe", "channel": "candles:BTC-USD:1m"})
		c.expect("subscribed", "candles:BTC-USD:1m")
		return c
	}
	bobWS, carolWS := open(bob), open(carol)
	s.expect(s.call("DELETE", "/auth/users/bob", admin, nil), http.StatusNoContent)
	if code := bobWS.closeCode(); code != 4001 {
		t.Fatalf("deleted bob's websocket closed with %d, want 4001", code)
	}

	// A role change written by another replica reaches this one through
	// the users watch.
	other := auth.NewUsers(s.usersKV(), nil)
	if _, err := other.Update(t.Context(), "carol", func(u *streams.User) error { u.Role = streams.RoleAdmin; return nil }); err != nil {
		t.Fatal(err)
	}
	if code := carolWS.closeCode(); code != 4001 {
		t.Fatalf("carol's websocket after her role change closed with %d, want 4001", code)
	}

	// A change that revokes nothing (a full name) keeps the connection.
	// Erin's deletion, written after it by the other replica too, shows
	// the watch got that far.
	dave, erin := s.signup("dave", "dave-password"), s.signup("erin", "erin-password")
	daveWS, erinWS := open(dave), open(erin)
	if _, err := other.Update(t.Context(), "dave", func(u *streams.User) error { u.FullName = "Dave"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := other.Delete(t.Context(), "erin", 0); err != nil {
		t.Fatal(err)
	}
	if code := erinWS.closeCode(); code != 4001 {
		t.Fatalf("deleted erin's websocket closed with %d, want 4001", code)
	}
	daveWS.send(map[string]any{"op": "subscribe", "channel": "ticks:BTC-USD"})
	daveWS.expect("subscribed", "ticks:BTC-USD")
}
