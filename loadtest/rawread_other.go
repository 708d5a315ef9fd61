//go:build !linux

package loadtest

import (
	"context"
	"errors"
	"time"
)

// Elsewhere every client is read by gorilla on its own goroutine.
const rawReading = false

type rawReaders struct{}

func newRawReaders(int, time.Duration) (*rawReaders, error) {
	return nil, errors.New("loadtest: raw reading is linux only")
}
func (*rawReaders) add(*wsClient, []byte) error { return nil }
func (*rawReaders) start()                      {}
func (*rawReaders) stopAndWait()                {}
func (*rawReaders) close()                      {}

func subscribeRaw(context.Context, *wsClient, []string) ([]byte, error) {
	return nil, errors.New("loadtest: raw reading is linux only")
}
