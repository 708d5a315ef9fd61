package bus

import (
	"strings"
	"testing"
)

// Issue 11 item 1: the embedded server never listens off loopback without
// a credential.
func TestEmbeddedOptionsRefuseOpenListener(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:4222", ":4222", "10.1.2.3:4222"} {
		if _, err := embeddedOptions(Config{Listen: listen}, ""); err == nil {
			t.Errorf("--nats-listen %s with no credential was accepted", listen)
		}
		opts, err := embeddedOptions(Config{Listen: listen}, "UPUBKEY")
		if err != nil || len(opts.Nkeys) != 1 {
			t.Errorf("--nats-listen %s with a credential: %v", listen, err)
		}
	}
	for _, listen := range []string{"", "127.0.0.1:4222", "localhost:4222", "[::1]:4222"} {
		opts, err := embeddedOptions(Config{Listen: listen}, "UPUBKEY")
		if err != nil || !loopback(opts.Host) || len(opts.Nkeys) != 1 {
			t.Errorf("--nats-listen %q: %+v, %v", listen, opts, err)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	got := RedactURLs("nats://u:pw1@a:4222, nats://v:pw2@b:4222,tls://c:4222")
	if strings.Contains(got, "pw1") || strings.Contains(got, "pw2") || !strings.Contains(got, "tls://c:4222") {
		t.Fatalf("RedactURLs = %q", got)
	}
	if RedactURLs("") != "" {
		t.Fatal("RedactURLs of nothing is not nothing")
	}
}
