package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// Sentinel errors of the users store.
var (
	ErrUserNotFound = errors.New("auth: user not found")
	ErrUserExists   = errors.New("auth: user already exists")
	ErrInvalidName  = errors.New("auth: username must be 3 to 32 letters, digits, '_' or '-'")
	ErrConflict     = errors.New("auth: user changed concurrently too many times")
	ErrLastAdmin    = errors.New("auth: the last admin cannot be removed or demoted")
)

// Usernames are KV keys and subject-safe tokens, so the charset is narrow:
// anything else (quotes, spaces, dots, wildcards) is refused at the door.
var usernameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{3,32}$`)

// ValidateUsername checks a username.
func ValidateUsername(name string) error {
	if !usernameRE.MatchString(name) {
		return ErrInvalidName
	}
	return nil
}

// KV is the part of a jetstream.KeyValue the store uses.
type KV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error)
}

// Users is the users bucket.
type Users struct {
	kv  KV
	now func() time.Time
}

// NewUsers wraps the users bucket. now may be nil for time.Now.
func NewUsers(kv KV, now func() time.Time) *Users {
	if now == nil {
		now = time.Now
	}
	return &Users{kv: kv, now: now}
}

// Get returns a user and the revision it was read at.
func (u *Users) Get(ctx context.Context, name string) (streams.User, uint64, error) {
	if ValidateUsername(name) != nil {
		return streams.User{}, 0, ErrUserNotFound
	}
	e, err := u.kv.Get(ctx, streams.UserKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return streams.User{}, 0, ErrUserNotFound
	}
	if err != nil {
		return streams.User{}, 0, fmt.Errorf("auth: get user %s: %w", name, err)
	}
	var usr streams.User
	if err := json.Unmarshal(e.Value(), &usr); err != nil {
		return streams.User{}, 0, fmt.Errorf("auth: decode user %s: %w", name, err)
	}
	return usr, e.Revision(), nil
}

// Create stores a new user; ErrUserExists when the name is taken.
func (u *Users) Create(ctx context.Context, usr streams.User) (streams.User, error) {
	if err := ValidateUsername(usr.Username); err != nil {
		return streams.User{}, err
	}
	now := u.now().UTC()
	usr.V = streams.SchemaVersion
	usr.CreatedAt, usr.UpdatedAt = now, now
	b, err := json.Marshal(usr)
	if err != nil {
		return streams.User{}, fmt.Errorf("auth: encode user: %w", err)
	}
	if _, err := u.kv.Create(ctx, streams.UserKey(usr.Username), b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return streams.User{}, ErrUserExists
		}
		return streams.User{}, fmt.Errorf("auth: create user %s: %w", usr.Username, err)
	}
	return usr, nil
}

// maxCASAttempts bounds the read-modify-write retries of one update; each
// retry means another writer got in, so running out means heavy contention.
const maxCASAttempts = 16

// Update applies fn to the current user and stores the result with the read
// revision, re-reading and re-applying on a concurrent change, so that two
// updates never overwrite each other. fn must be a pure function of its
// argument since it may run more than once.
func (u *Users) Update(ctx context.Context, name string, fn func(*streams.User) error) (streams.User, error) {
	for range maxCASAttempts {
		usr, rev, err := u.Get(ctx, name)
		if err != nil {
			return streams.User{}, err
		}
		if err := fn(&usr); err != nil {
			return streams.User{}, err
		}
		usr.Username = name // fn may not rename
		usr.V = streams.SchemaVersion
		usr.UpdatedAt = u.now().UTC()
		b, err := json.Marshal(usr)
		if err != nil {
			return streams.User{}, fmt.Errorf("auth: encode user: %w", err)
		}
		_, err = u.kv.Update(ctx, streams.UserKey(name), b, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return streams.User{}, fmt.Errorf("auth: update user %s: %w", name, err)
		}
		return usr, nil
	}
	return streams.User{}, ErrConflict
}

// Delete removes a user if it still is at the revision it was read at.
func (u *Users) Delete(ctx context.Context, name string, rev uint64) error {
	err := u.kv.Delete(ctx, streams.UserKey(name), jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("auth: delete user %s: %w", name, err)
	}
	return nil
}

// List returns every user, sorted by name.
func (u *Users) List(ctx context.Context) ([]streams.User, error) {
	lister, err := u.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("auth: list users: %w", err)
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]streams.User, 0, len(names))
	for _, n := range names {
		usr, _, err := u.Get(ctx, n)
		if errors.Is(err, ErrUserNotFound) {
			continue // deleted between listing and reading
		}
		if err != nil {
			return nil, err
		}
		out = append(out, usr)
	}
	return out, nil
}

// CountAdmins counts enabled admins.
func (u *Users) CountAdmins(ctx context.Context) (int, error) {
	users, err := u.List(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, usr := range users {
		if usr.Role == streams.RoleAdmin && !usr.Disabled {
			n++
		}
	}
	return n, nil
}

// EnsureAdmin creates an admin when none exists. An empty password is
// replaced by a random one, returned so that the caller can show it once.
// created is false when an admin existed already.
func (u *Users) EnsureAdmin(ctx context.Context, name, password string, cost int) (created bool, generated string, err error) {
	n, err := u.CountAdmins(ctx)
	if err != nil {
		return false, "", err
	}
	if n > 0 {
		return false, "", nil
	}
	if name == "" {
		name = "admin"
	}
	if password == "" {
		generated = NewID()[:24]
		password = generated
	}
	hash, err := HashPassword(password, cost)
	if err != nil {
		return false, "", err
	}
	_, err = u.Create(ctx, streams.User{Username: name, Role: streams.RoleAdmin, PasswordHash: hash})
	if errors.Is(err, ErrUserExists) {
		// A user by that name exists but is no admin: promote it, keeping
		// its password unless one was given.
		_, err = u.Update(ctx, name, func(usr *streams.User) error {
			usr.Role = streams.RoleAdmin
			usr.Disabled = false
			if generated == "" {
				usr.PasswordHash = hash
			}
			return nil
		})
		if generated != "" {
			generated = ""
		}
	}
	if err != nil {
		return false, "", err
	}
	return true, generated, nil
}
