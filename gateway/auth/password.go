package auth

import (
	"errors"
	"fmt"

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

// dummyHash is compared against when the user does not exist, so that a
// login for an unknown name costs as much as one for a known name and the
// response time does not tell which names exist.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not-a-real-password"), bcrypt.MinCost)

// CheckPassword reports whether pw matches hash. An empty hash (unknown
// user) still spends a comparison.
func CheckPassword(hash, pw string) bool {
	if hash == "" {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(pw))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}
