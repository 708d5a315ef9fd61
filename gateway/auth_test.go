package gateway_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"cryptostream/gateway"
	"cryptostream/gateway/auth"
	"cryptostream/streams"
)

func TestSignupAndLogin(t *testing.T) {
	s := newStack(t)
	r := s.expect(s.call("POST", "/auth/signup", "", map[string]string{"username": "alice", "password": "correct-horse", "email": "a@example.com", "full_name": "Robert'); DROP TABLE users;--"}), http.StatusCreated)
	u := r.json(t)
	if u["username"] != "alice" || u["role"] != "user" || u["full_name"] != "Robert'); DROP TABLE users;--" {
		t.Fatalf("signup = %s", r.body)
	}
	if strings.Contains(string(r.body), "password") {
		t.Fatalf("signup answer leaks the hash: %s", r.body)
	}

	cases := []struct {
		name   string
		body   any
		ct     string
		status int
		code   string
	}{
		{"duplicate", map[string]string{"username": "alice", "password": "another-password"}, "", http.StatusConflict, "user_exists"},
		{"weak password", map[string]string{"username": "bob", "password": "short"}, "", http.StatusBadRequest, "weak_password"},
		{"too long password", map[string]string{"username": "bob", "password": strings.Repeat("p", 73)}, "", http.StatusBadRequest, "weak_password"},
		{"sql username", map[string]string{"username": "x'; DROP TABLE users;--", "password": "long-enough-1"}, "", http.StatusBadRequest, "invalid_username"},
		{"wildcard username", map[string]string{"username": "a.>", "password": "long-enough-1"}, "", http.StatusBadRequest, "invalid_username"},
		{"role smuggled", `{"username":"eve","password":"long-enough-1","role":"admin"}`, "", http.StatusBadRequest, "malformed_body"},
		{"malformed", `{"username":`, "", http.StatusBadRequest, "malformed_body"},
		{"two objects", `{"username":"bob","password":"long-enough-1"}{}`, "", http.StatusBadRequest, "malformed_body"},
		{"empty", ``, "", http.StatusBadRequest, "malformed_body"},
		{"not an object", `[1,2]`, "", http.StatusBadRequest, "malformed_body"},
		{"oversized", `{"username":"bob","password":"long-enough-1","full_name":"` + strings.Repeat("x", 70<<10) + `"}`, "", http.StatusRequestEntityTooLarge, "body_too_large"},
		{"wrong content type", `username=bob`, "text/plain", http.StatusUnsupportedMediaType, "unsupported_media_type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r reply
			if c.ct != "" {
				r = s.do("POST", "/auth/signup", "", c.ct, strings.NewReader(c.body.(string)))
			} else {
				r = s.call("POST", "/auth/signup", "", c.body)
			}
			if r.status != c.status || r.errCode(t) != c.code {
				t.Fatalf("= %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
	// Nothing those requests sent reached the bucket.
	admin := s.login(adminName, adminPass)
	users := s.expect(s.call("GET", "/auth/users", admin, nil), http.StatusOK).json(t)["users"].([]any)
	if len(users) != 2 {
		t.Fatalf("users after the failed signups = %v", users)
	}

	t.Run("login json", func(t *testing.T) {
		r := s.expect(s.call("POST", "/auth/login", "", map[string]string{"username": "alice", "password": "correct-horse"}), http.StatusOK)
		m := r.json(t)
		if m["token_type"] != "bearer" || m["expires_in"].(float64) != 1800 || m["access_token"] == "" {
			t.Fatalf("login = %s", r.body)
		}
	})
	t.Run("login oauth2 form", func(t *testing.T) {
		form := url.Values{"username": {"alice"}, "password": {"correct-horse"}, "grant_type": {"password"}, "scope": {""}}
		r := s.expect(s.do("POST", "/auth/login", "", "application/x-www-form-urlencoded", strings.NewReader(form.Encode())), http.StatusOK)
		tok := r.json(t)["access_token"].(string)
		me := s.expect(s.call("GET", "/auth/users/me", tok, nil), http.StatusOK).json(t)
		if me["username"] != "alice" {
			t.Fatalf("me = %v", me)
		}
	})
	for _, c := range []struct {
		name, body, ct string
		status         int
		code           string
	}{
		{"wrong password", `{"username":"alice","password":"wrong-horse"}`, "application/json", 401, "invalid_credentials"},
		{"unknown user", `{"username":"nobody","password":"wrong-horse"}`, "application/json", 401, "invalid_credentials"},
		{"sql user", `{"username":"' OR 1=1 --","password":"x"}`, "application/json", 401, "invalid_credentials"},
		{"missing password", `{"username":"alice"}`, "application/json", 400, "malformed_body"},
		{"form unknown field", "username=alice&password=correct-horse&role=admin", "application/x-www-form-urlencoded", 400, "malformed_body"},
		{"form bad grant", "username=alice&password=correct-horse&grant_type=client_credentials", "application/x-www-form-urlencoded", 400, "unsupported_grant_type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.do("POST", "/auth/login", "", c.ct, strings.NewReader(c.body))
			if r.status != c.status || r.errCode(t) != c.code {
				t.Fatalf("= %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
	evs := s.auditEvents()
	if countAudit(evs, "auth.signup", "ok", "alice") != 1 || countAudit(evs, "auth.signup", "denied", "alice") != 1 ||
		countAudit(evs, "auth.login", "ok", "alice") < 2 || countAudit(evs, "auth.login", "failed", "alice") != 1 ||
		countAudit(evs, "auth.login", "failed", "nobody") != 1 {
		t.Fatalf("audit trail incomplete: %+v", evs)
	}
}

// forge builds a token from raw parts, for the attacks the verifier must
// refuse.
func forge(header, claims map[string]any, sign func(string) string) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	unsigned := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return unsigned + "." + sign(unsigned)
}

func TestTokenAttacks(t *testing.T) {
	s := newStack(t)
	good := s.signup("mallory", "mallory-password")
	if r := s.call("GET", "/auth/users/me", good, nil); r.status != http.StatusOK {
		t.Fatalf("a good token is refused: %d %s", r.status, r.body)
	}
	now := time.Now()
	claims := map[string]any{"sub": "mallory", "role": "admin", "iss": "cryptostream", "aud": []string{"cryptostream-api"},
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "x"}

	expired, err := auth.NewTokens(s.key, time.Minute, func() time.Time { return now.Add(-time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	expiredTok := s.issue(expired, "mallory")
	other, _ := auth.NewTokens([]byte(strings.Repeat("o", 48)), time.Hour, nil)
	otherTok := s.issue(other, "mallory")
	// Tampered role: the payload of a real token with role changed to
	// admin, keeping the original signature.
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := strings.Replace(string(payload), `"role":"user"`, `"role":"admin"`, 1)
	if tampered == string(payload) {
		t.Fatalf("token payload has no user role: %s", payload)
	}
	tamperedTok := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(tampered)) + "." + parts[2]
	none := forge(map[string]any{"alg": "none", "typ": "JWT"}, claims, func(string) string { return "" })
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims(claims)).SignedString(s.key)
	noExp := map[string]any{}
	for k, v := range claims {
		if k != "exp" {
			noExp[k] = v
		}
	}
	noExpTok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(noExp)).SignedString(s.key)
	wrongAud := map[string]any{}
	for k, v := range claims {
		wrongAud[k] = v
	}
	wrongAud["aud"] = "someone-else"
	wrongAudTok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(wrongAud)).SignedString(s.key)

	// A well-signed token of the old shape, naming a username but no
	// account, is refused: it could open any later account of that name.
	noUID, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims)).SignedString(s.key)
	for name, tok := range map[string]string{
		"no account id": noUID,
		"expired":       expiredTok, "other key": otherTok, "tampered role": tamperedTok, "alg none": none,
		"alg HS512": hs512, "no expiry": noExpTok, "wrong audience": wrongAudTok, "garbage": "abc.def.ghi",
	} {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/auth/users/me", "/auth/users", "/crypto/assets"} {
				r := s.call("GET", path, tok, nil)
				if r.status != http.StatusUnauthorized || r.errCode(t) != "invalid_token" || r.header.Get("WWW-Authenticate") == "" {
					t.Fatalf("GET %s = %d %s", path, r.status, r.body)
				}
			}
		})
	}
	t.Run("no token", func(t *testing.T) {
		r := s.call("GET", "/auth/users/me", "", nil)
		if r.status != http.StatusUnauthorized || r.errCode(t) != "unauthenticated" {
			t.Fatalf("= %d %s", r.status, r.body)
		}
	})
}

func TestUserAdministration(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	alice := s.signup("alice", "alice-password")
	bob := s.signup("bob", "bob-password")

	// A user cannot administer.
	for _, c := range []struct{ method, path, body string }{
		{"DELETE", "/auth/users/bob", ""},
		{"PUT", "/auth/users/alice/role", `{"role":"admin"}`},
		{"PUT", "/auth/users/bob/role", `{"role":"admin"}`},
		{"GET", "/auth/users", ""},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		r := s.call(c.method, c.path, alice, body)
		if r.status != http.StatusForbidden || r.errCode(t) != "forbidden" {
			t.Fatalf("%s %s as a user = %d %s", c.method, c.path, r.status, r.body)
		}
	}
	// Nor change their own role through their profile.
	r := s.call("PUT", "/auth/users/me", alice, `{"role":"admin"}`)
	if r.status != http.StatusBadRequest || r.errCode(t) != "malformed_body" {
		t.Fatalf("PUT me with a role = %d %s", r.status, r.body)
	}
	me := s.expect(s.call("GET", "/auth/users/me", alice, nil), http.StatusOK).json(t)
	if me["role"] != "user" {
		t.Fatalf("alice became %v", me["role"])
	}

	// Profile and password change.
	s.expect(s.call("PUT", "/auth/users/me", alice, map[string]string{"full_name": "Alice A."}), http.StatusOK)
	r = s.call("PUT", "/auth/users/me", alice, map[string]string{"password": "new-password-1", "current_password": "wrong"})
	if r.status != http.StatusForbidden {
		t.Fatalf("password change with a wrong current password = %d %s", r.status, r.body)
	}
	s.expect(s.call("PUT", "/auth/users/me", alice, map[string]string{"password": "new-password-1", "current_password": "alice-password"}), http.StatusOK)
	s.expect(s.call("POST", "/auth/login", "", map[string]string{"username": "alice", "password": "alice-password"}), http.StatusUnauthorized)
	// The password change revoked every token issued before it.
	if r := s.call("GET", "/auth/users/me", alice, nil); r.status != http.StatusUnauthorized || r.errCode(t) != "invalid_token" {
		t.Fatalf("token from before the password change = %d %s", r.status, r.body)
	}
	alice = s.login("alice", "new-password-1")
	if got := s.expect(s.call("GET", "/auth/users/me", alice, nil), http.StatusOK).json(t)["full_name"]; got != "Alice A." {
		t.Fatalf("full_name = %v", got)
	}

	// A role change revokes the tokens issued before it, both ways: the
	// role is never trusted from the claim.
	s.expect(s.call("PUT", "/auth/users/alice/role", admin, map[string]string{"role": "admin"}), http.StatusOK)
	if r := s.call("GET", "/auth/users/me", alice, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("token from before the promotion = %d", r.status)
	}
	aliceAdmin := s.login("alice", "new-password-1")
	s.expect(s.call("GET", "/auth/users", aliceAdmin, nil), http.StatusOK)
	s.expect(s.call("PUT", "/auth/users/alice/role", admin, map[string]string{"role": "user"}), http.StatusOK)
	if r := s.call("GET", "/auth/users", aliceAdmin, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("demoted admin's token still answers: %d", r.status)
	}

	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"bad role", "PUT", "/auth/users/bob/role", `{"role":"root"}`, 400, "invalid_role"},
		{"role of nobody", "PUT", "/auth/users/nobody/role", `{"role":"admin"}`, 404, "user_not_found"},
		{"delete nobody", "DELETE", "/auth/users/nobody", nil, 404, "user_not_found"},
		{"delete sql", "DELETE", "/auth/users/" + url.PathEscape("x' OR '1'='1"), nil, 404, "user_not_found"},
		{"demote last admin", "PUT", "/auth/users/" + adminName + "/role", `{"role":"user"}`, 409, "last_admin"},
		{"delete last admin", "DELETE", "/auth/users/" + adminName, nil, 409, "last_admin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.call(c.method, c.path, admin, c.body)
			if r.status != c.status || r.errCode(t) != c.code {
				t.Fatalf("= %d %s", r.status, r.body)
			}
		})
	}

	s.expect(s.call("DELETE", "/auth/users/bob", admin, nil), http.StatusNoContent)
	s.expect(s.call("DELETE", "/auth/users/bob", admin, nil), http.StatusNotFound)
	users := s.expect(s.call("GET", "/auth/users", admin, nil), http.StatusOK).json(t)["users"].([]any)
	if len(users) != 2 {
		t.Fatalf("users = %v", users)
	}
	// A deleted user's token no longer answers for them.
	if r := s.call("GET", "/auth/users/me", bob, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("deleted user's me = %d", r.status)
	}
	evs := s.auditEvents()
	if countAudit(evs, "user.role", "ok", "alice") != 2 || countAudit(evs, "user.delete", "ok", "bob") != 1 ||
		countAudit(evs, "user.delete", "failed", adminName) != 1 || countAudit(evs, "user.bootstrap", "ok", adminName) != 1 {
		t.Fatalf("audit trail incomplete: %+v", evs)
	}
}

func TestLoginRateLimit(t *testing.T) {
	// Refill slow enough that nothing refills during the test.
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) {
		c.LoginUserBurst, c.LoginUserEvery = 3, time.Hour
		c.LoginIPBurst, c.LoginIPEvery = 8, time.Hour
	})
	// Per (username, address): three failures, then 429 even with the
	// right password from that address.
	for i := range 3 {
		r := s.call("POST", "/auth/login", "", map[string]string{"username": adminName, "password": "wrong-" + string(rune('a'+i))})
		if r.status != http.StatusUnauthorized {
			t.Fatalf("attempt %d = %d", i, r.status)
		}
	}
	r := s.call("POST", "/auth/login", "", map[string]string{"username": adminName, "password": adminPass})
	if r.status != http.StatusTooManyRequests || r.errCode(t) != "rate_limited" || r.header.Get("Retry-After") == "" {
		t.Fatalf("4th attempt = %d %s", r.status, r.body)
	}
	// Case does not buy another bucket.
	if r := s.call("POST", "/auth/login", "", map[string]string{"username": strings.ToUpper(adminName), "password": adminPass}); r.status != http.StatusTooManyRequests {
		t.Fatalf("upper-cased name = %d", r.status)
	}
	// Per address: the remaining failures of this address go to other
	// names (refusals are not charged), then every name is refused.
	for i := range 5 {
		r := s.call("POST", "/auth/login", "", map[string]string{"username": "user" + string(rune('a'+i)), "password": "whatever-1"})
		if r.status != http.StatusUnauthorized {
			t.Fatalf("other name %d = %d %s", i, r.status, r.body)
		}
	}
	r = s.call("POST", "/auth/login", "", map[string]string{"username": "fresh-name", "password": "whatever-1"})
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("after the address's burst = %d %s", r.status, r.body)
	}
	s.stopRun() // flushes the aggregated refusals
	evs := s.auditEvents()
	if refused := sumAuditCount(evs, "auth.login", "rate_limited"); refused != 3 || countAudit(evs, "auth.login", "failed", adminName) != 3 {
		t.Fatalf("%d refusals audited, want 3; audit = %+v", refused, evs)
	}
}

// sumAuditCount adds up what the events of an action and outcome stand for
// (an aggregated event counts Count attempts).
func sumAuditCount(evs []streams.AuditEvent, action, outcome string) int {
	n := 0
	for _, e := range evs {
		if e.Action == action && e.Outcome == outcome {
			n += max(e.Count, 1)
		}
	}
	return n
}

// Concurrent profile updates through HTTP both land: the store re-reads and
// retries on a revision mismatch instead of overwriting.
func TestConcurrentProfileUpdates(t *testing.T) {
	s := newStack(t)
	tok := s.signup("alice", "alice-password")
	for round := range 10 {
		email, name := fmt.Sprintf("a%d@example.com", round), fmt.Sprintf("Alice %d", round)
		var wg sync.WaitGroup
		for _, body := range []map[string]string{{"email": email}, {"full_name": name}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r := s.call("PUT", "/auth/users/me", tok, body); r.status != http.StatusOK {
					t.Errorf("PUT me %v = %d %s", body, r.status, r.body)
				}
			}()
		}
		wg.Wait()
		me := s.expect(s.call("GET", "/auth/users/me", tok, nil), http.StatusOK).json(t)
		if me["email"] != email || me["full_name"] != name {
			t.Fatalf("round %d: a write was lost: %v", round, me)
		}
	}
}
