package streams

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidSymbol reports a pair name that is not BASE/QUOTE in upper case.
var ErrInvalidSymbol = errors.New("streams: invalid symbol")

// Kraken's legacy asset codes, still used by its REST API and WebSocket v1.
// WebSocket v2 rejects them, so they are mapped on the way in and never travel.
var legacyAssets = map[string]string{"XBT": "BTC", "XDG": "DOGE"}

// NormalizeSymbol turns any spelling a user or Kraken may give ("xbt/usd",
// "XBT/USD", "BTC-USD") into the canonical v2 form "BTC/USD".
func NormalizeSymbol(s string) (string, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	base, quote, ok := strings.Cut(s, "/")
	if !ok {
		base, quote, ok = strings.Cut(s, "-")
	}
	if !ok {
		return "", fmt.Errorf("%w: %q has no BASE/QUOTE separator", ErrInvalidSymbol, s)
	}
	if mapped, ok := legacyAssets[base]; ok {
		base = mapped
	}
	if mapped, ok := legacyAssets[quote]; ok {
		quote = mapped
	}
	sym := base + "/" + quote
	if err := ValidateSymbol(sym); err != nil {
		return "", err
	}
	return sym, nil
}

// ValidateSymbol checks the canonical form: two non-empty asset codes of
// upper-case letters and digits, joined by one slash. Anything else could
// break a subject token or smuggle a wildcard into one.
func ValidateSymbol(sym string) error {
	base, quote, ok := strings.Cut(sym, "/")
	if !ok || !validAsset(base) || !validAsset(quote) {
		return fmt.Errorf("%w: %q", ErrInvalidSymbol, sym)
	}
	return nil
}

func validAsset(a string) bool {
	if a == "" || len(a) > 16 {
		return false
	}
	for _, r := range a {
		if (r < 'A' || r > 'Z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// SymbolToken maps "BTC/USD" to the subject token "BTC-USD": a slash is legal
// in a subject but reads as noise, and a dash keeps the token one piece.
func SymbolToken(sym string) (string, error) {
	if err := ValidateSymbol(sym); err != nil {
		return "", err
	}
	return strings.Replace(sym, "/", "-", 1), nil
}

// SymbolFromToken is the inverse of SymbolToken.
func SymbolFromToken(tok string) (string, error) {
	base, quote, ok := strings.Cut(tok, "-")
	if !ok {
		return "", fmt.Errorf("%w: token %q", ErrInvalidSymbol, tok)
	}
	sym := base + "/" + quote
	if err := ValidateSymbol(sym); err != nil {
		return "", err
	}
	return sym, nil
}

// token is SymbolToken for a symbol that already passed validation, as every
// event's has before it is published.
func token(sym string) string { return strings.Replace(sym, "/", "-", 1) }
