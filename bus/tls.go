package bus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
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
