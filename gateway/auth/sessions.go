package auth

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// Reasons Sessions.Check refuses a well-signed token.
var (
	ErrRevoked  = errors.New("auth: token revoked")
	ErrDisabled = errors.New("auth: account disabled")
)

// Watcher is the part of a KV bucket Sessions watches.
type Watcher interface {
	WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// Sessions decides, on every request, whether a token still stands for its
// account: same account ID (not deleted, not re-created under the name),
// same token generation (no password, role or disabled change since), not
// disabled.
//
// The check is a map lookup. The map mirrors the users bucket through a KV
// watch, so a change made by another gateway replica or by `cryptostream
// user` takes effect here as soon as the watch delivers it (milliseconds on
// a healthy bus; for as long as an outage lasts otherwise, during which no
// change can be made either). Changes this process makes are applied at
// once. Until the watch has delivered the whole bucket, and whenever the map
// cannot answer for sure, Check reads the user from the bucket instead.
type Sessions struct {
	users *Users
	watch Watcher
	log   *slog.Logger

	mu     sync.RWMutex
	byName map[string]session
	synced bool

	// changed hears of every name whose account changed in a way that may
	// revoke tokens, so that long-lived sessions (websockets) are cut at
	// once instead of living on until they next present the token.
	changed func(name string)
	// gone hears of every account that ceased to exist (deleted, or its
	// name taken by a new account), by name and the ID it had.
	gone func(name, id string)
}

type session struct {
	id       string
	gen      uint64
	disabled bool
	deleted  bool
	rev      uint64
}

// NewSessions mirrors users; watch may be nil, and then every Check reads
// the bucket. It registers itself to hear of every write made through
// users.
func NewSessions(users *Users, watch Watcher, log *slog.Logger) *Sessions {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sessions{users: users, watch: watch, log: log, byName: map[string]session{}}
	users.onWrite = s.apply
	return s
}

// Check reports nil when c still stands for its account, ErrRevoked or
// ErrDisabled when it does not, and any other error when the bucket could
// not be read.
func (s *Sessions) Check(ctx context.Context, c Claims) error {
	if sure, err := s.Known(c); sure {
		return err
	}
	// Unsure (not synced yet, a name this replica has not seen, another
	// account ID, a generation ahead of ours): ask the bucket.
	u, rev, err := s.users.Get(ctx, c.Subject)
	if errors.Is(err, ErrUserNotFound) {
		s.apply(c.Subject, nil, 0)
		return ErrRevoked
	}
	if err != nil {
		return err
	}
	s.apply(u.Username, &u, rev)
	switch {
	case u.ID != c.UID || u.TokenGen != c.Gen:
		return ErrRevoked
	case u.Disabled:
		return ErrDisabled
	}
	return nil
}

// Known is Check from the mirror alone: sure is false when Check would
// have to read the bucket (not synced yet, a name this replica has not
// seen, another account ID, a generation ahead of ours). A caller on a hot
// path asks it first and sets up Check's I/O only when it is unsure.
func (s *Sessions) Known(c Claims) (sure bool, err error) {
	s.mu.RLock()
	e, ok := s.byName[c.Subject]
	synced := s.synced
	s.mu.RUnlock()
	if synced && ok && !e.deleted && e.id == c.UID {
		switch {
		case e.gen == c.Gen && e.disabled:
			return true, ErrDisabled
		case e.gen == c.Gen:
			return true, nil
		case e.gen > c.Gen:
			// Generations only grow: the token is behind for sure.
			return true, ErrRevoked
		}
	}
	return false, nil
}

// apply records a user as of revision rev, or its deletion when u is nil.
// An older revision than the one held is ignored, so the watch and this
// process's own writes may arrive in any order. A deletion seen by a read
// (rev 0) keeps the revision held: anything written later has a higher one.
func (s *Sessions) apply(name string, u *streams.User, rev uint64) {
	s.mu.Lock()
	cur, ok := s.byName[name]
	if ok && rev != 0 && rev <= cur.rev {
		s.mu.Unlock()
		return
	}
	var next session
	switch {
	case u != nil:
		next = session{id: u.ID, gen: u.TokenGen, disabled: u.Disabled, rev: rev}
	case ok:
		next = session{deleted: true, rev: max(rev, cur.rev)}
	default:
		// Nothing to forget; a tombstone for every name ever asked about
		// would let anyone grow the map.
		s.mu.Unlock()
		return
	}
	s.byName[name] = next
	revoking := ok && (next.deleted != cur.deleted || next.id != cur.id || next.gen != cur.gen || next.disabled != cur.disabled)
	ended := ok && !cur.deleted && cur.id != "" && (next.deleted || next.id != cur.id)
	changed, gone := s.changed, s.gone
	s.mu.Unlock()
	if gone != nil && ended {
		gone(name, cur.id)
	}
	// A name first seen has no live session here: every token accepted
	// was checked through this map, which then holds its name.
	if changed != nil && revoking {
		changed(name)
	}
}

// OnChange registers f to be called, outside any lock, with the name of an
// account that was deleted, re-created, disabled or moved to a new token
// generation. f must not block.
func (s *Sessions) OnChange(f func(name string)) {
	s.mu.Lock()
	s.changed = f
	s.mu.Unlock()
}

// OnGone registers f to be called, outside any lock, with the name and the
// ID of an account that no longer exists, whoever deleted it: this
// process, another gateway replica or `cryptostream user`. An account
// deleted while no watch ran is not heard of. f must not block.
func (s *Sessions) OnGone(f func(name, id string)) {
	s.mu.Lock()
	s.gone = f
	s.mu.Unlock()
}

// Run mirrors the bucket until ctx ends, re-watching after an error.
func (s *Sessions) Run(ctx context.Context) error {
	if s.watch == nil {
		<-ctx.Done()
		return nil
	}
	streams.Rewatch(ctx, s.log, "users watch ended; tokens are checked against the bucket until it resumes", nil, s.follow, func(error) {
		s.mu.Lock()
		s.synced = false
		s.mu.Unlock()
	})
	return nil
}

func (s *Sessions) follow(ctx context.Context) error {
	w, err := s.watch.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for e := range w.Updates() {
		if e == nil {
			// The initial values are all in.
			s.mu.Lock()
			s.synced = true
			s.mu.Unlock()
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			s.apply(e.Key(), nil, e.Revision())
			continue
		}
		var u streams.User
		if err := json.Unmarshal(e.Value(), &u); err != nil {
			// Not a user this code can read: treat the name as gone
			// rather than trust a stale entry.
			s.log.Error("users watch: undecodable user", "key", e.Key(), "err", err)
			s.apply(e.Key(), nil, e.Revision())
			continue
		}
		s.apply(e.Key(), &u, e.Revision())
	}
	return errors.New("auth: users watch closed")
}

// Synced reports whether the mirror holds the whole bucket.
func (s *Sessions) Synced() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.synced
}
