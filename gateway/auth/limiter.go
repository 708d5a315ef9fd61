package auth

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter rate-limits by key (an IP, a username) with one token bucket per
// key. Idle buckets are swept so that a flood of distinct keys cannot grow
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
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.sweep(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.every, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
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
