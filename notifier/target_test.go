package notifier

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range f[host] {
		out = append(out, netip.MustParseAddr(s))
	}
	if len(out) == 0 {
		return nil, errors.New("no such host")
	}
	return out, nil
}

func TestCheckTarget(t *testing.T) {
	res := fakeResolver{
		"hooks.example.com": {"93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"},
		"rebind.example":    {"93.184.215.14", "127.0.0.1"},
		"metadata.example":  {"169.254.169.254"},
		"cgnat.example":     {"100.64.1.1"},
	}
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://hooks.example.com/x", true},
		{"http://93.184.215.14:8443/x", true},
		{"https://rebind.example/x", false},
		{"https://metadata.example/", false},
		{"https://cgnat.example/", false},
		{"https://nowhere.example/", false},
		{"http://127.0.0.1/", false},
		{"http://127.1/", false},
		{"http://0.0.0.0/", false},
		{"http://[::1]/", false},
		{"http://[fe80::1]/", false},
		{"http://[fd00::1]/", false},
		{"http://[::ffff:169.254.169.254]/", false},
		{"http://192.168.1.1/", false},
		{"http://172.16.0.1/", false},
		{"http://LOCALHOST/", false},
		{"http://api.localhost/", false},
		{"ftp://hooks.example.com/", false},
		{"javascript:alert(1)", false},
		{"//hooks.example.com/", false},
		{"https://user:pw@hooks.example.com/", false},
	} {
		err := CheckTarget(t.Context(), tc.url, false, res)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrForbiddenTarget)) {
			t.Errorf("%s: %v", tc.url, err)
		}
	}
	if err := CheckTarget(t.Context(), "http://127.0.0.1:9/", true, res); err != nil {
		t.Errorf("the admin flag: %v", err)
	}
	if err := CheckTarget(t.Context(), "file:///etc/passwd", true, res); err == nil {
		t.Error("the admin flag allows file:")
	}
}
