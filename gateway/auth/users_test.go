package auth_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"cryptostream/gateway/auth"
	"cryptostream/natstest"
	"cryptostream/streams"
)

func usersBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Server(t))
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), streams.BucketUsers)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// Concurrent read-modify-write updates of one user must all land: each
// writer appends its own mark, and every mark must be in the final value.
func TestConcurrentUpdatesNeverLoseAWrite(t *testing.T) {
	users := auth.NewUsers(usersBucket(t), nil)
	if _, err := users.Create(t.Context(), streams.User{Username: "carol", Role: streams.RoleUser}); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := users.Update(t.Context(), "carol", func(u *streams.User) error {
				u.FullName += fmt.Sprintf("[%d]", i)
				return nil
			})
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	u, _, err := users.Get(t.Context(), "carol")
	if err != nil {
		t.Fatal(err)
	}
	for i := range writers {
		if !strings.Contains(u.FullName, fmt.Sprintf("[%d]", i)) {
			t.Fatalf("write %d lost: %q", i, u.FullName)
		}
	}
	if strings.Count(u.FullName, "[") != writers {
		t.Fatalf("a write applied twice: %q", u.FullName)
	}
}

// A stale revision is refused rather than overwriting.
func TestDeleteAtStaleRevision(t *testing.T) {
	users := auth.NewUsers(usersBucket(t), nil)
	if _, err := users.Create(t.Context(), streams.User{Username: "dave", Role: streams.RoleUser}); err != nil {
		t.Fatal(err)
	}
	_, rev, err := users.Get(t.Context(), "dave")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := users.Update(t.Context(), "dave", func(u *streams.User) error { u.Email = "d@x"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := users.Delete(t.Context(), "dave", rev); err == nil {
		t.Fatal("delete at a stale revision succeeded")
	}
	if _, err := users.Create(t.Context(), streams.User{Username: "dave"}); err != auth.ErrUserExists {
		t.Fatalf("second create = %v", err)
	}
}

func TestEnsureAdmin(t *testing.T) {
	users := auth.NewUsers(usersBucket(t), nil)
	created, generated, err := users.EnsureAdmin(t.Context(), "", "", bcrypt.MinCost)
	if err != nil || !created || len(generated) < 16 {
		t.Fatalf("first EnsureAdmin = %v %q %v", created, generated, err)
	}
	u, _, err := users.Get(t.Context(), "admin")
	if err != nil || u.Role != streams.RoleAdmin || !auth.CheckPassword(u.PasswordHash, generated, bcrypt.MinCost) {
		t.Fatalf("admin = %+v, %v", u, err)
	}
	created, _, err = users.EnsureAdmin(t.Context(), "other", "other-password", bcrypt.MinCost)
	if err != nil || created {
		t.Fatalf("second EnsureAdmin created = %v, %v", created, err)
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := auth.LoadKey("", dir)
	if err != nil || len(k1) < auth.MinKeyLen {
		t.Fatalf("generate = %d bytes, %v", len(k1), err)
	}
	fi, err := os.Stat(filepath.Join(dir, "jwt.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v", fi, err)
	}
	k2, err := auth.LoadKey("", dir)
	if err != nil || string(k1) != string(k2) {
		t.Fatal("the key changed across loads")
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.LoadKey(short, dir); err == nil {
		t.Fatal("a short secret file was accepted")
	}
	if _, err := auth.LoadKey(filepath.Join(dir, "missing"), dir); err == nil {
		t.Fatal("a missing secret file was accepted")
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	l := auth.NewLimiter(time.Minute, 2, 4, clock)
	for i, want := range []bool{true, true, false} {
		if ok, _ := l.Allow("a"); ok != want {
			t.Fatalf("attempt %d = %v", i, ok)
		}
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key shares a's bucket")
	}
	now = now.Add(time.Minute)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("no refill after the period")
	}
	// Many keys: memory stays bounded and the limiter keeps working.
	for i := range 100 {
		l.Allow(fmt.Sprint("k", i))
	}
	if ok, _ := l.Allow("fresh"); !ok {
		t.Fatal("a fresh key is refused")
	}
}
