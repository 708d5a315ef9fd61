package gateway

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
	if err := auth.ValidateUsername(body.Username); err != nil {
		g.fail(w, r, errorf(http.StatusBadRequest, "invalid_username", "%s", strings.TrimPrefix(err.Error(), "auth: ")))
		return
	}
	if err := validProfile(body.Email, body.FullName); err != nil {
		g.fail(w, r, err)
		return
	}
	// The limiter also guards signup: each one costs a bcrypt hash.
	if ok, wait := g.ipLim.Allow(remoteIP(r)); !ok {
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
	u, err := g.users.Create(ctx, streams.User{Username: body.Username, Email: body.Email, FullName: body.FullName, Role: streams.RoleUser, PasswordHash: hash})
	if errors.Is(err, auth.ErrUserExists) {
		g.audit(ctx, "auth.signup", body.Username, body.Username, "denied", remoteIP(r), "username taken")
		g.fail(w, r, errorf(http.StatusConflict, "user_exists", "username %q is taken", body.Username))
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
	okIP, waitIP := g.ipLim.Allow(ip)
	okUser, waitUser := true, time.Duration(0)
	if okIP {
		okUser, waitUser = g.userLim.Allow(strings.ToLower(username))
	}
	if !okIP || !okUser {
		g.m.logins.WithLabelValues("rate_limited").Inc()
		g.audit(ctx, "auth.login", username, username, "rate_limited", ip, "")
		g.rateLimited(w, r, max(waitIP, waitUser))
		return
	}
	u, _, err := g.users.Get(ctx, username)
	if err != nil && !errors.Is(err, auth.ErrUserNotFound) {
		g.fail(w, r, err)
		return
	}
	if !auth.CheckPassword(u.PasswordHash, password) || u.Disabled {
		g.m.logins.WithLabelValues("invalid").Inc()
		g.audit(ctx, "auth.login", username, username, "failed", ip, "bad credentials")
		g.fail(w, r, errorf(http.StatusUnauthorized, "invalid_credentials", "wrong username or password"))
		return
	}
	token, _, err := g.d.Tokens.Issue(u.Username, u.Role)
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
		c, err := g.d.Tokens.Verify(strings.TrimSpace(token))
		if err != nil {
			g.fail(w, r, errorf(http.StatusUnauthorized, "invalid_token", "the token is invalid or expired"))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), keyClaims, c)))
	})
}

// admin requires a token and re-reads the user, so that a deleted, disabled
// or demoted admin loses access at once rather than when the token expires.
func (g *Gateway) admin(h http.HandlerFunc) http.Handler {
	return g.authed(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := g.io(r)
		defer cancel()
		u, _, err := g.users.Get(ctx, claimsOf(r).Subject)
		if errors.Is(err, auth.ErrUserNotFound) {
			g.fail(w, r, errorf(http.StatusUnauthorized, "invalid_token", "the token's user no longer exists"))
			return
		}
		if err != nil {
			g.fail(w, r, err)
			return
		}
		if u.Role != streams.RoleAdmin || u.Disabled {
			g.fail(w, r, errorf(http.StatusForbidden, "forbidden", "admin only"))
			return
		}
		h(w, r)
	})
}

func (g *Gateway) io(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), g.cfg.IOTimeout)
}

func (g *Gateway) currentUser(ctx context.Context, r *http.Request) (streams.User, error) {
	u, _, err := g.users.Get(ctx, claimsOf(r).Subject)
	if errors.Is(err, auth.ErrUserNotFound) {
		return u, errorf(http.StatusUnauthorized, "invalid_token", "the token's user no longer exists")
	}
	if err == nil && u.Disabled {
		return u, errorf(http.StatusForbidden, "disabled", "the account is disabled")
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
		if !auth.CheckPassword(cur.PasswordHash, body.CurrentPassword) {
			g.audit(ctx, "user.update", cur.Username, cur.Username, "denied", remoteIP(r), "wrong current password")
			g.fail(w, r, errorf(http.StatusForbidden, "invalid_credentials", "current_password is wrong"))
			return
		}
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
	name := r.PathValue("username")
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
	name := r.PathValue("username")
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

// audit records an event on AUDIT. A failed publication is logged and
// counted, not returned: the request it describes already happened.
func (g *Gateway) audit(ctx context.Context, action, actor, target, outcome, remote, detail string) {
	ev := &streams.AuditEvent{ID: auth.NewID(), Action: action, Actor: actor, Target: target, Outcome: outcome, Remote: remote, Detail: detail, At: g.now().UTC()}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.IOTimeout)
	defer cancel()
	if _, err := streams.Publish(ctx, g.d.Publisher, ev); err != nil {
		g.m.audit.WithLabelValues("failed").Inc()
		g.log.Error("audit event lost", "action", action, "actor", actor, "target", target, "outcome", outcome, "err", err)
		return
	}
	g.m.audit.WithLabelValues("ok").Inc()
}
