package bus

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
)

// clientTLS is the TLS of a connection to an external NATS: the servers
// are verified against ca (empty: the system roots), and cert/key is the
// client's own certificate for a cluster that asks for one (verify: true).
// Nothing set means no TLS unless a tls:// URL asks for it. The files are
// read here, at start, so that a wrong path or a key that does not match
// its certificate fails once with its name rather than on every reconnect.
func clientTLS(ca, cert, key string) (*tls.Config, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("bus: --nats-tls-cert and --nats-tls-key go together")
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("bus: nats tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("bus: nats tls ca %s: no PEM certificate in it", ca)
		}
		conf.RootCAs = pool
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("bus: nats tls client certificate %s / %s: %w", cert, key, err)
		}
		// Group-readable is allowed: that is how Kubernetes hands a
		// secret to a non-root pod (fsGroup, defaultMode 0440).
		if fi, err := os.Stat(key); err == nil && fi.Mode().Perm()&0o007 != 0 {
			return nil, fmt.Errorf("bus: nats tls key %s is readable by others (mode %o): chmod 600 it", key, fi.Mode().Perm())
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	return conf, nil
}

// ListenCertFileName is the embedded server's listener certificate, which
// the process copies into its data dir when the listener takes TLS: a tool
// on the same data dir reaches the process by that certificate alone
// (pinned), as it reaches it by the NKey seed beside it.
const ListenCertFileName = "nats-listen.pem"

// listenTLS is the TLS of the embedded server's client listener: its
// certificate, and the CA its clients' certificates must chain to (empty:
// clients present none).
func listenTLS(cert, key, ca string) (*tls.Config, error) {
	if cert == "" || key == "" {
		return nil, errors.New("bus: --nats-listen-tls-cert and --nats-listen-tls-key go together, and --nats-listen-tls-ca needs them")
	}
	if fi, err := os.Stat(key); err == nil && fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("bus: nats listen tls key %s is readable by others (mode %o): chmod 600 it", key, fi.Mode().Perm())
	}
	conf, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cert, KeyFile: key, CaFile: ca, Verify: ca != ""})
	if err != nil {
		return nil, fmt.Errorf("bus: nats listen tls: %w", err)
	}
	return conf, nil
}

// publishListenCert copies the listener's certificate into the data dir
// for the tools that attach (see pinnedListenTLS), or removes one that an
// earlier run without TLS left.
func publishListenCert(cfg Config) error {
	path := filepath.Join(cfg.DataDir, ListenCertFileName)
	if cfg.ListenTLSCert == "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("bus: remove %s: %w", path, err)
		}
		return nil
	}
	raw, err := os.ReadFile(cfg.ListenTLSCert)
	if err != nil {
		return fmt.Errorf("bus: nats listen tls certificate: %w", err)
	}
	if err := writeFile0600(path, raw); err != nil {
		return fmt.Errorf("bus: publish the listener's certificate: %w", err)
	}
	return nil
}

// pinnedListenTLS trusts exactly the certificate the process on dataDir
// published: whatever names it holds, a tool on the same data dir talks
// to that process and to no other.
func pinnedListenTLS(dataDir string) (*tls.Config, error) {
	path := filepath.Join(dataDir, ListenCertFileName)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bus: its listener's certificate: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("bus: %s: no PEM certificate in it", path)
	}
	pinned := block.Bytes
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is not checked against any root: the one certificate
		// is compared byte for byte instead, in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, pinned) {
				return fmt.Errorf("bus: the server's certificate is not the one published in %s", path)
			}
			return nil
		},
	}, nil
}
