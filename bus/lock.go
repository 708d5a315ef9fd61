package bus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrDataDirInUse is a data dir whose store another process has open. Two
// embedded servers on the same store files corrupt them.
var ErrDataDirInUse = errors.New("bus: data dir in use by another cryptostream")

// LockFileName is the lock of a data dir, holding the owner's pid.
const LockFileName = "cryptostream.lock"

// dirLock is an exclusive advisory lock on a data dir, held while the
// embedded server runs and released by the kernel if the process dies.
type dirLock struct{ f *os.File }

// lockDataDir takes the data dir's lock without waiting.
func lockDataDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("bus: data dir: %w", err)
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bus: lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		raw, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(raw))
			return nil, fmt.Errorf("%w (pid %s holds %s): stop it, give this process its own --data-dir, or reach it with --nats-url", ErrDataDirInUse, pid, path)
		}
		return nil, fmt.Errorf("bus: lock data dir: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

func (l *dirLock) release() {
	if l == nil {
		return
	}
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}
