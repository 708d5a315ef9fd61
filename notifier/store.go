package notifier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// KV is the part of the alert-rules bucket the store uses.
type KV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error)
}

// Store errors.
var (
	ErrRuleNotFound = errors.New("notifier: rule not found")
	ErrConflict     = errors.New("notifier: rule changed concurrently")
	ErrTooManyRules = errors.New("notifier: too many rules")
	// ErrUnreadableRule is a stored rule that does not decode (or of
	// another schema version).
	ErrUnreadableRule = errors.New("notifier: unreadable stored rule")
)

// Store keeps rules in the alert-rules bucket, one key per rule id, every
// change a compare-and-swap on the entry's revision.
type Store struct {
	kv  KV
	now func() time.Time
	// MaxPerUser caps the rules one owner may hold (0: no cap).
	MaxPerUser int
	// OnUnreadable, when set, hears of every stored rule a listing skips
	// because it does not decode: one bad entry must not stop every
	// listing (nor the sweeps built on them).
	OnUnreadable func(id string, err error)
}

// NewStore returns a store over kv.
func NewStore(kv KV, maxPerUser int, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{kv: kv, now: now, MaxPerUser: maxPerUser}
}

// NewRuleID returns a random rule id, safe as a KV key and a subject-free
// message id part.
func NewRuleID() string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "r" + hex.EncodeToString(b[:])
}

// ValidID reports whether id can be a rule id (and so a bucket key).
func ValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	return !strings.ContainsFunc(id, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_')
	})
}

// DecodeRule parses a stored rule.
func DecodeRule(b []byte) (Rule, error) {
	var r Rule
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrUnreadableRule, err)
	}
	if r.V != streams.SchemaVersion {
		return r, fmt.Errorf("%w: rule %s has schema version %d", ErrUnreadableRule, r.ID, r.V)
	}
	return r, nil
}

func encodeRule(r Rule) ([]byte, error) {
	r.V = streams.SchemaVersion
	return json.Marshal(r)
}

// Get reads one rule and its revision.
func (s *Store) Get(ctx context.Context, id string) (Rule, uint64, error) {
	if !ValidID(id) {
		return Rule{}, 0, ErrRuleNotFound
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Rule{}, 0, ErrRuleNotFound
	}
	if err != nil {
		return Rule{}, 0, fmt.Errorf("notifier: get rule %s: %w", id, err)
	}
	r, err := DecodeRule(e.Value())
	return r, e.Revision(), err
}

// List returns every rule, ordered by id.
func (s *Store) List(ctx context.Context) ([]Rule, error) {
	return s.list(ctx, func(Rule) bool { return true })
}

// ListOwned returns the rules of one account (by its ID; SystemOwner: the
// system rules), ordered by id.
func (s *Store) ListOwned(ctx context.Context, ownerID string) ([]Rule, error) {
	return s.list(ctx, func(r Rule) bool { return r.OwnerID == ownerID && (ownerID != SystemOwner || r.System()) })
}

func (s *Store) list(ctx context.Context, keep func(Rule) bool) ([]Rule, error) {
	kl, err := s.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("notifier: list rules: %w", err)
	}
	var keys []string
	for k := range kl.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := []Rule{}
	for _, k := range keys {
		r, _, err := s.Get(ctx, k)
		if errors.Is(err, ErrRuleNotFound) {
			continue // deleted since the listing
		}
		if errors.Is(err, ErrUnreadableRule) {
			if s.OnUnreadable != nil {
				s.OnUnreadable(k, err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if keep(r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Create stores a new, validated rule, giving it an id and times. The
// per-owner cap is checked against a listing, so two creations racing at
// the cap may both pass: the cap bounds abuse, not an exact count. System
// rules are an admin's and not capped.
func (s *Store) Create(ctx context.Context, r Rule) (Rule, error) {
	if s.MaxPerUser > 0 && !r.System() {
		mine, err := s.ListOwned(ctx, r.OwnerID)
		if err != nil {
			return Rule{}, err
		}
		if len(mine) >= s.MaxPerUser {
			return Rule{}, fmt.Errorf("%w: %s holds %d (the cap)", ErrTooManyRules, r.Owner, len(mine))
		}
	}
	r.ID = NewRuleID()
	r.CreatedAt = s.now().UTC()
	r.UpdatedAt = r.CreatedAt
	b, err := encodeRule(r)
	if err != nil {
		return Rule{}, fmt.Errorf("notifier: encode rule: %w", err)
	}
	if _, err := s.kv.Create(ctx, r.ID, b); err != nil {
		return Rule{}, fmt.Errorf("notifier: create rule: %w", err)
	}
	r.V = streams.SchemaVersion
	return r, nil
}

// Update applies fn to the stored rule and writes it back with the read
// revision, retrying a few times when someone else wrote in between. fn
// may return an error to abandon the change.
func (s *Store) Update(ctx context.Context, id string, fn func(*Rule) error) (Rule, error) {
	for range 5 {
		r, rev, err := s.Get(ctx, id)
		if err != nil {
			return Rule{}, err
		}
		created := r.CreatedAt
		if err := fn(&r); err != nil {
			return Rule{}, err
		}
		r.ID, r.CreatedAt, r.UpdatedAt = id, created, s.now().UTC()
		b, err := encodeRule(r)
		if err != nil {
			return Rule{}, fmt.Errorf("notifier: encode rule: %w", err)
		}
		_, err = s.kv.Update(ctx, id, b, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return Rule{}, fmt.Errorf("notifier: update rule %s: %w", id, err)
		}
		r.V = streams.SchemaVersion
		return r, nil
	}
	return Rule{}, ErrConflict
}

// Delete removes a rule if it is still at revision rev.
func (s *Store) Delete(ctx context.Context, id string, rev uint64) error {
	err := s.kv.Delete(ctx, id, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("notifier: delete rule %s: %w", id, err)
	}
	return nil
}

// Account is what AdoptOwners needs to know of a user account.
type Account struct {
	ID        string
	CreatedAt time.Time
}

// AdoptOwners gives every rule stored before rules named their owner's
// account (Owner set, OwnerID empty) the ID of the account it belongs to,
// and deletes those whose account is gone: no account under the name, or
// one created after the rule, which can only be a newcomer who took a
// deleted user's name. lookup answers the account now under a name (ok
// false: none). Safe to run from several processes at once: every change
// is a compare-and-swap.
func (s *Store) AdoptOwners(ctx context.Context, lookup func(ctx context.Context, name string) (Account, bool, error)) (adopted, removed []Rule, err error) {
	all, err := s.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range all {
		if r.System() || r.OwnerID != "" {
			continue
		}
		acc, ok, err := lookup(ctx, r.Owner)
		if err != nil {
			return adopted, removed, fmt.Errorf("notifier: adopt rule %s: %w", r.ID, err)
		}
		if ok && acc.ID != "" && !acc.CreatedAt.After(r.CreatedAt) {
			got, err := s.Update(ctx, r.ID, func(cur *Rule) error {
				if cur.OwnerID == "" && cur.Owner == r.Owner {
					cur.OwnerID = acc.ID
				}
				return nil
			})
			switch {
			case errors.Is(err, ErrRuleNotFound):
			case err != nil:
				return adopted, removed, err
			default:
				adopted = append(adopted, got)
			}
			continue
		}
		// Unless deleted or adopted by another process meanwhile.
		ok, err = s.deleteIf(ctx, r.ID, func(cur Rule) bool { return cur.OwnerID == "" })
		if err != nil {
			return adopted, removed, err
		}
		if ok {
			removed = append(removed, r)
		}
	}
	return adopted, removed, nil
}

// DeleteOwned deletes every rule of one account (by its ID), for an
// account that is gone: its rules would reach nobody. A rule changed
// meanwhile (a once rule marked fired) is read again and still deleted;
// one deleted by another process meanwhile is not reported. Safe to run
// from several processes at once.
func (s *Store) DeleteOwned(ctx context.Context, ownerID string) ([]Rule, error) {
	if ownerID == SystemOwner {
		return nil, errors.New("notifier: the system rules belong to no account")
	}
	rules, err := s.ListOwned(ctx, ownerID)
	if err != nil {
		return nil, err
	}
	var gone []Rule
	for _, r := range rules {
		ok, err := s.deleteIf(ctx, r.ID, func(cur Rule) bool { return cur.OwnerID == ownerID })
		if err != nil {
			return gone, err
		}
		if ok {
			gone = append(gone, r)
		}
	}
	return gone, nil
}

// DropOrphans deletes the rules whose account no longer exists, for what
// a deletion left behind when its process stopped midway. accounts answers
// the IDs of every account; it is asked after the rules are listed, so
// that an account missing from its answer was deleted, not created since.
func (s *Store) DropOrphans(ctx context.Context, accounts func(ctx context.Context) (map[string]bool, error)) ([]Rule, error) {
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(all, func(r Rule) bool { return !r.System() && r.OwnerID != "" }) {
		return nil, nil // no account to ask about (a first start has none yet)
	}
	live, err := accounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("notifier: list accounts: %w", err)
	}
	var gone []Rule
	for _, r := range all {
		if r.System() || r.OwnerID == "" || live[r.OwnerID] {
			continue // a rule from before IDs is AdoptOwners'
		}
		ok, err := s.deleteIf(ctx, r.ID, func(cur Rule) bool { return cur.OwnerID == r.OwnerID })
		if err != nil {
			return gone, err
		}
		if ok {
			gone = append(gone, r)
		}
	}
	return gone, nil
}

// deleteIf deletes a rule while it matches, reading it again when it
// changed between the read and the delete.
func (s *Store) deleteIf(ctx context.Context, id string, match func(Rule) bool) (bool, error) {
	for range 5 {
		cur, rev, err := s.Get(ctx, id)
		if errors.Is(err, ErrRuleNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if !match(cur) {
			return false, nil
		}
		err = s.Delete(ctx, id, rev)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return err == nil, err
	}
	return false, ErrConflict
}
