package streams

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadSubject reports a subject that does not parse as one of ours.
var ErrBadSubject = errors.New("streams: bad subject")

// Subject roots. Each stream owns one root, so a stream's filter is root.>.
const (
	rootCandle     = "market.candle"
	rootTick       = "market.tick"
	rootFeatures   = "features"
	rootPrediction = "predictions"
	rootAlert      = "alerts"
	rootJob        = "jobs"
	rootAudit      = "audit"
	rootModels     = "models.updated"
	rootFence      = "fence"
)

// CandleSubject is market.candle.<interval>.<SYMBOL-TOKEN>.
func CandleSubject(iv Interval, symbol string) string {
	return seriesString(rootCandle, '.', iv, symbol, 0, false)
}

// CandleFilter matches every closed candle of one interval and one symbol;
// an empty symbol or a zero interval is a wildcard.
func CandleFilter(iv Interval, symbol string) string {
	ivTok, symTok := "*", "*"
	if iv != 0 {
		ivTok = iv.String()
	}
	if symbol != "" {
		symTok = token(symbol)
	}
	return rootCandle + "." + ivTok + "." + symTok
}

// TickSubject is market.tick.<interval>.<SYMBOL-TOKEN>: the running candle.
func TickSubject(iv Interval, symbol string) string {
	return rootTick + "." + iv.String() + "." + token(symbol)
}

// FeaturesSubject is features.<interval>.<SYMBOL-TOKEN>.
func FeaturesSubject(iv Interval, symbol string) string {
	return seriesString(rootFeatures, '.', iv, symbol, 0, false)
}

// PredictionSubject is predictions.<interval>.<SYMBOL-TOKEN>.
func PredictionSubject(iv Interval, symbol string) string {
	return seriesString(rootPrediction, '.', iv, symbol, 0, false)
}

// seriesString is <root><sep><interval><sep><SYMBOL-TOKEN>, then
// <sep><unix> when withUnix, built in one allocation: subjects and msg-ids
// are made for every event a stage publishes, and the concatenation of
// token's copy cost three.
func seriesString(root string, sep byte, iv Interval, symbol string, unix int64, withUnix bool) string {
	var buf [128]byte
	b := append(buf[:0], root...)
	b = append(b, sep)
	b = append(b, iv.String()...)
	b = append(b, sep)
	if i := strings.IndexByte(symbol, '/'); i >= 0 {
		b = append(b, symbol[:i]...)
		b = append(b, '-')
		b = append(b, symbol[i+1:]...)
	} else {
		b = append(b, symbol...)
	}
	if withUnix {
		b = append(b, sep)
		b = strconv.AppendInt(b, unix, 10)
	}
	return string(b)
}

// PredictionFilter matches the predictions of every interval and symbol.
func PredictionFilter() string { return rootPrediction + ".*.*" }

// AlertSubject is alerts.<SYMBOL-TOKEN>.
func AlertSubject(symbol string) string { return rootAlert + "." + token(symbol) }

// AlertSecuritySubject carries the alerts of security rules. A symbol token
// always holds a dash, so it cannot collide with one.
const AlertSecuritySubject = rootAlert + ".security"

// JobSubject is jobs.<kind>.
func JobSubject(kind JobKind) string { return rootJob + "." + string(kind) }

// AuditSubject is audit.<action>, the action's dots kept as subject levels.
func AuditSubject(action string) string { return rootAudit + "." + action }

// ModelsUpdatedSubject is models.updated.<SYMBOL-TOKEN>.
func ModelsUpdatedSubject(symbol string) string { return rootModels + "." + token(symbol) }

// FenceSubject is fence.<STREAM>.<stage>.<partition>: the owner markers of
// one partition of a partitioned stage in one of its output streams (see
// pipeline's server-side fence). It lives in the output stream, under a
// root of its own that no reader of the stream's data filters on.
func FenceSubject(stream, stage, partition string) string {
	return rootFence + "." + stream + "." + stage + "." + partition
}

// FenceFilter matches every owner marker a stream holds.
func FenceFilter(stream string) string { return rootFence + "." + stream + ".>" }

// IsFenceSubject says whether subject is an owner marker's, which a reader
// of a stream by sequence skips.
func IsFenceSubject(subject string) bool { return strings.HasPrefix(subject, rootFence+".") }

// SubjectKey is what a per-symbol subject names.
type SubjectKey struct {
	Interval Interval
	Symbol   string
}

// ParseSeriesSubject parses any <root>.<interval>.<SYMBOL-TOKEN> subject
// (candles, ticks, features, predictions) back into its interval and symbol.
func ParseSeriesSubject(subject string) (SubjectKey, error) {
	for _, root := range []string{rootCandle, rootTick, rootFeatures, rootPrediction} {
		rest, ok := strings.CutPrefix(subject, root+".")
		if !ok {
			continue
		}
		ivTok, symTok, ok := strings.Cut(rest, ".")
		if !ok || strings.Contains(symTok, ".") {
			break
		}
		iv, err := ParseInterval(ivTok)
		if err != nil {
			return SubjectKey{}, fmt.Errorf("%w: %q: %w", ErrBadSubject, subject, err)
		}
		sym, err := SymbolFromToken(symTok)
		if err != nil {
			return SubjectKey{}, fmt.Errorf("%w: %q: %w", ErrBadSubject, subject, err)
		}
		return SubjectKey{Interval: iv, Symbol: sym}, nil
	}
	return SubjectKey{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
}
