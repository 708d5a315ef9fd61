package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func writeCSV(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImportRefusedRows (issue 11 item 12): a file with a byte order mark
// is read; refused rows make the command exit non-zero with a summary by
// reason and line, after importing the good rows; a file of nothing but
// refused rows stores nothing and fails too.
func TestImportRefusedRows(t *testing.T) {
	dir := t.TempDir()
	file := writeCSV(t, dir, "bom.csv", "\xef\xbb\xbftimestamp,open,high,low,close,volume\n"+
		"1677646800,23797.6,23819.4,23797.6,23799.7,10.4\n"+
		"1677646860,abc,23798.9,23775.2,23777.6,0.95\n"+
		"1677646920,23777.6,23801.2,23777.6,23783.5,21.9\n"+
		"1987646940,23783.4,23785.1,23769.9,23769.9,4\n"+
		"1677647040,23769.8,23769.9,23748.9,23759.3,19.3\n")
	e := testEnv(nil)
	err := cmdImport(t.Context(), []string{"--data-dir", filepath.Join(dir, "data"), "--log-level", "error", file}, e)
	out := e.stdout.(*bytes.Buffer).String()
	if err == nil || !strings.Contains(err.Error(), "2 rows refused") {
		t.Fatalf("import = %v, want an error naming 2 refused rows; output:\n%s", err, out)
	}
	for _, want := range []string{"3 rows, 3 candles published", "bom.csv: bad number: 1 (lines 3)", "bom.csv: future candle: 1 (lines 5)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	allBad := writeCSV(t, dir, "bad.csv", "1677646800,x,1,1,1,1,1\n")
	e = testEnv(nil)
	if err := cmdImport(t.Context(), []string{"--data-dir", filepath.Join(dir, "data"), "--log-level", "error", allBad}, e); err == nil {
		t.Errorf("an import of only refused rows succeeded:\n%s", e.stdout.(*bytes.Buffer))
	}
}

// TestImportCadenceFlag (issue 11 item 16): a 5-minute file without
// --interval 5m is refused before anything is stored.
func TestImportCadenceFlag(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := range 50 {
		b.WriteString(strings.Join([]string{itoa(1677646800 + 300*int64(i)), "100", "101", "99", "100", "1", "2"}, ","))
		b.WriteByte('\n')
	}
	file := writeCSV(t, dir, "five.csv", b.String())
	e := testEnv(nil)
	err := cmdImport(t.Context(), []string{"--data-dir", filepath.Join(dir, "data"), "--log-level", "error", file}, e)
	if err == nil || !strings.Contains(err.Error(), "--interval 5m") {
		t.Fatalf("import = %v, want a refusal naming --interval 5m", err)
	}
	if out := e.stdout.(*bytes.Buffer).String(); strings.Contains(out, "published") {
		t.Errorf("something was published: %s", out)
	}
	e = testEnv(nil)
	if err := cmdImport(t.Context(), []string{"--data-dir", filepath.Join(dir, "data"), "--log-level", "error", "--interval", "5m", file}, e); err != nil {
		t.Fatalf("import --interval 5m: %v", err)
	}
	if out := e.stdout.(*bytes.Buffer).String(); !strings.Contains(out, "50 candles published (0 filled") {
		t.Errorf("import --interval 5m printed %q", out)
	}
}

// TestImportHelp (issue 11 item 19): the usage line is printed once.
func TestImportHelp(t *testing.T) {
	e := testEnv(nil)
	if err := cmdImport(t.Context(), []string{"--help"}, e); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("import --help = %v", err)
	}
	out := e.stderr.(*bytes.Buffer).String()
	if n := strings.Count(out, "Usage:"); n != 1 || !strings.Contains(out, "Usage: cryptostream import [flags] FILE...") {
		t.Errorf("usage printed %d times:\n%s", n, out)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
