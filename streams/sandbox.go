package streams

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// sandboxed are the streams a replay sandbox copies: the pipeline's chain
// from candles to alerts, enough to run every worker on history.
var sandboxed = []struct{ name, root string }{
	{StreamMarket, rootCandle}, {StreamFeatures, rootFeatures}, {StreamPredictions, rootPrediction}, {StreamAlerts, rootAlert},
}

var prefixPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// ErrBadPrefix reports a sandbox prefix that is not a lower-case token or
// that would shadow a live subject root.
var ErrBadPrefix = fmt.Errorf("streams: bad sandbox prefix")

// ValidatePrefix accepts a lower-case token of up to 32 letters, digits
// and dashes that is not the first token of a live subject.
func ValidatePrefix(prefix string) error {
	if !prefixPattern.MatchString(prefix) {
		return fmt.Errorf("%w %q: want a lower-case letter then up to 31 letters, digits or dashes", ErrBadPrefix, prefix)
	}
	for _, root := range []string{rootCandle, rootTick, rootFeatures, rootPrediction, rootAlert, rootJob, rootAudit, rootModels, "kv", "obj"} {
		if prefix == strings.SplitN(root, ".", 2)[0] {
			return fmt.Errorf("%w %q: a live subject root", ErrBadPrefix, prefix)
		}
	}
	return nil
}

// SandboxSubject is a live subject moved under a sandbox prefix.
func SandboxSubject(prefix, subject string) string { return prefix + "." + subject }

// SandboxStream is the name of a sandbox's copy of a live stream.
func SandboxStream(prefix, stream string) string {
	return strings.ToUpper(strings.ReplaceAll(prefix, "-", "_")) + "_" + stream
}

// Sandbox declares a replay sandbox's streams: MARKET, FEATURES,
// PREDICTIONS and ALERTS under prefix, each bounded in size and age so
// that one left behind by a killed replay goes away by itself.
func Sandbox(prefix string, replicas int) ([]jetstream.StreamConfig, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	out := make([]jetstream.StreamConfig, 0, len(sandboxed))
	for _, s := range sandboxed {
		out = append(out, jetstream.StreamConfig{
			Name:        SandboxStream(prefix, s.name),
			Description: "replay sandbox " + prefix + " of " + s.name,
			Subjects:    []string{SandboxSubject(prefix, s.root) + ".>"},
			Storage:     jetstream.FileStorage,
			Replicas:    max(replicas, 1),
			Discard:     jetstream.DiscardOld,
			MaxAge:      7 * day,
			MaxBytes:    1 << 30,
			Duplicates:  time.Hour,
		})
	}
	return out, nil
}
