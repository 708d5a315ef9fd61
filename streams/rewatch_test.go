package streams

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// lockedLog is a log that a test reads while Rewatch writes.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A watch that fails at once is retried after a wait that doubles up to
// RewatchMax; one that ran RewatchMax before it ended is retried after
// RewatchMin again.
func TestRewatchBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var logs lockedLog
		log := slog.New(slog.NewTextHandler(&logs, nil))
		var starts []time.Time
		var endedErrs []error
		broken := errors.New("watch: no responders")
		follow := func(ctx context.Context) error {
			starts = append(starts, time.Now())
			if len(starts) == 9 {
				// A watch that works, then ends.
				select {
				case <-time.After(time.Minute):
				case <-ctx.Done():
				}
			}
			if len(starts) == 11 {
				cancel()
				<-ctx.Done()
				return ctx.Err()
			}
			return broken
		}
		Rewatch(ctx, log, "users watch ended", []any{"bucket", "users"}, follow, func(err error) { endedErrs = append(endedErrs, err) })

		if len(starts) != 11 || len(endedErrs) != 11 {
			t.Fatalf("%d follows, %d ends heard, want 11 of each", len(starts), len(endedErrs))
		}
		if !errors.Is(endedErrs[0], broken) || !errors.Is(endedErrs[10], context.Canceled) {
			t.Fatalf("ended heard %v first and %v last", endedErrs[0], endedErrs[10])
		}
		// The wait before follow i+1 is in (ceil/2, ceil].
		ceil := RewatchMin
		for i := 1; i < len(starts); i++ {
			gap := starts[i].Sub(starts[i-1])
			if i == 9 {
				// After the watch that lasted a minute: a minute plus
				// RewatchMin at most.
				gap -= time.Minute
				ceil = RewatchMin
			}
			if gap < ceil/2 || gap > ceil {
				t.Errorf("wait before follow %d: %s, want in [%s, %s]", i+1, gap, ceil/2, ceil)
			}
			ceil = min(2*ceil, RewatchMax)
		}
		out := logs.String()
		if n := strings.Count(out, `msg="users watch ended"`); n != 10 {
			t.Errorf("%d warnings, want one for each of the 10 ends while ctx lived:\n%s", n, out)
		}
		if !strings.Contains(out, "bucket=users") || !strings.Contains(out, `err="watch: no responders"`) || !strings.Contains(out, "retry_in=") {
			t.Errorf("the warning lacks its args, the error or the wait:\n%s", out)
		}
	})
}

// A stop during the wait returns at once, with nothing more logged.
func TestRewatchStopsInItsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var logs lockedLog
		follows := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			Rewatch(ctx, slog.New(slog.NewTextHandler(&logs, nil)), "alerts index lost", nil, func(context.Context) error {
				follows++
				return errors.New("stream not found")
			}, nil)
		}()
		synctest.Wait() // in the wait after the first follow
		cancel()
		<-done
		if follows != 1 || strings.Count(logs.String(), "alerts index lost") != 1 {
			t.Fatalf("%d follows, log:\n%s", follows, logs.String())
		}
	})
}
