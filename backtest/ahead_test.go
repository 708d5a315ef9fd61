package backtest

import (
	"errors"
	"strings"
	"testing"
)

// counting yields 0, 1, 2, ... up to n (or forever when n < 0) and records
// how far it got and whether it was stopped.
type counting struct {
	n       int
	made    int
	stopped bool
	panicAt int // -1: never
}

func (c *counting) seq(yield func(int, error) bool) {
	for i := 0; c.n < 0 || i < c.n; i++ {
		if i == c.panicAt {
			panic("features stage failed")
		}
		c.made++
		if !yield(i, nil) {
			c.stopped = true
			return
		}
	}
}

// TestAheadKeepsOrder: every value, in order, through many batches and a
// partial last one; an error ends the sequence where it came.
func TestAheadKeepsOrder(t *testing.T) {
	c := &counting{n: 10*aheadBatch + 7, panicAt: -1}
	want := 0
	for v, err := range ahead(c.seq) {
		if err != nil || v != want {
			t.Fatalf("value %d (err %v), want %d", v, err, want)
		}
		want++
	}
	if want != c.n {
		t.Fatalf("%d values, want %d", want, c.n)
	}
	boom := errors.New("read failed")
	failing := func(yield func(int, error) bool) {
		for i := range 300 {
			if !yield(i, nil) {
				return
			}
		}
		yield(0, boom)
	}
	n := 0
	for v, err := range ahead(failing) {
		if err != nil {
			if !errors.Is(err, boom) || n != 300 {
				t.Fatalf("after %d values: %v", n, err)
			}
			break
		}
		if v != n {
			t.Fatalf("value %d, want %d", v, n)
		}
		n++
	}
}

// TestAheadStopsWithTheLoop: breaking out of the loop stops the producer,
// which has returned, no further than its batches ahead, when the loop
// has ended.
func TestAheadStopsWithTheLoop(t *testing.T) {
	c := &counting{n: -1, panicAt: -1}
	for v := range ahead(c.seq) {
		if v == 1000 {
			break
		}
	}
	// Read without a lock: ahead has waited for the producer to return.
	if !c.stopped || c.made > 1001+3*aheadBatch {
		t.Fatalf("producer stopped %v after %d values", c.stopped, c.made)
	}
}

// TestAheadPanics: a panic on either side reaches the loop's caller, and
// the producer has returned by then.
func TestAheadPanics(t *testing.T) {
	t.Run("producer", func(t *testing.T) {
		c := &counting{n: -1, panicAt: 700}
		defer func() {
			r := recover()
			err, ok := r.(error)
			if !ok || !strings.Contains(err.Error(), "features stage failed") || !strings.Contains(err.Error(), "counting") {
				t.Fatalf("recovered %v, want the producer's panic with its stack", r)
			}
		}()
		for range ahead(c.seq) {
		}
		t.Fatal("no panic")
	})
	t.Run("loop", func(t *testing.T) {
		c := &counting{n: -1, panicAt: -1}
		defer func() {
			if r := recover(); r != "predictor stage failed" {
				t.Fatalf("recovered %v", r)
			}
			if !c.stopped {
				t.Fatal("the producer was not stopped")
			}
		}()
		for v := range ahead(c.seq) {
			if v == 500 {
				panic("predictor stage failed")
			}
		}
	})
}
