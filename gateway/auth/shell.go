package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cryptostream/streams"
)

// Shell is user management from the shell (`cryptostream user`), for
// bootstrap and recovery: the rules of the admin routes (no demoting or
// deleting the last admin) with every change audited as the "cli" actor.
type Shell struct {
	Users *Users
	// Audit publishes an audit event; nil audits nothing.
	Audit streams.Publisher
	// Cost is the bcrypt cost of new hashes.
	Cost int
	// OnAuditError reports an audit event that could not be stored: the
	// change itself is done and is not undone for it.
	OnAuditError func(action string, err error)
}

// ErrBadRole is a role that is neither user nor admin.
var ErrBadRole = errors.New("auth: role must be user or admin")

func checkRole(role streams.Role) error {
	if role != streams.RoleUser && role != streams.RoleAdmin {
		return fmt.Errorf("%w, got %q", ErrBadRole, role)
	}
	return nil
}

func (s *Shell) audit(ctx context.Context, action, target, detail string) {
	if s.Audit == nil {
		return
	}
	ev := &streams.AuditEvent{ID: NewID(), Action: action, Actor: "cli", Target: target, Outcome: "ok", Detail: detail, At: time.Now().UTC()}
	if _, err := streams.Publish(ctx, s.Audit, ev); err != nil && s.OnAuditError != nil {
		s.OnAuditError(action, err)
	}
}

// Add creates a user with the given password.
func (s *Shell) Add(ctx context.Context, u streams.User, password string) error {
	if err := checkRole(u.Role); err != nil {
		return err
	}
	hash, err := HashPassword(password, s.Cost)
	if err != nil {
		return err
	}
	u.PasswordHash = hash
	if _, err := s.Users.Create(ctx, u); err != nil {
		return err
	}
	s.audit(ctx, "auth.signup", u.Username, "created from the shell as "+string(u.Role))
	return nil
}

// SetRole changes a user's role.
func (s *Shell) SetRole(ctx context.Context, name string, role streams.Role) error {
	if err := checkRole(role); err != nil {
		return err
	}
	_, err := s.Users.Update(ctx, name, func(u *streams.User) error {
		if u.Role == streams.RoleAdmin && role == streams.RoleUser {
			if n, err := s.Users.CountAdmins(ctx); err != nil || n <= 1 {
				return errors.Join(err, ErrLastAdmin)
			}
		}
		u.Role = role
		return nil
	})
	if err != nil {
		return err
	}
	s.audit(ctx, "user.role", name, "set to "+string(role)+" from the shell")
	return nil
}

// SetPassword sets a user's password and re-enables the account.
func (s *Shell) SetPassword(ctx context.Context, name, password string) error {
	hash, err := HashPassword(password, s.Cost)
	if err != nil {
		return err
	}
	if _, err := s.Users.Update(ctx, name, func(u *streams.User) error { u.PasswordHash = hash; u.Disabled = false; return nil }); err != nil {
		return err
	}
	s.audit(ctx, "user.update", name, "password set from the shell")
	return nil
}

// Delete removes a user; the last admin stays.
func (s *Shell) Delete(ctx context.Context, name string) error {
	u, rev, err := s.Users.Get(ctx, name)
	if err != nil {
		return err
	}
	if u.Role == streams.RoleAdmin {
		if n, err := s.Users.CountAdmins(ctx); err != nil || n <= 1 {
			return errors.Join(err, ErrLastAdmin)
		}
	}
	if err := s.Users.Delete(ctx, name, rev); err != nil {
		return err
	}
	s.audit(ctx, "user.delete", name, "deleted from the shell")
	return nil
}
