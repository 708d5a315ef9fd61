package streams

import "testing"

func TestServerAtLeast(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    bool
	}{
		{"2.15.2", true},
		{"2.14.0", true},
		{"2.14-beta", true},
		{"3.0.0", true},
		{"2.12.6", false},
		{"2.9.25", false},
		{"1.20.0", false},
		{"", false},
		{"v2.15.0", false},
	} {
		if got := ServerAtLeast(tc.version, 2, 14); got != tc.want {
			t.Errorf("ServerAtLeast(%q, 2, 14) = %v, want %v", tc.version, got, tc.want)
		}
	}
}
