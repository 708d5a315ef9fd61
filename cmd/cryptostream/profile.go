package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile writes a CPU profile of the whole process into path until
// the returned stop is called; an empty path profiles nothing. It is a file,
// not a /debug/pprof listener: a load test profiles both ends of a run
// without opening an unauthenticated port on the gateway.
func startCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("cpu profile %s: %w", path, err)
		}
		return nil
	}, nil
}

// withCPUProfile runs fn under startCPUProfile(path).
func withCPUProfile(path string, fn func() error) error {
	stop, err := startCPUProfile(path)
	if err != nil {
		return err
	}
	err = fn()
	return errors.Join(err, stop())
}
