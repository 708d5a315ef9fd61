package krakenrest

import (
	"encoding/json"
	"os"
	"testing"
)

// FuzzParseOHLCResult (issue 11 item 12): any result object either fails
// with an error or yields rows in ascending order whose newest is the
// running candle, which Committed never returns; it never panics.
func FuzzParseOHLCResult(f *testing.F) {
	b, err := os.ReadFile("testdata/rest_ohlc_examples.json")
	if err != nil {
		f.Fatal(err)
	}
	var examples map[string]json.RawMessage
	if err := json.Unmarshal(b, &examples); err != nil {
		f.Fatal(err)
	}
	for _, raw := range examples {
		var ex struct {
			Response struct {
				Result json.RawMessage `json:"result"`
			} `json:"response"`
		}
		if json.Unmarshal(raw, &ex) == nil && len(ex.Response.Result) > 0 {
			f.Add([]byte(ex.Response.Result))
		}
	}
	f.Add([]byte(`{"XXBTZUSD":[[1688671200,"1","2","0.5","1.5","1.2","3",4],[1688671260,"NaN","1e309","-1","x","0","0",0]],"last":"1688671200"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var res map[string]json.RawMessage
		if json.Unmarshal(data, &res) != nil {
			return
		}
		out, err := ParseOHLCResult(res)
		if err != nil {
			return
		}
		for i := 1; i < len(out.Rows); i++ {
			if out.Rows[i].Start.Before(out.Rows[i-1].Start) {
				t.Fatalf("row %d at %s before %s", i, out.Rows[i].Start, out.Rows[i-1].Start)
			}
		}
		if n := len(out.Rows); n > 0 && !out.Rows[n-1].InProgress {
			t.Fatal("the newest row is not marked in progress")
		}
		for _, r := range out.Committed() {
			if r.InProgress {
				t.Fatal("Committed returned a running row")
			}
		}
	})
}
