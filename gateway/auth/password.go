package auth

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Passwords are hashed with bcrypt rather than argon2id: argon2id's strength
// is memory hardness, which means tens of MiB per concurrent login, and this
// gateway runs on small machines where a burst of logins must not exhaust
// memory. bcrypt's cost is CPU only and the login rate limiter bounds it.
// bcrypt reads at most 72 bytes, so longer passwords are refused rather than
// silently truncated.

// Password length bounds.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 72
)

// DefaultCost is the bcrypt cost of new hashes (about 0.1 to 0.3 s a hash).
const DefaultCost = 12

// ErrWeakPassword reports a password outside the accepted bounds.
var ErrWeakPassword = errors.New("auth: password must be 8 to 72 bytes")

// ValidatePassword checks a new password's length.
func ValidatePassword(pw string) error {
	if len(pw) < MinPasswordLen || len(pw) > MaxPasswordLen {
		return ErrWeakPassword
	}
	return nil
}

// HashPassword validates and hashes a new password.
func HashPassword(pw string, cost int) (string, error) {
	if err := ValidatePassword(pw); err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	return string(h), nil
}

// compare is bcrypt's comparison; a variable so that a test can see which
// hash, at which cost, a check spends its time on.
var compare = bcrypt.CompareHashAndPassword

// dummies holds one dummy hash per cost, made on first use.
var dummies sync.Map // int -> func() []byte

// dummyHash is compared against when the user does not exist. It is made at
// the cost real hashes are made at, so that a login for an unknown name
// costs what one for a known name costs and the response time does not
// tell which names exist.
func dummyHash(cost int) []byte {
	f, _ := dummies.LoadOrStore(cost, sync.OnceValue(func() []byte {
		h, err := bcrypt.GenerateFromPassword([]byte("not-a-real-password"), cost)
		if err != nil {
			// An out-of-range cost: bcrypt clamps nothing, so fall back
			// to its default rather than compare against nothing.
			h, _ = bcrypt.GenerateFromPassword([]byte("not-a-real-password"), bcrypt.DefaultCost)
		}
		return h
	}))
	return f.(func() []byte)()
}

// CheckPassword reports whether pw matches hash. An empty hash (unknown
// user) still spends a comparison against a hash of the given cost, the
// cost new hashes are made at.
func CheckPassword(hash, pw string, cost int) bool {
	if hash == "" {
		_ = compare(dummyHash(cost), []byte(pw))
		return false
	}
	return compare([]byte(hash), []byte(pw)) == nil
}
