package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MetaDeclared is the stream metadata key under which Ensure records the
// limits it declared, so that a later Ensure tells a limit an operator
// changed (it differs from what was declared) from one an older release
// declared (it equals it).
const MetaDeclared = "cryptostream.declared"

// Difference is a limit of an existing stream that is not what the topology
// declares.
type Difference struct {
	Stream   string
	Limit    string
	Existing string
	Declared string
	// Kept is true when the stream keeps its value (more replicas, or a
	// limit an operator raised), false when Ensure applied the declared one.
	Kept bool
}

func (d Difference) String() string {
	verb := "applied the declared"
	if d.Kept {
		verb = "kept the existing"
	}
	return fmt.Sprintf("%s %s: existing %s, declared %s: %s value", d.Stream, d.Limit, d.Existing, d.Declared, verb)
}

// limits are the settings of a stream that Ensure never lowers when they
// were raised. Zero and negative values mean unlimited, as on the server.
type limits struct {
	Replicas          int           `json:"replicas"`
	MaxBytes          int64         `json:"max_bytes"`
	MaxMsgs           int64         `json:"max_msgs"`
	MaxAge            time.Duration `json:"max_age"`
	MaxMsgsPerSubject int64         `json:"max_msgs_per_subject"`
	MaxMsgSize        int32         `json:"max_msg_size"`
}

func streamLimits(c jetstream.StreamConfig) limits {
	return limits{c.Replicas, c.MaxBytes, c.MaxMsgs, c.MaxAge, c.MaxMsgsPerSubject, c.MaxMsgSize}
}

func (l limits) toStream(c *jetstream.StreamConfig) {
	c.Replicas, c.MaxBytes, c.MaxMsgs, c.MaxAge, c.MaxMsgsPerSubject, c.MaxMsgSize =
		l.Replicas, l.MaxBytes, l.MaxMsgs, l.MaxAge, l.MaxMsgsPerSubject, l.MaxMsgSize
}

// kvLimits are a bucket's limits as its backing stream holds them (see
// jetstream's prepareKeyValueConfig).
func kvLimits(c jetstream.KeyValueConfig) limits {
	return limits{Replicas: max(c.Replicas, 1), MaxBytes: c.MaxBytes, MaxMsgs: -1, MaxAge: c.TTL,
		MaxMsgsPerSubject: int64(max(c.History, 1)), MaxMsgSize: c.MaxValueSize}
}

func (l limits) toKV(c *jetstream.KeyValueConfig) {
	c.Replicas, c.MaxBytes, c.TTL, c.History, c.MaxValueSize = l.Replicas, l.MaxBytes, l.MaxAge, uint8(l.MaxMsgsPerSubject), l.MaxMsgSize
}

func objLimits(c jetstream.ObjectStoreConfig) limits {
	return limits{Replicas: max(c.Replicas, 1), MaxBytes: c.MaxBytes, MaxMsgs: -1, MaxAge: c.TTL, MaxMsgsPerSubject: -1, MaxMsgSize: -1}
}

func (l limits) toObj(c *jetstream.ObjectStoreConfig) {
	c.Replicas, c.MaxBytes, c.TTL = l.Replicas, l.MaxBytes, l.MaxAge
}

// unlimited maps the server's "no limit" values to the largest, so that
// limits compare as numbers.
func unlimited(v int64) int64 {
	if v <= 0 {
		return 1<<63 - 1
	}
	return v
}

func fmtLimit(v int64, d bool) string {
	if v <= 0 {
		return "unlimited"
	}
	if d {
		return time.Duration(v).String()
	}
	return strconv.FormatInt(v, 10)
}

// reconcile decides the limits to apply to a stream that exists with
// existing limits, given the declared ones and those an earlier Ensure
// recorded (nil when none did: the stream predates the record).
//
// Replicas are never lowered. A limit an operator raised is kept: one that
// differs from the recorded declaration, or with no record one that differs
// from today's declaration, except an unlimited MaxBytes, which no
// operator chose (releases before the record set none) and which the
// declared bound replaces. Anything else takes the declared value.
func reconcile(name string, existing, declared limits, recorded *limits) (limits, []Difference) {
	out := declared
	var diffs []Difference
	if existing.Replicas > declared.Replicas {
		out.Replicas = existing.Replicas
		diffs = append(diffs, Difference{name, "replicas", strconv.Itoa(existing.Replicas), strconv.Itoa(declared.Replicas), true})
	} else if existing.Replicas < declared.Replicas {
		diffs = append(diffs, Difference{name, "replicas", strconv.Itoa(existing.Replicas), strconv.Itoa(declared.Replicas), false})
	}
	type field struct {
		name          string
		e, d, r       int64
		duration      bool
		unsetIsLegacy bool
		set           func(v int64)
	}
	var rec limits
	if recorded != nil {
		rec = *recorded
	}
	fields := []field{
		{"max_bytes", existing.MaxBytes, declared.MaxBytes, rec.MaxBytes, false, true, func(v int64) { out.MaxBytes = v }},
		{"max_msgs", existing.MaxMsgs, declared.MaxMsgs, rec.MaxMsgs, false, false, func(v int64) { out.MaxMsgs = v }},
		{"max_age", int64(existing.MaxAge), int64(declared.MaxAge), int64(rec.MaxAge), true, false, func(v int64) { out.MaxAge = time.Duration(v) }},
		{"max_msgs_per_subject", existing.MaxMsgsPerSubject, declared.MaxMsgsPerSubject, rec.MaxMsgsPerSubject, false, false, func(v int64) { out.MaxMsgsPerSubject = v }},
		{"max_msg_size", int64(existing.MaxMsgSize), int64(declared.MaxMsgSize), int64(rec.MaxMsgSize), false, false, func(v int64) { out.MaxMsgSize = int32(v) }},
	}
	for _, f := range fields {
		e, d := unlimited(f.e), unlimited(f.d)
		if e == d {
			continue
		}
		var byOperator bool
		if recorded != nil {
			byOperator = e != unlimited(f.r)
		} else {
			byOperator = !(f.unsetIsLegacy && f.e <= 0)
		}
		kept := byOperator && e > d
		if kept {
			f.set(f.e)
		}
		diffs = append(diffs, Difference{name, f.name, fmtLimit(f.e, f.duration), fmtLimit(f.d, f.duration), kept})
	}
	return out, diffs
}

// declaredMeta returns metadata with the declared limits recorded.
func declaredMeta(md map[string]string, l limits) map[string]string {
	out := make(map[string]string, len(md)+1)
	for k, v := range md {
		out[k] = v
	}
	b, _ := json.Marshal(l) // plain numbers: never fails
	out[MetaDeclared] = string(b)
	return out
}

func recordedLimits(md map[string]string) *limits {
	raw, ok := md[MetaDeclared]
	if !ok {
		return nil
	}
	var l limits
	if json.Unmarshal([]byte(raw), &l) != nil {
		return nil
	}
	return &l
}

// existingStream returns the configuration and state of a stream, or nil
// when it does not exist.
func existingStream(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// Ensure creates or updates the whole topology. It is idempotent and safe to
// run from several processes at once: creating what exists with the same
// configuration is a no-op on the server. It never lowers the replicas of
// an existing stream or bucket, nor a limit an operator raised.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) error {
	_, err := EnsureReport(ctx, js, t)
	return err
}

// EnsureReport is Ensure, returning where existing streams differed from
// the declaration and what it did about each, for the caller to log.
func EnsureReport(ctx context.Context, js jetstream.JetStream, t Topology) ([]Difference, error) {
	var all []Difference
	// reconciled returns the limits to apply to stream name, declared l.
	reconciled := func(name string, l limits) (limits, error) {
		cur, err := existingStream(ctx, js, name)
		if err != nil || cur == nil {
			return l, err
		}
		out, diffs := reconcile(name, streamLimits(cur.Config), l, recordedLimits(cur.Config.Metadata))
		// A bound below what the stream holds would discard the oldest
		// messages at once: keep what is there.
		if held := int64(cur.State.Bytes); out.MaxBytes > 0 && held > out.MaxBytes {
			all = append(all, Difference{name, "max_bytes", fmtLimit(held, false) + " stored", fmtLimit(out.MaxBytes, false), true})
			out.MaxBytes = held
		}
		all = append(all, diffs...)
		return out, nil
	}
	for _, cfg := range t.Streams {
		declared := streamLimits(cfg)
		l, err := reconciled(cfg.Name, declared)
		if err != nil {
			return all, fmt.Errorf("streams: ensure stream %s: %w", cfg.Name, err)
		}
		l.toStream(&cfg)
		cfg.Metadata = declaredMeta(cfg.Metadata, declared)
		// A server before 2.14 knows no fast-ingest batches, and its
		// strict JSON parsing refuses the field: the stage runner then
		// publishes one by one.
		if nc := js.Conn(); cfg.AllowBatchPublish && nc != nil && !ServerAtLeast(nc.ConnectedServerVersion(), 2, 14) {
			cfg.AllowBatchPublish = false
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return all, fmt.Errorf("streams: ensure stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range t.KeyValues {
		declared := kvLimits(cfg)
		l, err := reconciled("KV_"+cfg.Bucket, declared)
		if err != nil {
			return all, fmt.Errorf("streams: ensure kv %s: %w", cfg.Bucket, err)
		}
		l.toKV(&cfg)
		cfg.Metadata = declaredMeta(cfg.Metadata, declared)
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return all, fmt.Errorf("streams: ensure kv %s: %w", cfg.Bucket, err)
		}
	}
	for _, cfg := range t.ObjectStores {
		declared := objLimits(cfg)
		l, err := reconciled("OBJ_"+cfg.Bucket, declared)
		if err != nil {
			return all, fmt.Errorf("streams: ensure object store %s: %w", cfg.Bucket, err)
		}
		l.toObj(&cfg)
		cfg.Metadata = declaredMeta(cfg.Metadata, declared)
		if _, err := js.CreateOrUpdateObjectStore(ctx, cfg); err != nil {
			return all, fmt.Errorf("streams: ensure object store %s: %w", cfg.Bucket, err)
		}
	}
	for _, c := range t.Consumers {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.Stream, c.Config); err != nil {
			return all, fmt.Errorf("streams: ensure consumer %s on %s: %w", c.Config.Durable, c.Stream, err)
		}
	}
	return all, nil
}

// ServerAtLeast says whether a server version ("2.14.1", "2.15.0-beta")
// is major.minor or later; an unreadable version is not.
func ServerAtLeast(version string, major, minor int) bool {
	maj, rest, _ := strings.Cut(version, ".")
	mnr, _, _ := strings.Cut(rest, ".")
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(strings.TrimRightFunc(mnr, func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return a > major || (a == major && b >= minor)
}
