package bus

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"
)

// KeyFileName is the embedded server's generated client credential under
// the data dir: an NKey user seed, which the stock nats CLI takes with
// --nkey. NKey authentication is a challenge the client signs, so the seed
// itself never crosses the wire.
const KeyFileName = "nats.nkey"

// URLFileName holds the client URL of the embedded server while it runs, so
// that a tool on the same data dir (cryptostream user) reaches it.
const URLFileName = "nats.url"

// loadOrCreateKey returns the public key of the user seed in path, creating
// the seed (0600) when path is the generated default and does not exist yet.
func loadOrCreateKey(path string, generate bool) (pub string, err error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && generate {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", fmt.Errorf("bus: generate nkey: %w", err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return "", fmt.Errorf("bus: generate nkey: %w", err)
		}
		if err := writeFile0600(path, append(seed, '\n')); err != nil {
			return "", fmt.Errorf("bus: write nkey: %w", err)
		}
		return kp.PublicKey()
	}
	if err != nil {
		return "", fmt.Errorf("bus: nkey: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("bus: nkey %s is readable by others (mode %o): chmod 600 it", path, fi.Mode().Perm())
	}
	kp, err := nkeys.ParseDecoratedUserNKey(raw)
	if err != nil {
		return "", fmt.Errorf("bus: nkey %s: %w", path, err)
	}
	return kp.PublicKey()
}

// writeFile0600 writes a file readable by its owner only, replacing it
// whole so that a reader never sees half of it.
func writeFile0600(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loopback reports whether host names only this machine.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CLIHint is how to reach an embedded server with the stock nats CLI.
func CLIHint(url, keyFile string) string {
	if abs, err := filepath.Abs(keyFile); err == nil {
		keyFile = abs
	}
	return fmt.Sprintf("nats --server %s --nkey %s stream ls", url, keyFile)
}

// AuthConfFile is the server's include of the roles' users, under
// WriteAuth's server/ folder.
const AuthConfFile = "auth.conf"

// WriteAuth gives every role its own NKey seed, dir/<role>/nats.nkey
// (0600; a folder per role, so that a deployment can hand each role its own
// and no other), keeping seeds that exist unless their role is in rotate,
// and writes the public keys with each role's permissions to
// dir/server/auth.conf for the NATS servers. It returns the public keys by
// role.
func WriteAuth(dir string, rotate []string) (map[string]string, error) {
	for _, r := range rotate {
		if !ValidRole(r) {
			return nil, fmt.Errorf("bus: rotate %q: no such role (want one of %v)", r, Roles())
		}
	}
	keys := map[string]string{}
	for _, role := range Roles() {
		rdir := filepath.Join(dir, role)
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			return nil, fmt.Errorf("bus: nats auth: %w", err)
		}
		path := filepath.Join(rdir, KeyFileName)
		if slices.Contains(rotate, role) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("bus: rotate %s: %w", role, err)
			}
		}
		pub, err := loadOrCreateKey(path, true)
		if err != nil {
			return nil, err
		}
		keys[role] = pub
	}
	conf, err := AuthConfig(keys)
	if err != nil {
		return nil, err
	}
	sdir := filepath.Join(dir, "server")
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		return nil, fmt.Errorf("bus: nats auth: %w", err)
	}
	// Public keys only: the servers read it, nobody can sign with it.
	if err := writeFile0600(filepath.Join(sdir, AuthConfFile), conf); err != nil {
		return nil, fmt.Errorf("bus: write auth.conf: %w", err)
	}
	if err := os.Chmod(filepath.Join(sdir, AuthConfFile), 0o644); err != nil {
		return nil, fmt.Errorf("bus: write auth.conf: %w", err)
	}
	return keys, nil
}
