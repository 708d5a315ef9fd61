package gateway

import "testing"

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
