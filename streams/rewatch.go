package streams

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// The waits of Rewatch between two follows: the first retry comes after
// RewatchMin, each quick failure after that doubles the wait up to
// RewatchMax, and a follow that lasted RewatchMax starts over from
// RewatchMin (it was a watch that worked, and ended).
const (
	RewatchMin = time.Second
	RewatchMax = 30 * time.Second
)

// Rewatch keeps a watch of a bucket or a stream going until ctx ends:
// follow makes the watcher (a KV watch, an ordered consumer) and reads it
// until it ends or fails, and Rewatch calls it again after a wait. Every
// process that mirrors shared state (the gateway's users, assets and alert
// index, the latest view) needs this loop; they had one copy each, with a
// fixed second between attempts, so a bus that stayed down took one
// failed watch a second from each of them for as long as it lasted.
//
// ended, if not nil, hears every return of follow with its error, the last
// one (ctx ended) included: what the watch kept up to date is stale from
// then on (a mirror is no longer synced). While ctx lives each return is
// logged at Warn as msg with args, the error and the wait. A follow that
// returns once ctx ends is a clean stop: Rewatch then returns.
func Rewatch(ctx context.Context, log *slog.Logger, msg string, args []any, follow func(context.Context) error, ended func(error)) {
	wait := RewatchMin
	for {
		began := time.Now()
		err := follow(ctx)
		if ended != nil {
			ended(err)
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) >= RewatchMax {
			wait = RewatchMin
		}
		// Up to half off, so that the replicas that lost the same server
		// do not all come back in the same instant.
		d := wait - rand.N(wait/2+1)
		log.Warn(msg, append(args[:len(args):len(args)], "err", err, "retry_in", d)...)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, RewatchMax)
	}
}
