package gateway

import (
	"bytes"
	"testing"
)

func FuzzParseAssetPairs(f *testing.F) {
	f.Add([]byte(`{"error":[],"result":{"XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","status":"online"}}}`))
	f.Add([]byte(`{"error":["EGeneral:Internal error"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		pairs, err := ParseAssetPairs(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, p := range pairs {
			if _, err := assetParam(p.Symbol); err != nil {
				t.Fatalf("pair %+v has a symbol the API would refuse", p)
			}
		}
	})
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"", "0", "1677646800", "2023-03-01T05:00:00Z", "-1", "99999999999999999999", "2023-03-01T05:00:00+02:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := parseTime("from", s)
		if err != nil {
			return
		}
		if tm.Location().String() != "UTC" {
			t.Fatalf("%q parsed to a non-UTC time %v", s, tm)
		}
	})
}
