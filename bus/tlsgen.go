package bus

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The files WriteTLS writes: the CA under tls/, the servers' certificate
// under server/, and each role's client certificate under <role>/, beside
// the role's NKey seed.
const (
	TLSCAFile   = "ca.pem"
	TLSCertFile = "tls-cert.pem"
	TLSKeyFile  = "tls-key.pem"
	tlsCAKey    = "ca-key.pem"
)

// tlsValidity is how long the certificates WriteTLS issues last; the
// operator reissues them with nats-auth --rotate-tls before then.
const tlsValidity = 2 * 365 * 24 * time.Hour

// WriteTLS issues a private CA for the NATS cluster (dir/tls/ca.pem, its
// key in dir/ca/, 0600), one certificate for the servers (dir/server/: their
// client listener and their routes, valid for hosts) and one client
// certificate per role (dir/<role>/, common name the role), so that the
// servers can verify every client and every route (verify: true). Files
// that exist are kept, unless rotate, which reissues everything from a new
// CA: the servers and every role must then get the new files together.
func WriteTLS(dir string, hosts []string, rotate bool) error {
	if len(hosts) == 0 {
		return errors.New("bus: nats tls: no server host names")
	}
	for i, h := range hosts {
		hosts[i] = strings.TrimSpace(h)
		if hosts[i] == "" {
			return fmt.Errorf("bus: nats tls: empty host name in %q", hosts)
		}
	}
	// The CA's key in a folder of its own, which no server or role
	// mounts: tls/ holds what every one of them may see.
	caDir, caKeyDir := filepath.Join(dir, "tls"), filepath.Join(dir, "ca")
	if err := os.MkdirAll(caDir, 0o755); err != nil {
		return fmt.Errorf("bus: nats tls: %w", err)
	}
	if err := os.MkdirAll(caKeyDir, 0o700); err != nil {
		return fmt.Errorf("bus: nats tls: %w", err)
	}
	caCertPath, caKeyPath := filepath.Join(caDir, TLSCAFile), filepath.Join(caKeyDir, tlsCAKey)
	ca, caKey, err := loadCA(caCertPath, caKeyPath)
	if errors.Is(err, fs.ErrNotExist) || rotate {
		ca, caKey, err = newCA(caCertPath, caKeyPath)
		rotate = true
	}
	if err != nil {
		return err
	}
	issue := func(sub string, leaf *x509.Certificate) error {
		d := filepath.Join(dir, sub)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("bus: nats tls: %w", err)
		}
		cert, key := filepath.Join(d, TLSCertFile), filepath.Join(d, TLSKeyFile)
		if _, err := tls.LoadX509KeyPair(cert, key); err == nil && !rotate {
			return nil
		}
		return writeLeaf(cert, key, leaf, ca, caKey)
	}
	srv := leafTemplate("cryptostream-nats", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	for _, h := range append(hosts, "localhost", "127.0.0.1", "::1") {
		if ip := net.ParseIP(h); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, h)
		}
	}
	if err := issue("server", srv); err != nil {
		return err
	}
	for _, role := range Roles() {
		if err := issue(role, leafTemplate(role, x509.ExtKeyUsageClientAuth)); err != nil {
			return err
		}
	}
	return nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func leafTemplate(cn string, usage ...x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"cryptostream"}},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(tlsValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: usage,
	}
}

func newCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("bus: nats tls ca: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, fmt.Errorf("bus: nats tls ca: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "cryptostream NATS CA", Organization: []string{"cryptostream"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(tlsValidity + 30*24*time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("bus: nats tls ca: %w", err)
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, err
}

func loadCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		if _, serr := os.Stat(certPath); errors.Is(serr, fs.ErrNotExist) {
			return nil, nil, serr
		}
		return nil, nil, fmt.Errorf("bus: nats tls ca: %w", err)
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("bus: nats tls ca: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("bus: nats tls ca key %s: not an ECDSA key", keyPath)
	}
	return ca, key, nil
}

func writeLeaf(certPath, keyPath string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("bus: nats tls: %w", err)
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return fmt.Errorf("bus: nats tls: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("bus: nats tls %s: %w", tmpl.Subject.CommonName, err)
	}
	return writePair(certPath, keyPath, der, key)
}

// writePair writes a certificate (0644: public) and its key (0600).
func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("bus: nats tls: %w", err)
	}
	if err := writeFile0600(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})); err != nil {
		return fmt.Errorf("bus: nats tls: %w", err)
	}
	if err := writeFile0600(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return fmt.Errorf("bus: nats tls: %w", err)
	}
	if err := os.Chmod(certPath, 0o644); err != nil {
		return fmt.Errorf("bus: nats tls: %w", err)
	}
	return nil
}
