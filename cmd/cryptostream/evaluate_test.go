package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cryptostream/datatest"
	"cryptostream/forecast/evaluation"
)

// TestEvaluate: the subcommand prints the report of a real file, and
// --readme rewrites only the generated section of a document.
func TestEvaluate(t *testing.T) {
	file := datatest.Path(t, datatest.KrakenXBTUSD5m)
	var out bytes.Buffer
	e := &env{stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
	if err := run(t.Context(), []string{"evaluate", "--point=false", file}, e); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### kraken_XBTUSD_5m_2023Q1.csv", "| 15 min |", "#### Targets at 15 and 60 minutes"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	doc := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(doc, []byte("# head\n"+evaluation.BeginMarker+"\nold\n"+evaluation.EndMarker+"\n# tail\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), []string{"evaluate", "--point=false", "--readme", doc, file}, e); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	got := string(b)
	if !strings.HasPrefix(got, "# head\n") || !strings.HasSuffix(got, evaluation.EndMarker+"\n# tail\n") || strings.Contains(got, "old") || !strings.Contains(got, "| 60 min |") {
		t.Errorf("rewritten document:\n%s", got)
	}
	if err := run(t.Context(), []string{"evaluate"}, e); err == nil {
		t.Error("no file: want an error")
	}
}
