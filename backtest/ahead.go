package backtest

import (
	"fmt"
	"iter"
	"runtime/debug"
	"sync"
)

// aheadBatch is how many values the producer of ahead hands over at a
// time: a channel operation per value would cost more than a step.
const aheadBatch = 256

// ahead runs seq on a goroutine of its own, up to two batches ahead of the
// loop over what it returns, so that a backtest's features stage (and the
// read and decode before it) works on one core while the predictor stage
// works on another. Values come in seq's order. Ending the loop early
// stops seq; a panic in seq is raised again in the loop's goroutine, with
// seq's stack; whichever way the loop ends, seq's goroutine has returned
// when it does, so nothing it writes changes afterwards.
func ahead[T any](seq iter.Seq2[T, error]) iter.Seq2[T, error] {
	type item struct {
		v   T
		err error
	}
	return func(yield func(T, error) bool) {
		const buffers = 3 // one filling, two full
		full := make(chan []item, buffers-1)
		free := make(chan []item, buffers)
		for range buffers {
			free <- make([]item, 0, aheadBatch)
		}
		done := make(chan struct{})
		var panicked error // written before full is closed
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(full)
			defer func() {
				if r := recover(); r != nil {
					panicked = fmt.Errorf("backtest: %v\n\n%s", r, debug.Stack())
				}
			}()
			var b []item
			select {
			case b = <-free:
			case <-done:
				return
			}
			send := func(last bool) bool {
				select {
				case full <- b:
				case <-done:
					return false
				}
				if last {
					return true
				}
				select {
				case b = <-free:
					return true
				case <-done:
					return false
				}
			}
			for v, err := range seq {
				if b = append(b, item{v, err}); len(b) == aheadBatch && !send(false) {
					return
				}
			}
			if len(b) > 0 {
				send(true)
			}
		}()
		defer func() {
			close(done)
			wg.Wait()
		}()
		for b := range full {
			for _, it := range b {
				if !yield(it.v, it.err) {
					return
				}
			}
			clear(b) // the values are the loop's now
			free <- b[:0]
		}
		if panicked != nil {
			panic(panicked)
		}
	}
}
