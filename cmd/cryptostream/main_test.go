package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestMain lets a test run this very binary as the real command: with
// CRYPTOSTREAM_TEST_MAIN set, the test binary is cryptostream.
func TestMain(m *testing.M) {
	if args := os.Getenv("CRYPTOSTREAM_TEST_MAIN"); args != "" {
		os.Args = append([]string{"cryptostream"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSignalShutdown starts the real process, waits for it to serve, sends
// SIGTERM and expects a clean exit with the shutdown logged.
func TestSignalShutdown(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "CRYPTOSTREAM_TEST_MAIN=run --http-addr 127.0.0.1:0 --log-format json --data-dir "+t.TempDir())
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			lines := make(chan map[string]any, 100)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					var rec map[string]any
					if json.Unmarshal(sc.Bytes(), &rec) == nil {
						lines <- rec
					}
				}
			}()
			// No deadline: a slow start is no failure, and a stuck
			// shutdown ends the process through its watchdog, which
			// closes lines.
			waitLog := func(msg string) {
				t.Helper()
				for rec := range lines {
					if rec["msg"] == msg {
						return
					}
				}
				t.Fatalf("process ended before logging %q", msg)
			}
			waitLog("started")
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			waitLog("stopped cleanly")
			for range lines {
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("exit after %s: %v", sig, err)
			}
		})
	}
}
