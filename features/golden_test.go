package features

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current code")

// TestGoldenFile pins the vectors of a stretch of the real file around its
// first gaps, to the last bit: the reference test proves the definitions,
// this one catches any change to the numbers (a reordered sum, a new
// feature) that a review must then accept with -update.
func TestGoldenFile(t *testing.T) {
	candles := realCandles(t, 5600, 5800)
	got := run(t, DefaultSpec(), candles)
	var b strings.Builder
	fmt.Fprintf(&b, "# start %s\n", strings.Join(DefaultSpec().Names(), " "))
	for _, c := range candles[len(candles)-20:] {
		v, ok := got[c.Start]
		if !ok {
			t.Fatalf("no vector at %s", c.Start)
		}
		fmt.Fprintf(&b, "%d", c.Start.Unix())
		for _, x := range v.Values {
			fmt.Fprintf(&b, " %.17g", x)
		}
		b.WriteString("\n")
	}
	path := filepath.Join("testdata", "features.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if b.String() != string(want) {
		t.Fatalf("vectors differ from %s; if the change is intended, run with -update\ngot:\n%s", path, b.String())
	}
}
