package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"

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

// Usernames are KV keys and subject-safe tokens, so the canonical charset
// is narrow: anything else (quotes, spaces, dots, wildcards) is refused at
// the door.
var usernameRE = regexp.MustCompile(`^[a-z0-9_-]{3,32}$`)

// maxRawUsername bounds what is normalised at all: a name longer than this
// cannot fold to 32 characters of the charset, and normalising a 64 KiB one
// per request would be work an attacker chooses.
const maxRawUsername = 128

// A cases.Caser keeps state and is not safe for concurrent use, so each
// call builds its own.
func fold(s string) string { return cases.Fold().String(s) }

// CanonicalUsername is the one form a username is stored, looked up,
// limited and audited under: NFC, case-folded (so ALICE, Alice and alice,
// or a name spelt with the Kelvin sign K, are one account), then checked
// against the charset.
func CanonicalUsername(name string) (string, error) {
	if name == "" || len(name) > maxRawUsername || !utf8.ValidString(name) {
		return "", ErrInvalidName
	}
	c := norm.NFC.String(fold(norm.NFC.String(name)))
	if !usernameRE.MatchString(c) {
		return "", ErrInvalidName
	}
	return c, nil
}

// ValidateUsername checks that a username has a canonical form.
func ValidateUsername(name string) error {
	_, err := CanonicalUsername(name)
	return err
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
	// onWrite hears of every write made through this store: the user as
	// written and its revision, or nil for a deletion.
	onWrite func(name string, u *streams.User, rev uint64)
}

func (u *Users) wrote(name string, usr *streams.User, rev uint64) {
	if u.onWrite != nil {
		u.onWrite(name, usr, rev)
	}
}

// NewUsers wraps the users bucket. now may be nil for time.Now.
func NewUsers(kv KV, now func() time.Time) *Users {
	if now == nil {
		now = time.Now
	}
	return &Users{kv: kv, now: now}
}

// Get returns a user, by any spelling of its name, and the revision it was
// read at.
func (u *Users) Get(ctx context.Context, name string) (streams.User, uint64, error) {
	name, err := CanonicalUsername(name)
	if err != nil {
		return streams.User{}, 0, ErrUserNotFound
	}
	return u.get(ctx, name)
}

// get reads the user stored under key exactly.
func (u *Users) get(ctx context.Context, name string) (streams.User, uint64, error) {
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

// Create stores a new user under its canonical name with a fresh ID;
// ErrUserExists when the name is taken in any spelling.
func (u *Users) Create(ctx context.Context, usr streams.User) (streams.User, error) {
	name, err := CanonicalUsername(usr.Username)
	if err != nil {
		return streams.User{}, err
	}
	usr.Username = name
	if usr.ID == "" {
		usr.ID = NewID()
	}
	now := u.now().UTC()
	usr.V = streams.SchemaVersion
	usr.CreatedAt, usr.UpdatedAt = now, now
	b, err := json.Marshal(usr)
	if err != nil {
		return streams.User{}, fmt.Errorf("auth: encode user: %w", err)
	}
	rev, err := u.kv.Create(ctx, streams.UserKey(usr.Username), b)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return streams.User{}, ErrUserExists
		}
		return streams.User{}, fmt.Errorf("auth: create user %s: %w", usr.Username, err)
	}
	u.wrote(usr.Username, &usr, rev)
	return usr, nil
}

// maxCASAttempts bounds the read-modify-write retries of one update; each
// retry means another writer got in, so running out means heavy contention.
const maxCASAttempts = 16

// Update applies fn to the current user and stores the result with the read
// revision, re-reading and re-applying on a concurrent change, so that two
// updates never overwrite each other. fn must be a pure function of its
// argument since it may run more than once.
//
// A change of password, role or disabled flag bumps the token generation,
// which revokes every token issued before it; an account stored before IDs
// existed gets one.
func (u *Users) Update(ctx context.Context, name string, fn func(*streams.User) error) (streams.User, error) {
	name, err := CanonicalUsername(name)
	if err != nil {
		return streams.User{}, ErrUserNotFound
	}
	for range maxCASAttempts {
		usr, rev, err := u.get(ctx, name)
		if err != nil {
			return streams.User{}, err
		}
		before := usr
		if err := fn(&usr); err != nil {
			return streams.User{}, err
		}
		usr.Username = name // fn may not rename
		usr.ID, usr.TokenGen = before.ID, before.TokenGen
		if usr.ID == "" {
			usr.ID = NewID()
		}
		if usr.PasswordHash != before.PasswordHash || usr.Role != before.Role || usr.Disabled != before.Disabled {
			usr.TokenGen++
		}
		usr.V = streams.SchemaVersion
		usr.UpdatedAt = u.now().UTC()
		b, err := json.Marshal(usr)
		if err != nil {
			return streams.User{}, fmt.Errorf("auth: encode user: %w", err)
		}
		newRev, err := u.kv.Update(ctx, streams.UserKey(name), b, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return streams.User{}, fmt.Errorf("auth: update user %s: %w", name, err)
		}
		u.wrote(name, &usr, newRev)
		return usr, nil
	}
	return streams.User{}, ErrConflict
}

// Delete removes a user if it still is at the revision it was read at.
func (u *Users) Delete(ctx context.Context, name string, rev uint64) error {
	name, err := CanonicalUsername(name)
	if err != nil {
		return ErrUserNotFound
	}
	err = u.kv.Delete(ctx, streams.UserKey(name), jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("auth: delete user %s: %w", name, err)
	}
	// The delete marker's own revision is not returned; it is above rev,
	// and anything written after it is above that.
	u.wrote(name, nil, rev+1)
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
		usr, _, err := u.get(ctx, n)
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

// Rename is an account Canonicalize moved: From was its stored name.
type Rename struct {
	From, To string
	// Collided is set when To is not From's canonical form because another
	// account already held that.
	Collided bool
}

// Canonicalize moves every account stored under a name that is not
// canonical (from before names were case-folded) to its canonical name,
// keeping its ID, password and role, so that it stays reachable by any
// spelling. When the canonical name is taken (ALICE beside alice) it moves
// to the first free "<name>-<n>" instead and says so: the caller logs and
// audits it, and the operator tells the user. It is idempotent and safe to
// run from several processes at once: each move is a create-if-absent
// followed by a delete at the read revision.
func (u *Users) Canonicalize(ctx context.Context) ([]Rename, error) {
	lister, err := u.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("auth: list users: %w", err)
	}
	var legacy []string
	for k := range lister.Keys() {
		if c, err := CanonicalUsername(k); err != nil || c != k {
			legacy = append(legacy, k)
		}
	}
	slices.Sort(legacy)
	var out []Rename
	for _, key := range legacy {
		usr, rev, err := u.get(ctx, key)
		if errors.Is(err, ErrUserNotFound) {
			continue // moved by another process meanwhile
		}
		if err != nil {
			return out, err
		}
		base, err := CanonicalUsername(key)
		if err != nil {
			continue // no canonical form: never reachable through the API
		}
		if usr.ID == "" {
			// Agree on the ID first, through the old key, so that two
			// processes moving the same account move one account.
			usr.ID = NewID()
			b, err := json.Marshal(usr)
			if err != nil {
				return out, fmt.Errorf("auth: encode user: %w", err)
			}
			if rev, err = u.kv.Update(ctx, key, b, rev); err != nil {
				if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
					continue // someone else is moving it
				}
				return out, fmt.Errorf("auth: give %s an id: %w", key, err)
			}
		}
		usr.Username = base
		r, err := u.move(ctx, key, rev, usr)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// move stores usr under a free name derived from usr.Username and deletes
// the old key.
func (u *Users) move(ctx context.Context, key string, rev uint64, usr streams.User) (Rename, error) {
	base := usr.Username
	usr.V = streams.SchemaVersion
	stored := false
	for n := 1; n < 100 && !stored; n++ {
		name := base
		if n > 1 {
			name = fmt.Sprintf("%s-%d", base[:min(len(base), 28)], n)
		}
		usr.Username = name
		b, err := json.Marshal(usr)
		if err != nil {
			return Rename{}, fmt.Errorf("auth: encode user: %w", err)
		}
		_, err = u.kv.Create(ctx, streams.UserKey(name), b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Another process may have moved this very account already.
			other, _, gerr := u.get(ctx, name)
			stored = gerr == nil && other.ID == usr.ID
			continue
		}
		if err != nil {
			return Rename{}, fmt.Errorf("auth: move user %s to %s: %w", key, name, err)
		}
		stored = true
	}
	if !stored {
		return Rename{}, fmt.Errorf("auth: move user %s: no free name from %s", key, base)
	}
	if err := u.kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return Rename{}, fmt.Errorf("auth: remove moved user %s: %w", key, err)
	}
	return Rename{From: key, To: usr.Username, Collided: usr.Username != base}, nil
}
