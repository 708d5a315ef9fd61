// Package lease owns the active/standby election of a role that must have
// one active instance at a time (the ingester): a key in the leases bucket
// that the active instance renews with a compare-and-swap on its revision,
// and that a standby takes over, with a compare-and-swap on the revision it
// last saw, once nobody renewed it for a TTL. The work runs only while the
// lease is held, and is stopped as soon as it is lost, or at a local
// deadline a margin before anyone could take it over (see Margin) when no
// renewal came back in time, however long the bucket takes to answer; so
// two instances never both work. What they produce still carries
// deterministic message ids, the last guard, not the plan.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Store is what an election needs from the leases bucket.
type Store interface {
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// DefaultTTL is how long a lease outlives its holder's last renewal: the
// longest a standby waits after the active instance died.
const DefaultTTL = 5 * time.Second

// Config is one election.
type Config struct {
	// Key in the bucket ("ingest.active").
	Key string
	// ID names this instance; random when empty.
	ID  string
	TTL time.Duration
	Log *slog.Logger
	// OnActive, when set, is told when this instance becomes active
	// (true) and when its work has stopped after it was (false).
	OnActive func(active bool)
	// Now is the clock of the lease's deadline; time.Now when nil.
	Now func() time.Time
}

// Margin is how long before a lease can first be taken over that its
// holder stops its work: the holder counts the lease from the moment it
// sent the last renewal that came back, since nobody can have seen that
// renewal earlier, and stops TTL less a margin later unless another
// renewal came back meanwhile, however long a stalled call takes.
func Margin(ttl time.Duration) time.Duration { return ttl / 5 }

// NewID is a random instance id.
func NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// seen is the last revision of the key, and when it came.
type seen struct {
	holder string
	rev    uint64
	at     time.Time
	ok     bool
}

// Run takes part in the election until ctx ends, running work while this
// instance holds the lease: work's context ends when the lease is lost. A
// clean stop hands the lease over at once. An error of work ends Run with
// that error, after the lease is handed over.
func Run(ctx context.Context, st Store, cfg Config, work func(context.Context) error) error {
	if cfg.Key == "" || st == nil {
		return errors.New("lease: a store and a key are required")
	}
	if cfg.ID == "" {
		cfg.ID = NewID()
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.OnActive == nil {
		cfg.OnActive = func(bool) {}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	deadline := func(sent time.Time) time.Time { return sent.Add(cfg.TTL - Margin(cfg.TTL)) }
	log := cfg.Log.With("lease", cfg.Key, "instance", cfg.ID)
	w, err := st.Watch(ctx, cfg.Key)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("lease: watch %s: %w", cfg.Key, err)
	}
	defer func() { _ = w.Stop() }()
	var mu sync.Mutex
	var last seen
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			mu.Lock()
			if e.Operation() == jetstream.KeyValuePut {
				last = seen{holder: string(e.Value()), rev: e.Revision(), at: cfg.Now(), ok: true}
			} else {
				last = seen{}
			}
			mu.Unlock()
		}
	}()

	var (
		rev uint64
		// until is when the work must have stopped, unless a renewal
		// comes back; expire fires then.
		until  time.Time
		expire = time.NewTimer(time.Hour)
		cancel context.CancelFunc
		done   chan error
	)
	expire.Stop()
	defer expire.Stop()
	setUntil := func(t time.Time) {
		until = t
		expire.Reset(until.Sub(cfg.Now()))
	}
	active := func() bool { return cancel != nil }
	stop := func() error {
		expire.Stop()
		cancel()
		err := <-done
		cancel, done = nil, nil
		cfg.OnActive(false)
		return err
	}
	release := func() {
		dctx, c := context.WithTimeout(context.WithoutCancel(ctx), cfg.TTL)
		defer c()
		if err := st.Delete(dctx, cfg.Key, jetstream.LastRevision(rev)); err != nil {
			log.Debug("release", "err", err)
		}
	}
	tick := time.NewTicker(cfg.TTL / 5)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if active() {
				err := stop()
				release()
				return err
			}
			return nil
		case err := <-done:
			// The work ended on its own while active.
			done <- err
			err = stop()
			release()
			if err == nil {
				err = errors.New("lease: work returned while active")
			}
			return err
		case <-expire.C:
			if active() && !cfg.Now().Before(until) {
				// The bucket did not answer in time: whoever takes
				// over may soon be working.
				log.Warn("lease not renewed in time, standing by")
				if err := stop(); err != nil {
					log.Warn("work stopped with an error", "err", err)
				}
			} else if active() {
				setUntil(until) // an injected clock behind the timer
			}
			continue
		case <-tick.C:
		}
		if active() {
			ictx, c := context.WithTimeout(ctx, until.Sub(cfg.Now()))
			sent := cfg.Now()
			r, err := st.Update(ictx, cfg.Key, []byte(cfg.ID), rev)
			switch {
			case err == nil:
				rev = r
				setUntil(deadline(sent))
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) || !cfg.Now().Before(until):
				// Whoever takes over may already be working: stop at once.
				log.Warn("lease lost, standing by", "err", err)
				if err := stop(); err != nil {
					log.Warn("work stopped with an error", "err", err)
				}
			default:
				log.Debug("renew", "err", err)
			}
			c()
			continue
		}
		ictx, c := context.WithTimeout(ctx, cfg.TTL)
		mu.Lock()
		cur := last
		mu.Unlock()
		var r uint64
		sent := cfg.Now()
		switch {
		case !cur.ok:
			r, err = st.Create(ictx, cfg.Key, []byte(cfg.ID))
		case cur.holder == cfg.ID || cfg.Now().Sub(cur.at) > cfg.TTL:
			// Our own lease from before a failed renewal, or one whose
			// holder stopped renewing.
			log.Info("taking over the lease", "from", cur.holder)
			r, err = st.Update(ictx, cfg.Key, []byte(cfg.ID), cur.rev)
		default:
			c()
			continue // someone is active
		}
		c()
		if err != nil {
			log.Debug("acquire", "err", err)
			continue
		}
		rev = r
		setUntil(deadline(sent))
		log.Info("active")
		cfg.OnActive(true)
		wctx, wc := context.WithCancel(ctx)
		cancel, done = wc, make(chan error, 1)
		go func(d chan error) { d <- work(wctx) }(done)
	}
}
