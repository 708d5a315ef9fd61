package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"cryptostream/streams"
)

// ErrInvalidToken wraps every reason a token is refused.
var ErrInvalidToken = errors.New("auth: invalid token")

const (
	issuer   = "cryptostream"
	audience = "cryptostream-api"
	// MinKeyLen is the shortest accepted HS256 key: the hash's output size.
	MinKeyLen = 32
)

// Claims are what an access token says. Subject is the canonical
// username; UID and Gen bind the token to one account and one generation of
// its credentials, so that deleting the account, or changing its password
// or role, revokes it (see Sessions).
type Claims struct {
	Role streams.Role `json:"role"`
	UID  string       `json:"uid"`
	Gen  uint64       `json:"gen"`
	jwt.RegisteredClaims
}

// Tokens issues and verifies access tokens.
type Tokens struct {
	key    []byte
	ttl    time.Duration
	now    func() time.Time
	parser *jwt.Parser
}

// NewTokens returns a signer and verifier. now may be nil for time.Now.
func NewTokens(key []byte, ttl time.Duration, now func() time.Time) (*Tokens, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("auth: signing key is %d bytes, want at least %d", len(key), MinKeyLen)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("auth: token ttl %s must be positive", ttl)
	}
	if now == nil {
		now = time.Now
	}
	return &Tokens{
		key: key, ttl: ttl, now: now,
		// Only HS256 is accepted: this refuses "alg: none" and any attempt
		// to make the verifier treat the key as another algorithm's.
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithIssuer(issuer),
			jwt.WithAudience(audience),
			jwt.WithTimeFunc(now),
		),
	}, nil
}

// TTL is how long an issued token lives.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Issue signs a token for a user as stored (its ID and token generation
// included).
func (t *Tokens) Issue(u streams.User) (string, time.Time, error) {
	if u.ID == "" || u.Username == "" {
		return "", time.Time{}, errors.New("auth: issue token: the user has no id or name")
	}
	now := t.now().UTC().Truncate(time.Second)
	exp := now.Add(t.ttl)
	claims := Claims{
		Role: u.Role,
		UID:  u.ID,
		Gen:  u.TokenGen,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   u.Username,
			Audience:  jwt.ClaimStrings{audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        NewID(),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: sign token: %w", err)
	}
	return s, exp, nil
}

// Verify checks a token's signature, algorithm, issuer, audience and expiry.
func (t *Tokens) Verify(token string) (Claims, error) {
	var c Claims
	_, err := t.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.key, nil })
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	// A token from before tokens named the account (no uid) is refused:
	// its holder logs in again.
	if c.Subject == "" || c.UID == "" || (c.Role != streams.RoleUser && c.Role != streams.RoleAdmin) {
		return Claims{}, fmt.Errorf("%w: missing subject or account, or unknown role", ErrInvalidToken)
	}
	return c, nil
}

// NewID returns 16 random bytes in hex, for token, job and audit ids.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// LoadKey reads the signing key from file when it is set; otherwise it reads
// <dataDir>/jwt.key, generating it (0600) on first start so that tokens
// survive a restart.
func LoadKey(file, dataDir string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("auth: read jwt secret file: %w", err)
		}
		if len(b) < MinKeyLen {
			return nil, fmt.Errorf("auth: jwt secret file %s has %d bytes, want at least %d", file, len(b), MinKeyLen)
		}
		return b, nil
	}
	path := filepath.Join(dataDir, "jwt.key")
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) < MinKeyLen {
			return nil, fmt.Errorf("auth: %s has %d bytes, want at least %d", path, len(b), MinKeyLen)
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("auth: read jwt key: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("auth: data dir: %w", err)
	}
	key := make([]byte, 64)
	_, _ = rand.Read(key)
	// O_EXCL: when two processes start on one data dir, one key wins and
	// the other reads it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return LoadKey("", dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: create jwt key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, fmt.Errorf("auth: write jwt key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("auth: write jwt key: %w", err)
	}
	return key, nil
}
