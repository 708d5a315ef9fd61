package natstest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// deadlineT is a test whose deadline is near and whose Fatalf ends the wait.
type deadlineT struct {
	testing.TB
	deadline time.Time
	failure  string
}

type fatal struct{}

func (d *deadlineT) Helper()                     {}
func (d *deadlineT) Deadline() (time.Time, bool) { return d.deadline, true }
func (d *deadlineT) Fatalf(format string, args ...any) {
	d.failure = fmt.Sprintf(format, args...)
	panic(fatal{})
}

// waitFailure is what WaitProgress failed with on d, empty if it returned.
func waitFailure(d *deadlineT, cond func() (bool, string)) string {
	func() {
		defer func() {
			if r := recover(); r != nil && r != (fatal{}) {
				panic(r)
			}
		}()
		WaitProgress(d, time.Hour, "the goal", cond)
	}()
	return d.failure
}

// A progress that keeps changing without ever reaching the goal used to
// wait past go test's -timeout; it fails before the test's deadline and
// says where it got to.
func TestWaitProgressGivesUpBeforeTheDeadline(t *testing.T) {
	d := &deadlineT{TB: t, deadline: time.Now().Add(deadlineMargin + 50*time.Millisecond)}
	n := 0
	got := waitFailure(d, func() (bool, string) { n++; return false, fmt.Sprint(n) })
	if !strings.Contains(got, "the goal not reached before the test's deadline") || !strings.Contains(got, "last \"") {
		t.Fatalf("wait ended with %q", got)
	}
	// Done before the deadline is no failure.
	d = &deadlineT{TB: t, deadline: time.Now().Add(deadlineMargin + time.Hour)}
	n = 0
	if got := waitFailure(d, func() (bool, string) { n++; return n > 3, fmt.Sprint(n) }); got != "" {
		t.Fatalf("a wait that got there failed: %q", got)
	}
}
