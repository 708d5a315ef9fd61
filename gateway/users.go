package gateway

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/gateway/auth"
	"cryptostream/streams"
)

// userView is a user as the API shows it: never the hash.
type userView struct {
	Username  string       `json:"username"`
	Email     string       `json:"email"`
	FullName  string       `json:"full_name"`
	Role      streams.Role `json:"role"`
	Disabled  bool         `json:"disabled"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
}

func viewUser(u streams.User) userView {
	return userView{u.Username, u.Email, u.FullName, u.Role, u.Disabled, u.CreatedAt, u.UpdatedAt}
}

func validProfile(email, fullName string) error {
	if len(email) > 254 || (email != "" && (!strings.Contains(email, "@") || strings.ContainsAny(email, " \t\r\n"))) {
		return errorf(http.StatusBadRequest, "invalid_email", "email is not an address")
	}
	if len(fullName) > 128 || !utf8.ValidString(fullName) || strings.ContainsFunc(fullName, func(r rune) bool { return r < 0x20 }) {
		return errorf(http.StatusBadRequest, "invalid_full_name", "full_name must be at most 128 printable characters")
	}
	return nil
}

func (g *Gateway) signup(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Email    string `json:"email"`
		FullName string `json:"full_name"`
	}
	if err := g.decodeJSON(w, r, &body); err != nil {
		g.fail(w, r, err)
		return
	}
	name, err := auth.CanonicalUsername(body.Username)
	if err != nil {
		g.fail(w, r, errorf(http.StatusBadRequest, "invalid_username", "%s", strings.TrimPrefix(err.Error(), "auth: ")))
		return
	}
	if err := validProfile(body.Email, body.FullName); err != nil {
		g.fail(w, r, err)
		return
	}
	// Each signup costs a bcrypt hash and an account: bounded per address.
	if ok, wait := g.signupLim.Allow(remoteIP(r)); !ok {
		g.refusedAttempt("auth.signup", name, remoteIP(r))
		g.rateLimited(w, r, wait)
		return
	}
	hash, err := auth.HashPassword(body.Password, g.cfg.BcryptCost)
	if errors.Is(err, auth.ErrWeakPassword) {
		g.fail(w, r, errorf(http.StatusBadRequest, "weak_password", "password must be %d to %d bytes", auth.MinPasswordLen, auth.MaxPasswordLen))
		return
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	u, err := g.users.Create(ctx, streams.User{Username: name, Email: body.Email, FullName: body.FullName, Role: streams.RoleUser, PasswordHash: hash})
	if errors.Is(err, auth.ErrUserExists) {
		g.audit(ctx, "auth.signup", name, name, "denied", remoteIP(r), "username taken")
		g.fail(w, r, errorf(http.StatusConflict, "user_exists", "username %q is taken", name))
		return
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	g.audit(ctx, "auth.signup", u.Username, u.Username, "ok", remoteIP(r), "")
	writeJSON(w, http.StatusCreated, viewUser(u))
}

func (g *Gateway) rateLimited(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
	g.fail(w, r, errorf(http.StatusTooManyRequests, "rate_limited", "too many attempts; retry in %s", wait.Round(time.Second)))
}

func (g *Gateway) login(w http.ResponseWriter, r *http.Request) {
	var username, password string
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/x-www-form-urlencoded" {
		// The OAuth2 password form FastAPI clients send.
		vals, err := g.decodeForm(w, r, "username", "password", "grant_type", "scope", "client_id", "client_secret")
		if err != nil {
			g.fail(w, r, err)
			return
		}
		if gt := vals.Get("grant_type"); gt != "" && gt != "password" {
			g.fail(w, r, errorf(http.StatusBadRequest, "unsupported_grant_type", "grant_type must be password"))
			return
		}
		username, password = vals.Get("username"), vals.Get("password")
	} else {
		var body struct {
			Username string `json:"username"`
			Password string `json:"password"`
		}
		if err := g.decodeJSON(w, r, &body); err != nil {
			g.fail(w, r, err)
			return
		}
		username, password = body.Username, body.Password
	}
	if username == "" || password == "" {
		g.fail(w, r, errorf(http.StatusBadRequest, "malformed_body", "username and password are required"))
		return
	}
	ip := remoteIP(r)
	ctx, cancel := g.io(r)
	defer cancel()
	// The name is checked before it is used for anything, audit included:
	// only a canonical, bounded name is ever stored. One that cannot be a
	// username is a failure of its address like any other, without the
	// name.
	name, nameErr := auth.CanonicalUsername(username)
	attempt, wait, ok := g.guard.Begin(name, ip)
	if !ok {
		g.m.logins.WithLabelValues("rate_limited").Inc()
		g.refusedAttempt("auth.login", name, ip)
		g.rateLimited(w, r, wait)
		return
	}
	if nameErr != nil {
		attempt.Failed()
		g.m.logins.WithLabelValues("invalid").Inc()
		g.countAttempt("auth.login", "", ip, "failed", "logins with a name that cannot be a username")
		g.fail(w, r, errorf(http.StatusUnauthorized, "invalid_credentials", "wrong username or password"))
		return
	}
	u, _, err := g.users.Get(ctx, name)
	if err != nil && !errors.Is(err, auth.ErrUserNotFound) {
		attempt.Release()
		g.fail(w, r, err)
		return
	}
	// An unknown name spends a comparison at the cost of a real one.
	if !auth.CheckPassword(u.PasswordHash, password, g.cfg.BcryptCost) || u.Disabled {
		attempt.Failed()
		g.m.logins.WithLabelValues("invalid").Inc()
		g.audit(ctx, "auth.login", name, name, "failed", ip, "bad credentials")
		g.fail(w, r, errorf(http.StatusUnauthorized, "invalid_credentials", "wrong username or password"))
		return
	}
	attempt.Succeeded()
	if u.ID == "" {
		// An account from before tokens named accounts gets its ID now.
		if u, err = g.users.Update(ctx, name, func(*streams.User) error { return nil }); err != nil {
			g.fail(w, r, g.userErr(err))
			return
		}
	}
	token, _, err := g.d.Tokens.Issue(u)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	g.m.logins.WithLabelValues("ok").Inc()
	g.audit(ctx, "auth.login", u.Username, u.Username, "ok", ip, "")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"token_type":   "bearer",
		"expires_in":   int(g.d.Tokens.TTL().Seconds()),
	})
}

// authed requires a valid bearer token.
func (g *Gateway) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		scheme, token, ok := strings.Cut(authz, " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
			g.fail(w, r, errorf(http.StatusUnauthorized, "unauthenticated", "a bearer token is required"))
			return
		}
		c, err := g.tokens.Verify(strings.TrimSpace(token))
		if err != nil {
			g.fail(w, r, errorf(http.StatusUnauthorized, "invalid_token", "the token is invalid or expired"))
			return
		}
		// The mirror of the users bucket answers at once when it is sure;
		// only when it is not does the check read the bucket, under the
		// I/O deadline.
		sure, err := g.sessions.Known(c)
		if !sure {
			ctx, cancel := g.io(r)
			err = g.sessions.Check(ctx, c)
			cancel()
		}
		if err != nil {
			g.fail(w, r, sessionErr(err))
			return
		}
		ri := infoOf(r)
		if ri.id == "" {
			// Not under wrap (a test mounting a handler alone).
			ri = &requestInfo{}
			r = r.WithContext(context.WithValue(r.Context(), keyRequest, ri))
		}
		ri.claims = c
		h(w, r)
	})
}

// sessionErr is the answer to a token Sessions.Check refused.
func sessionErr(err error) error {
	switch {
	case errors.Is(err, auth.ErrRevoked):
		return errorf(http.StatusUnauthorized, "invalid_token", "the token was revoked (account deleted, or its password or role changed); log in again")
	case errors.Is(err, auth.ErrDisabled):
		return errorf(http.StatusForbidden, "disabled", "the account is disabled")
	}
	return err
}

// verifyToken is the websocket's token check: the signature and claims, and
// that the token was not revoked since.
func (g *Gateway) verifyToken(token string) (auth.Claims, error) {
	c, err := g.tokens.Verify(token)
	if err != nil {
		return c, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.IOTimeout)
	defer cancel()
	if err := g.sessions.Check(ctx, c); err != nil {
		return auth.Claims{}, fmt.Errorf("%w: %w", auth.ErrInvalidToken, err)
	}
	return c, nil
}

// admin requires a token and re-reads the user, so that a deleted, disabled
// or demoted admin loses access at once rather than when the token expires.
func (g *Gateway) admin(h http.HandlerFunc) http.Handler {
	return g.authed(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := g.io(r)
		defer cancel()
		u, err := g.currentUser(ctx, r)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		if u.Role != streams.RoleAdmin {
			g.fail(w, r, errorf(http.StatusForbidden, "forbidden", "admin only"))
			return
		}
		h(w, r)
	})
}

func (g *Gateway) io(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), g.cfg.IOTimeout)
}

// currentUser reads the token's account, as of now, refusing a token the
// account has moved on from (it may have changed since authed checked).
func (g *Gateway) currentUser(ctx context.Context, r *http.Request) (streams.User, error) {
	c := claimsOf(r)
	u, _, err := g.users.Get(ctx, c.Subject)
	switch {
	case errors.Is(err, auth.ErrUserNotFound) || (err == nil && (u.ID != c.UID || u.TokenGen != c.Gen)):
		return u, sessionErr(auth.ErrRevoked)
	case err == nil && u.Disabled:
		return u, sessionErr(auth.ErrDisabled)
	}
	return u, err
}

func (g *Gateway) getMe(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := g.io(r)
	defer cancel()
	u, err := g.currentUser(ctx, r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewUser(u))
}

func (g *Gateway) putMe(w http.ResponseWriter, r *http.Request) {
	// No role field: a user's own update that names one is refused as an
	// unknown field.
	var body struct {
		Email           *string `json:"email"`
		FullName        *string `json:"full_name"`
		Password        *string `json:"password"`
		CurrentPassword string  `json:"current_password"`
	}
	if err := g.decodeJSON(w, r, &body); err != nil {
		g.fail(w, r, err)
		return
	}
	email, name := "", ""
	if body.Email != nil {
		email = *body.Email
	}
	if body.FullName != nil {
		name = *body.FullName
	}
	if err := validProfile(email, name); err != nil {
		g.fail(w, r, err)
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	cur, err := g.currentUser(ctx, r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	var newHash string
	if body.Password != nil {
		// A stolen token must not buy unlimited guesses at the password
		// (each one a bcrypt comparison): the same budget as login's.
		ip := remoteIP(r)
		attempt, wait, ok := g.guard.Begin(cur.Username, ip)
		if !ok {
			g.refusedAttempt("user.update", cur.Username, ip)
			g.rateLimited(w, r, wait)
			return
		}
		if !auth.CheckPassword(cur.PasswordHash, body.CurrentPassword, g.cfg.BcryptCost) {
			attempt.Failed()
			g.audit(ctx, "user.update", cur.Username, cur.Username, "denied", ip, "wrong current password")
			g.fail(w, r, errorf(http.StatusForbidden, "invalid_credentials", "current_password is wrong"))
			return
		}
		attempt.Succeeded()
		newHash, err = auth.HashPassword(*body.Password, g.cfg.BcryptCost)
		if errors.Is(err, auth.ErrWeakPassword) {
			g.fail(w, r, errorf(http.StatusBadRequest, "weak_password", "password must be %d to %d bytes", auth.MinPasswordLen, auth.MaxPasswordLen))
			return
		}
		if err != nil {
			g.fail(w, r, err)
			return
		}
	}
	u, err := g.users.Update(ctx, cur.Username, func(u *streams.User) error {
		if body.Email != nil {
			u.Email = *body.Email
		}
		if body.FullName != nil {
			u.FullName = *body.FullName
		}
		if newHash != "" {
			u.PasswordHash = newHash
		}
		return nil
	})
	if err != nil {
		g.fail(w, r, g.userErr(err))
		return
	}
	detail := "profile"
	if newHash != "" {
		detail = "profile and password"
	}
	g.audit(ctx, "user.update", u.Username, u.Username, "ok", remoteIP(r), detail)
	writeJSON(w, http.StatusOK, viewUser(u))
}

// putMeDeprecated is the proof of concept's path, kept so its clients keep
// working; the headers tell them where the route moved (RFC 9745, RFC 8288).
func (g *Gateway) putMeDeprecated(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Deprecation", "true")
	w.Header().Set("Link", `</auth/users/me>; rel="successor-version"`)
	g.putMe(w, r)
}

// pathUsername is the {username} of the path in canonical form; a name that
// has none cannot exist, and is not echoed into the audit trail.
func pathUsername(r *http.Request) (string, error) {
	name, err := auth.CanonicalUsername(r.PathValue("username"))
	if err != nil {
		return "", errorf(http.StatusNotFound, "user_not_found", "no such user")
	}
	return name, nil
}

func (g *Gateway) userErr(err error) error {
	switch {
	case errors.Is(err, auth.ErrUserNotFound):
		return errorf(http.StatusNotFound, "user_not_found", "no such user")
	case errors.Is(err, auth.ErrConflict):
		return errorf(http.StatusConflict, "conflict", "the user changed concurrently; retry")
	case errors.Is(err, auth.ErrLastAdmin):
		return errorf(http.StatusConflict, "last_admin", "the last admin cannot be removed or demoted")
	}
	return err
}

func (g *Gateway) listUsers(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := g.io(r)
	defer cancel()
	users, err := g.users.List(ctx)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	out := make([]userView, len(users))
	for i, u := range users {
		out[i] = viewUser(u)
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

// lastAdminGuard refuses to remove the last enabled admin. Two admins
// removing each other at the same instant can still both succeed: the check
// spans keys and KV has no multi-key transaction. `cryptostream user` can
// always create a new admin from the shell.
func (g *Gateway) lastAdminGuard(ctx context.Context, target streams.User) error {
	if target.Role != streams.RoleAdmin || target.Disabled {
		return nil
	}
	n, err := g.users.CountAdmins(ctx)
	if err != nil {
		return err
	}
	if n <= 1 {
		return auth.ErrLastAdmin
	}
	return nil
}

func (g *Gateway) deleteUser(w http.ResponseWriter, r *http.Request) {
	name, err := pathUsername(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	actor := claimsOf(r).Subject
	ctx, cancel := g.io(r)
	defer cancel()
	u, rev, err := g.users.Get(ctx, name)
	if err == nil {
		err = g.lastAdminGuard(ctx, u)
	}
	if err == nil {
		err = g.users.Delete(ctx, name, rev)
	}
	if err != nil {
		g.audit(ctx, "user.delete", actor, name, "failed", remoteIP(r), err.Error())
		g.fail(w, r, g.userErr(err))
		return
	}
	// Per-user data keyed by name must not pass to whoever signs up under
	// the name next.
	if err := g.d.Prefs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		g.log.Error("preferences of a deleted user left behind", "user", name, "err", err)
	}
	g.dropRulesOf(ctx, u, actor, remoteIP(r))
	g.audit(ctx, "user.delete", actor, name, "ok", remoteIP(r), "")
	g.dropPreferences(r, name)
	w.WriteHeader(http.StatusNoContent)
}

func (g *Gateway) putRole(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Role streams.Role `json:"role"`
	}
	if err := g.decodeJSON(w, r, &body); err != nil {
		g.fail(w, r, err)
		return
	}
	if body.Role != streams.RoleAdmin && body.Role != streams.RoleUser {
		g.fail(w, r, errorf(http.StatusBadRequest, "invalid_role", "role must be user or admin"))
		return
	}
	name, err := pathUsername(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	actor := claimsOf(r).Subject
	ctx, cancel := g.io(r)
	defer cancel()
	var from streams.Role
	u, err := g.users.Update(ctx, name, func(u *streams.User) error {
		from = u.Role
		if body.Role == streams.RoleUser {
			if err := g.lastAdminGuard(ctx, *u); err != nil {
				return err
			}
		}
		u.Role = body.Role
		return nil
	})
	if err != nil {
		g.audit(ctx, "user.role", actor, name, "failed", remoteIP(r), err.Error())
		g.fail(w, r, g.userErr(err))
		return
	}
	g.audit(ctx, "user.role", actor, name, "ok", remoteIP(r), string(from)+" -> "+string(body.Role))
	writeJSON(w, http.StatusOK, viewUser(u))
}
