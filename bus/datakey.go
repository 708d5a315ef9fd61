package bus

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrDataKeyRequired is an encrypted store opened without its key.
var ErrDataKeyRequired = errors.New("bus: the JetStream store under the data dir is encrypted: give its key (--data-key-file)")

// ErrDataKeyWrong is a store some of whose streams the given key does not
// open: another key wrote them.
var ErrDataKeyWrong = errors.New("bus: the data key does not open the JetStream store under the data dir")

// minDataKeyLen is the shortest key taken. nats-server derives the
// stream keys from it with a hash, so any length works; a short one is a
// guessable one.
const minDataKeyLen = 32

// readDataKey reads the key of the store at rest. The file is a secret as
// the NKey seed is: owner-only, and its content is used as written,
// less a trailing newline (head -c 32 /dev/urandom | base64 > data.key).
func readDataKey(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("bus: data key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("bus: data key %s is readable by others (mode %o): chmod 600 it", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("bus: data key: %w", err)
	}
	key := strings.TrimRight(string(raw), "\r\n")
	if len(key) < minDataKeyLen {
		return "", fmt.Errorf("bus: data key %s: %d characters, want at least %d (head -c 32 /dev/urandom | base64)", path, len(key), minDataKeyLen)
	}
	return key, nil
}

// storedStreams counts the streams of the store under dataDir, and how
// many of them are encrypted, from the files alone: nats-server keeps each
// stream in jetstream/<account>/streams/<name>, with a meta.key beside the
// metadata of an encrypted one.
func storedStreams(dataDir string) (total, encrypted int, err error) {
	accounts, err := os.ReadDir(filepath.Join(dataDir, server.JetStreamStoreDir))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("bus: read store: %w", err)
	}
	for _, acc := range accounts {
		if !acc.IsDir() {
			continue
		}
		dir := filepath.Join(dataDir, server.JetStreamStoreDir, acc.Name(), "streams")
		list, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("bus: read store: %w", err)
		}
		for _, s := range list {
			if !s.IsDir() {
				continue
			}
			total++
			if _, err := os.Stat(filepath.Join(dir, s.Name(), server.JetStreamMetaFileKey)); err == nil {
				encrypted++
			}
		}
	}
	return total, encrypted, nil
}

// checkStoreBeforeStart refuses an encrypted store with no key: the server
// would skip every stream it cannot decrypt, and the topology would then
// create them anew and empty over the old files.
func checkStoreBeforeStart(dataDir, key string) (stored int, err error) {
	total, encrypted, err := storedStreams(dataDir)
	if err != nil {
		return 0, err
	}
	if key == "" && encrypted > 0 {
		return 0, fmt.Errorf("%w: %d of its %d streams are", ErrDataKeyRequired, encrypted, total)
	}
	return total, nil
}

// checkStoreAfterStart makes sure the server took every stream it found on
// disk. A wrong key is only seen here: the server logs that it cannot
// decrypt a stream's metadata and goes on without it.
func checkStoreAfterStart(s *server.Server, stored int, keyed bool) error {
	if stored == 0 {
		return nil
	}
	info, err := s.Jsz(&server.JSzOptions{})
	if err != nil {
		return fmt.Errorf("bus: embedded server: jetstream info: %w", err)
	}
	if info.Streams >= stored {
		return nil
	}
	if keyed {
		return fmt.Errorf("%w: it opened %d of its %d streams (was the store written with another key?)", ErrDataKeyWrong, info.Streams, stored)
	}
	return fmt.Errorf("bus: the embedded server opened %d of the %d streams under the data dir; refusing to start over them", info.Streams, stored)
}
