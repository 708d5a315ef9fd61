package auth

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter rate-limits by key (an address, a username) with one token bucket
// per key. Idle buckets are swept so that a flood of distinct keys cannot grow
// memory without bound.
type Limiter struct {
	every rate.Limit
	burst int
	max   int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
	// held counts tokens set aside for attempts in flight (Guard).
	held int
}

// NewLimiter allows burst events at once per key and one more every per.
// max bounds the number of keys tracked. now may be nil for time.Now.
func NewLimiter(per time.Duration, burst, max int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{every: rate.Every(per), burst: burst, max: max, now: now, buckets: map[string]*bucket{}}
}

// Allow spends one token of key's bucket and reports whether there was one,
// and if not, how long until there is.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.bucketFor(key, now).lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops buckets that have refilled (idle for the whole burst); if all
// are busy it drops the least recently seen half, preferring to forget an
// attacker's old keys over growing without bound.
func (l *Limiter) sweep(now time.Time) {
	full := time.Duration(float64(l.burst) / float64(l.every) * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.seen) > full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < l.max {
		return
	}
	var oldest time.Time
	for _, b := range l.buckets {
		if oldest.IsZero() || b.seen.Before(oldest) {
			oldest = b.seen
		}
	}
	mid := oldest.Add(now.Sub(oldest) / 2)
	for k, b := range l.buckets {
		if !b.seen.After(mid) {
			delete(l.buckets, k)
		}
	}
}

// bucketFor returns key's bucket, creating it (and sweeping when at the
// bound). The caller holds l.mu.
func (l *Limiter) bucketFor(key string, now time.Time) *bucket {
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.sweep(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.every, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	return b
}

// hold sets one token of key's bucket aside for an attempt in flight if
// there is one, and reports whether the bucket was full before, that is
// whether key has no recent failure; when there is none it reports the
// wait. Held tokens are not spent: charge spends one, release gives it
// back. (rate.Reservation's cancel cannot give back exactly one token once
// a later reservation was made, so the holding is counted here.)
func (l *Limiter) hold(key string, now time.Time) (ok, wasFull bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketFor(key, now)
	tokens := b.lim.TokensAt(now)
	wasFull = tokens >= float64(l.burst)
	if free := tokens - float64(b.held); free < 1 {
		return false, wasFull, time.Duration((1 - free) / float64(l.every) * float64(time.Second))
	}
	b.held++
	return true, wasFull, 0
}

// charge spends the token held for key.
func (l *Limiter) charge(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketFor(key, now)
	b.held = max(b.held-1, 0)
	b.lim.AllowN(now, 1)
}

// release gives back the token held for key.
func (l *Limiter) release(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketFor(key, now)
	b.held = max(b.held-1, 0)
}

// forget drops key's bucket, so it starts full again.
func (l *Limiter) forget(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.buckets, key)
}

// GuardConfig sizes a Guard. Each pair is a burst of failures and the
// period after which one more is allowed.
type GuardConfig struct {
	// Per client address, whatever the username: bounds what one address
	// can guess, and the bcrypt work it can make the server do.
	AddrBurst int
	AddrEvery time.Duration
	// Per (username, address): one address guessing one account.
	PairBurst int
	PairEvery time.Duration
	// Per username, from every address: the brake on a guessing campaign
	// spread over many addresses. Once it is spent, only addresses with no
	// recent failure of their own may try that username; it never stops
	// a clean address, so it cannot be turned into a lockout.
	UserBurst int
	UserEvery time.Duration
	// MaxKeys bounds the keys each limiter tracks.
	MaxKeys int
}

// Guard rate-limits password checks (login, and a password change's check
// of the current one). Only failures are charged: a correct password costs
// nothing and clears its (username, address) record, so a user who gets in
// is never held back by their own earlier typos, and another address's
// failures never hold back an address that is not failing.
type Guard struct {
	addr, pair, user *Limiter
	now              func() time.Time
}

// NewGuard returns a Guard; now may be nil for time.Now.
func NewGuard(c GuardConfig, now func() time.Time) *Guard {
	if now == nil {
		now = time.Now
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = 100_000
	}
	return &Guard{
		addr: NewLimiter(c.AddrEvery, c.AddrBurst, c.MaxKeys, now),
		pair: NewLimiter(c.PairEvery, c.PairBurst, c.MaxKeys, now),
		user: NewLimiter(c.UserEvery, c.UserBurst, c.MaxKeys, now),
		now:  now,
	}
}

// Attempt is one password check let through by a Guard. Exactly one of
// Failed, Succeeded or Release ends it.
type Attempt struct {
	g          *Guard
	user, addr string
	held       []heldToken
}

type heldToken struct {
	l   *Limiter
	key string
}

func pairKey(user, addr string) string { return user + "\x00" + addr }

// Begin asks to check a password of user (canonical) from addr. It holds a
// failure's worth of each budget for the attempt, so that concurrent
// attempts cannot all slip past before the first one fails; when refused it
// returns how long until a retry can succeed.
func (g *Guard) Begin(user, addr string) (*Attempt, time.Duration, bool) {
	now := g.now()
	a := &Attempt{g: g, user: user, addr: addr}
	ok, addrClean, wait := g.addr.hold(addr, now)
	if !ok {
		return nil, wait, false
	}
	a.held = append(a.held, heldToken{g.addr, addr})
	ok, pairClean, wait := g.pair.hold(pairKey(user, addr), now)
	if !ok {
		a.Release()
		return nil, wait, false
	}
	a.held = append(a.held, heldToken{g.pair, pairKey(user, addr)})
	ok, _, wait = g.user.hold(user, now)
	switch {
	case ok:
		a.held = append(a.held, heldToken{g.user, user})
	case addrClean && pairClean:
		// The brake is on, but this address has no failure of its own:
		// it gets its try, and does not charge the spent username budget.
	default:
		a.Release()
		return nil, wait, false
	}
	return a, 0, true
}

// Failed charges the attempt to every budget it was counted against.
func (a *Attempt) Failed() {
	now := a.g.now()
	for _, h := range a.held {
		h.l.charge(h.key, now)
	}
	a.held = nil
}

// Succeeded gives the held budget back and clears the (username, address)
// record.
func (a *Attempt) Succeeded() {
	a.Release()
	a.g.pair.forget(pairKey(a.user, a.addr))
}

// Release gives the held budget back: the attempt did not count (the
// backend failed before the password was checked).
func (a *Attempt) Release() {
	now := a.g.now()
	for _, h := range a.held {
		h.l.release(h.key, now)
	}
	a.held = nil
}
