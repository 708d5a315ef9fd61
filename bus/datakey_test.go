package bus

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cryptostream/natstest"
	"cryptostream/streams"
)

// writeKey writes a data key file, owner-only.
func writeKey(t *testing.T, key string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data.key")
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func openStore(t *testing.T, dir, keyFile string) (*Bus, error) {
	t.Helper()
	return Open(t.Context(), Config{DataDir: dir, DataKeyFile: keyFile, Replicas: 1, MaxStore: natstest.MaxStore},
		slog.New(slog.DiscardHandler))
}

// storeCandle stores one candle whose volume is a figure found nowhere
// else, and returns that figure as it is written in the event's JSON.
func storeCandle(t *testing.T, b *Bus) []byte {
	t.Helper()
	c := &streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: time.Unix(1_700_000_040, 0).UTC(),
		Open: 1, High: 2, Low: 1, Close: 2, VWAP: 1.5, Volume: 918273.645546, Trades: 4, Quality: streams.QualityLive}
	if _, err := streams.Publish(t.Context(), b.JS, c); err != nil {
		t.Fatal(err)
	}
	return []byte(`"volume":918273.645546`)
}

// filesContaining lists the files under dir whose bytes contain needle.
func filesContaining(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(raw, needle) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

func readCandle(t *testing.T, b *Bus) streams.Candle {
	t.Helper()
	st, err := b.JS.Stream(t.Context(), streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(t.Context(), streams.CandleSubject(streams.Interval1m, "BTC/USD"))
	if err != nil {
		t.Fatalf("the stored candle cannot be read back: %v", err)
	}
	var c streams.Candle
	if err := json.Unmarshal(msg.Data, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// Issue 16: with --data-key-file the embedded store holds no candle in
// clear, a restart with the key reads it back, and a missing or wrong key
// fails saying so and leaves the store as it was.
func TestDataKeyEncryptsTheStore(t *testing.T) {
	// The control: without a key the search finds the candle in clear,
	// so that its absence below means something.
	plain := t.TempDir()
	b, err := openStore(t, plain, "")
	if err != nil {
		t.Fatal(err)
	}
	marker := storeCandle(t, b)
	b.Close()
	if len(filesContaining(t, plain, marker)) == 0 {
		t.Fatal("the candle is not found in an unencrypted store: the search proves nothing")
	}

	dir := t.TempDir()
	keyFile := writeKey(t, "k7Qm2v9XcR4tLp8wZs1bN6yHd3fJg5aE0uVoKiTxYr=")
	b, err = openStore(t, dir, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	storeCandle(t, b)
	b.Close()
	if hits := filesContaining(t, dir, marker); len(hits) > 0 {
		t.Fatalf("the candle is in clear in %v", hits)
	}
	if hits := filesContaining(t, dir, []byte("BTC-USD")); len(hits) > 0 {
		t.Fatalf("the candle's subject is in clear in %v", hits)
	}

	for _, tc := range []struct {
		name, keyFile string
		want          error
	}{
		{"no key", "", ErrDataKeyRequired},
		{"another key", writeKey(t, "another-key-of-the-right-length-000000000000="), ErrDataKeyWrong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := openStore(t, dir, tc.keyFile)
			if err == nil {
				b.Close()
				t.Fatal("the encrypted store opened")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}

	// A clear store given a key for the first time is encrypted, not
	// refused, and keeps its candle.
	b, err = openStore(t, plain, keyFile)
	if err != nil {
		t.Fatalf("a clear store refuses its first key: %v", err)
	}
	if c := readCandle(t, b); c.Volume != 918273.645546 {
		t.Fatalf("read back %+v from the converted store", c)
	}
	b.Close()

	b, err = openStore(t, dir, keyFile)
	if err != nil {
		t.Fatalf("the store does not open with its key after the refusals: %v", err)
	}
	defer b.Close()
	if c := readCandle(t, b); c.Volume != 918273.645546 || c.Symbol != "BTC/USD" {
		t.Fatalf("read back %+v", c)
	}
}

// Issue 16: a key file that is missing, short or readable by others is
// refused before the server starts.
func TestDataKeyFileErrors(t *testing.T) {
	open := writeKey(t, strings.Repeat("x", 44))
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(t.TempDir(), "nope.key"), "nope.key"},
		{"short", writeKey(t, "short"), "want at least 32"},
		{"readable by others", open, "readable by others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := openStore(t, t.TempDir(), tc.path)
			if err == nil {
				b.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
	if _, err := Dial(Config{URL: "nats://127.0.0.1:1", DataKeyFile: open}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a data key for an external cluster was accepted")
	}
}
