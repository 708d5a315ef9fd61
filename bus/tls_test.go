package bus

import (
	"bufio"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/natstest"
	"cryptostream/streams"
)

// tlsServer is a JetStream server that takes clients over TLS only and
// verifies their certificates (mutual TLS) against the CA that nats-auth
// issues, with the roles' NKey users from the auth.conf it writes. It
// returns the server and the folder of the roles' files.
func tlsServer(t *testing.T) (*server.Server, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := WriteAuth(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteTLS(dir, []string{"nats-1"}, false); err != nil {
		t.Fatal(err)
	}
	// What an operator writes: the server's config includes the users,
	// and its tls block names the files nats-auth wrote.
	conf := fmt.Sprintf(`host: 127.0.0.1
port: -1
jetstream { store_dir: %q, max_file_store: %d }
tls {
  cert_file: %q
  key_file: %q
  ca_file: %q
  verify: true
}
include ./auth.conf
`, t.TempDir(), natstest.MaxStore, filepath.Join(dir, "server", TLSCertFile), filepath.Join(dir, "server", TLSKeyFile),
		filepath.Join(dir, "tls", TLSCAFile))
	path := filepath.Join(dir, "server", "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the TLS config: %v", err)
	}
	return natstest.Start(t, opts), dir
}

// openTLS opens role's bus. One plain attempt first: Open retries a
// refused connection for as long as the test runs, and the test should
// fail instead.
func openTLS(t *testing.T, s *server.Server, dir, role string) *Bus {
	t.Helper()
	cfg := roleTLS(s, dir, role)
	opts, err := ClientAuth(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(cfg.URL, append(opts, nats.MaxReconnects(0))...)
	if err != nil {
		t.Fatalf("%s over TLS: %v", role, err)
	}
	nc.Close()
	b, err := Open(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("%s over TLS: %v", role, err)
	}
	return b
}

// roleTLS is role's configuration for s: its seed, and the CA and client
// certificate nats-auth wrote for it.
func roleTLS(s *server.Server, dir, role string) Config {
	return Config{URL: s.ClientURL(), Role: role, Name: "test-" + role, Replicas: 1,
		NKeyFile: filepath.Join(dir, role, KeyFileName),
		TLSCA:    filepath.Join(dir, "tls", TLSCAFile),
		TLSCert:  filepath.Join(dir, role, TLSCertFile), TLSKey: filepath.Join(dir, role, TLSKeyFile)}
}

// Issue 16: every role reaches NATS over mutual TLS with the CA and its
// own certificate: the admin applies the topology, and a role verifies it
// and publishes what it owns.
func TestRolesConnectOverTLS(t *testing.T) {
	s, dir := tlsServer(t)
	ctx := t.Context()
	admin := openTLS(t, s, dir, RoleAdmin)
	defer admin.Close()
	if !admin.NC.TLSRequired() {
		t.Fatal("the server does not require TLS: the test proves nothing")
	}
	for _, role := range Roles()[1:] {
		b := openTLS(t, s, dir, role)
		if _, err := b.NC.TLSConnectionState(); err != nil {
			t.Errorf("%s is not on TLS: %v", role, err)
		}
		if err := b.Ready(ctx); err != nil {
			t.Errorf("%s not ready over TLS: %v", role, err)
		}
		if role == RoleIngest {
			c := &streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: time.Unix(1_700_000_040, 0).UTC(),
				Open: 1, High: 2, Low: 1, Close: 2, VWAP: 1.5, Volume: 3, Trades: 4, Quality: streams.QualityLive}
			if _, err := streams.Publish(ctx, b.JS, c); err != nil {
				t.Errorf("ingest cannot publish a candle over TLS: %v", err)
			}
		}
		b.Close()
	}
}

// Issue 16: a client without the CA, with another CA, with no client
// certificate or with one another CA issued, or with no TLS at all, is
// refused.
func TestTLSRefusesClientsWithoutTheCA(t *testing.T) {
	s, dir := tlsServer(t)
	other := t.TempDir()
	if err := WriteTLS(other, []string{"nats-1"}, false); err != nil {
		t.Fatal(err)
	}
	good := roleTLS(s, dir, RoleIngest)
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want func(error) bool
	}{
		// The server says it requires TLS and the client upgrades, with
		// nothing to verify the server by but the system roots.
		{"no TLS", func(c *Config) { c.TLSCA, c.TLSCert, c.TLSKey = "", "", "" }, unknownAuthority},
		{"the system roots instead of the CA", func(c *Config) { c.TLSCA = "" }, unknownAuthority},
		{"another CA", func(c *Config) { c.TLSCA = filepath.Join(other, "tls", TLSCAFile) }, unknownAuthority},
		{"no client certificate", func(c *Config) { c.TLSCert, c.TLSKey = "", "" }, refusedByServer},
		{"a client certificate of another CA", func(c *Config) {
			c.TLSCert, c.TLSKey = filepath.Join(other, RoleIngest, TLSCertFile), filepath.Join(other, RoleIngest, TLSKeyFile)
		}, refusedByServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			opts, err := ClientAuth(cfg)
			if err != nil {
				t.Fatal(err)
			}
			nc, err := nats.Connect(cfg.URL, append(opts, nats.MaxReconnects(0))...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !tc.want(err) {
				t.Fatalf("refused, but not for the reason expected: %v", err)
			}
		})
	}
	// The control: the same code with the right files connects.
	opts, err := ClientAuth(good)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(good.URL, append(opts, nats.MaxReconnects(0))...)
	if err != nil {
		t.Fatalf("the right CA and certificate are refused: %v", err)
	}
	nc.Close()
}

func unknownAuthority(err error) bool {
	var ua x509.UnknownAuthorityError
	return errors.As(err, &ua)
}

// refusedByServer is the server's refusal of a client's certificate: the
// client reads it as the server's alert (certificate required) or, when
// the server's close wins the race, as a connection closed after the
// handshake.
func refusedByServer(err error) bool {
	return err != nil && !unknownAuthority(err) &&
		(strings.Contains(err.Error(), "remote error: tls") || strings.Contains(err.Error(), "closed by remote after TLS handshake"))
}

// Issue 16: a wrong TLS file fails at start with its name, not on every
// reconnect.
func TestClientTLSFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteAuth(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteTLS(dir, []string{"nats-1"}, false); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "tls", TLSCAFile)
	cert, key := filepath.Join(dir, RoleIngest, TLSCertFile), filepath.Join(dir, RoleIngest, TLSKeyFile)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open-key.pem")
	raw, _ := os.ReadFile(key)
	if err := os.WriteFile(open, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		ca, cert, key string
		want          string
	}{
		{"cert without key", ca, cert, "", "go together"},
		{"CA not PEM", notPEM, "", "", "no PEM certificate"},
		{"CA missing", filepath.Join(dir, "nope.pem"), "", "", "nope.pem"},
		{"key of another certificate", ca, cert, filepath.Join(dir, RoleGateway, TLSKeyFile), "does not match"},
		{"key readable by others", ca, cert, open, "readable by others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := clientTLS(tc.ca, tc.cert, tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("clientTLS = %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if _, err := Dial(Config{DataDir: t.TempDir(), TLSCA: ca}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("TLS files for the in-process embedded server were accepted")
	}
}

// Issue 16: the embedded server's listener (--nats-listen) takes clients
// from outside over TLS only, with the certificate nats-auth issues for
// the servers, and with a CA (mutual TLS) only clients that present a
// certificate of it. The process's own connection is in process and needs
// none; a tool on the same data dir attaches by the certificate the
// process published, unless the listener wants a client certificate.
func TestEmbeddedListenerTakesTLS(t *testing.T) {
	issued := t.TempDir()
	if err := WriteTLS(issued, []string{"nats-1"}, false); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(issued, "tls", TLSCAFile)
	for _, mutual := range []bool{false, true} {
		t.Run(fmt.Sprint("mutual=", mutual), func(t *testing.T) {
			data := t.TempDir()
			cfg := Config{DataDir: data, Replicas: 1, Name: "test",
				ListenTLSCert: filepath.Join(issued, "server", TLSCertFile), ListenTLSKey: filepath.Join(issued, "server", TLSKeyFile)}
			if mutual {
				cfg.ListenTLSCA = ca
			}
			b, err := Open(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.Close)
			if _, err := b.JS.AccountInfo(t.Context()); err != nil {
				t.Fatalf("the process's own connection: %v", err)
			}
			u := b.ClientURL()
			if !strings.HasPrefix(u, "tls://") {
				t.Fatalf("ClientURL %s: want tls://", u)
			}
			nkey, err := nats.NkeyOptionFromSeed(filepath.Join(data, KeyFileName))
			if err != nil {
				t.Fatal(err)
			}
			connect := func(tc Config) error {
				opts, err := ClientAuth(tc)
				if err != nil {
					t.Fatal(err)
				}
				nc, err := nats.Connect(u, append(opts, nkey, nats.MaxReconnects(0))...)
				if err != nil {
					return err
				}
				defer nc.Close()
				js, err := jetstream.New(nc)
				if err != nil {
					return err
				}
				if _, err := js.AccountInfo(t.Context()); err != nil {
					return err
				}
				return nil
			}

			// A plain client is told TLS is required and is cut off when
			// it goes on in clear.
			plainRefused(t, strings.TrimPrefix(u, "tls://"))

			client := Config{TLSCA: ca}
			if mutual {
				if err := connect(client); err == nil {
					t.Error("a client with no certificate connected to a listener that verifies clients")
				}
				client.TLSCert, client.TLSKey = filepath.Join(issued, RoleGateway, TLSCertFile), filepath.Join(issued, RoleGateway, TLSKeyFile)
			}
			if err := connect(client); err != nil {
				t.Fatalf("a client with the CA%s: %v", map[bool]string{true: " and a certificate of it"}[mutual], err)
			}

			// A tool on the data dir the process holds.
			tool, err := Dial(Config{DataDir: data, Replicas: 1, Name: "tool", Attach: true}, slog.New(slog.DiscardHandler))
			if mutual {
				if err == nil {
					tool.NC.Close()
					t.Fatal("a tool attached with no client certificate to a listener that verifies clients")
				}
				if !strings.Contains(err.Error(), "--nats-tls-cert") {
					t.Errorf("attach refused with %v: want the way to reach it", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("attach over TLS: %v", err)
			}
			defer tool.NC.Close()
			if _, err := tool.JS.AccountInfo(t.Context()); err != nil {
				t.Fatalf("attached tool: %v", err)
			}
		})
	}
}

// plainRefused dials addr in clear: the server's INFO must require TLS, and
// a CONNECT and PING sent in clear must get no PONG.
func plainRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	info, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("INFO: %v", err)
	}
	if !strings.Contains(info, `"tls_required":true`) {
		t.Errorf("the listener does not require TLS: %s", info)
	}
	if _, err := c.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
		return // cut off already
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return // closed: refused
		}
		if strings.HasPrefix(line, "PONG") {
			t.Fatal("a plain client was answered")
		}
	}
}
