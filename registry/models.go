// Package registry is the one home of model and job state: the
// model-registry bucket (model records, the champion of each series and how
// its value is encoded, compare-and-swap promotion and demotion, watching
// the champions) and the jobs bucket (a job submitted, started, finished,
// waited for). The key names themselves are spelled in streams, with the
// rest of the bus.
package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// ErrNoChampion says a series has no champion.
var ErrNoChampion = errors.New("registry: no champion")

// Buckets is what opening the registry needs from the bus.
type Buckets interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// Models is the model-registry bucket.
type Models struct {
	kv jetstream.KeyValue

	// written holds, per model, the record this Models last stored with
	// Modify and its revision: the next Modify of the same model starts
	// from it instead of reading and decoding the record again (the
	// predictor rewrites its champion's live figures every 50 scores),
	// and the compare-and-swap still refuses it when anyone wrote since.
	mu      sync.Mutex
	written map[string]writtenRecord
}

type writtenRecord struct {
	rec streams.ModelRecord
	rev uint64
}

// NewModels wraps the model-registry bucket.
func NewModels(kv jetstream.KeyValue) *Models {
	return &Models{kv: kv, written: map[string]writtenRecord{}}
}

// OpenModels opens the model-registry bucket.
func OpenModels(ctx context.Context, js Buckets) (*Models, error) {
	kv, err := js.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		return nil, fmt.Errorf("registry: open %s: %w", streams.BucketModelRegistry, err)
	}
	return NewModels(kv), nil
}

// Get reads a model record and its revision. A missing model wraps
// jetstream.ErrKeyNotFound; a record that does not decode is permanent.
func (m *Models) Get(ctx context.Context, id string) (streams.ModelRecord, uint64, error) {
	e, err := m.kv.Get(ctx, streams.ModelKey(id))
	if err != nil {
		return streams.ModelRecord{}, 0, fmt.Errorf("registry: read model %s: %w", id, err)
	}
	var rec streams.ModelRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, 0, streams.Permanent(fmt.Errorf("registry: decode model %s: %w", id, err))
	}
	return rec, e.Revision(), nil
}

// Put stores a model record, whatever was there.
func (m *Models) Put(ctx context.Context, rec streams.ModelRecord) error {
	rec.V = streams.SchemaVersion
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("registry: encode model %s: %w", rec.ID, err)
	}
	m.forget(rec.ID)
	if _, err := m.kv.Put(ctx, streams.ModelKey(rec.ID), b); err != nil {
		return fmt.Errorf("registry: put model %s: %w", rec.ID, err)
	}
	return nil
}

// Modify applies change to a model's record with compare-and-swap: a
// concurrent writer (the trainer's demotion or score, the predictor's live
// figures) makes it read the record again and reapply change, a bounded
// number of times, backing off a random few milliseconds so that two
// writers do not keep colliding. The record it last wrote itself is not
// read again.
func (m *Models) Modify(ctx context.Context, id string, change func(*streams.ModelRecord) error) error {
	var err error
	m.mu.Lock()
	last, cached := m.written[id]
	m.mu.Unlock()
	// missed: the last attempt started from the cached record, so the
	// next reads without waiting.
	missed := false
	for attempt := range 10 {
		if attempt > 0 && !missed {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(rand.IntN(5*attempt)+1) * time.Millisecond):
			}
		}
		missed = false
		var rec streams.ModelRecord
		var rev uint64
		if cached {
			// What it wrote decodes to what it holds: the same bytes
			// are stored as after a read.
			rec, rev = cloneRecord(last.rec), last.rev
		} else if rec, rev, err = m.Get(ctx, id); err != nil {
			m.forget(id)
			return err
		}
		if err = change(&rec); err != nil {
			return err
		}
		rec.V = streams.SchemaVersion
		b, merr := json.Marshal(rec)
		if merr != nil {
			return fmt.Errorf("registry: encode model %s: %w", id, merr)
		}
		var next uint64
		next, err = m.kv.Update(ctx, streams.ModelKey(id), b, rev)
		if err == nil {
			m.mu.Lock()
			m.written[id] = writtenRecord{rec: cloneRecord(rec), rev: next}
			m.mu.Unlock()
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			break
		}
		// Someone wrote since: read what they wrote.
		missed, cached = cached, false
	}
	m.forget(id)
	return fmt.Errorf("registry: update model %s: %w", id, err)
}

func (m *Models) forget(id string) {
	m.mu.Lock()
	delete(m.written, id)
	m.mu.Unlock()
}

// cloneRecord is rec with slices and maps of its own, so that a change
// made to one does not reach the other.
func cloneRecord(rec streams.ModelRecord) streams.ModelRecord {
	rec.Features = slices.Clone(rec.Features)
	rec.Coefficients = slices.Clone(rec.Coefficients)
	rec.Metrics = maps.Clone(rec.Metrics)
	return rec
}

// PutForecastScore stores a series' live forecast scores, whatever was
// there: one writer per series (the predictor that owns it).
func (m *Models) PutForecastScore(ctx context.Context, s streams.ForecastScore) error {
	s.V = streams.SchemaVersion
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("registry: encode forecast score %s %s: %w", s.Symbol, s.Interval, err)
	}
	if _, err := m.kv.Put(ctx, streams.ForecastKey(s.Interval, s.Symbol), b); err != nil {
		return fmt.Errorf("registry: put forecast score %s %s: %w", s.Symbol, s.Interval, err)
	}
	return nil
}

// ForecastScore reads a series' live forecast scores; a missing one wraps
// jetstream.ErrKeyNotFound.
func (m *Models) ForecastScore(ctx context.Context, iv streams.Interval, symbol string) (streams.ForecastScore, error) {
	var s streams.ForecastScore
	e, err := m.kv.Get(ctx, streams.ForecastKey(iv, symbol))
	if err != nil {
		return s, fmt.Errorf("registry: read forecast score %s %s: %w", symbol, iv, err)
	}
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return s, streams.Permanent(fmt.Errorf("registry: decode forecast score %s %s: %w", symbol, iv, err))
	}
	return s, nil
}

// Champion is a series' champion model id and the revision of its key, for
// the compare-and-swap that replaces it. The zero value is "no champion".
type Champion struct {
	ID       string
	Revision uint64
}

// Champion reads a series' champion; ErrNoChampion when it has none.
func (m *Models) Champion(ctx context.Context, iv streams.Interval, symbol string) (Champion, error) {
	e, err := m.kv.Get(ctx, streams.ChampionKey(iv, symbol))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Champion{}, ErrNoChampion
	}
	if err != nil {
		return Champion{}, fmt.Errorf("registry: read champion %s %s: %w", symbol, iv, err)
	}
	return Champion{ID: DecodeChampion(e.Value()), Revision: e.Revision()}, nil
}

// ChampionRecord reads a series' champion model record.
func (m *Models) ChampionRecord(ctx context.Context, iv streams.Interval, symbol string) (streams.ModelRecord, error) {
	c, err := m.Champion(ctx, iv, symbol)
	if err != nil {
		return streams.ModelRecord{}, err
	}
	rec, _, err := m.Get(ctx, c.ID)
	return rec, err
}

// Promote makes id the series' champion if the champion is still prev
// (the zero Champion: still none). Losing the race wraps
// jetstream.ErrKeyRevisionMismatch or jetstream.ErrKeyExists: decide again
// against the new champion.
func (m *Models) Promote(ctx context.Context, iv streams.Interval, symbol, id string, prev Champion) error {
	key := streams.ChampionKey(iv, symbol)
	var err error
	if prev.Revision == 0 {
		_, err = m.kv.Create(ctx, key, EncodeChampion(id))
	} else {
		_, err = m.kv.Update(ctx, key, EncodeChampion(id), prev.Revision)
	}
	if err != nil {
		return fmt.Errorf("registry: promote %s for %s %s: %w", id, symbol, iv, err)
	}
	return nil
}

// Demote removes the series' champion if it is still prev: a concurrent
// promotion wins over this.
func (m *Models) Demote(ctx context.Context, iv streams.Interval, symbol string, prev Champion) error {
	if err := m.kv.Delete(ctx, streams.ChampionKey(iv, symbol), jetstream.LastRevision(prev.Revision)); err != nil {
		return fmt.Errorf("registry: demote %s for %s %s: %w", prev.ID, symbol, iv, err)
	}
	return nil
}

// JobModel is the model a score or predict job names: its model_id
// parameter, else the series' champion. No champion fails the job for good.
func (m *Models) JobModel(ctx context.Context, job streams.Job) (string, error) {
	if id := job.Params["model_id"]; id != "" {
		return id, nil
	}
	c, err := m.Champion(ctx, job.Interval, job.Symbol)
	if errors.Is(err, ErrNoChampion) {
		return "", streams.Permanent(fmt.Errorf("registry: no champion for %s %s", job.Symbol, job.Interval))
	}
	return c.ID, err
}

// ChampionChange is a champion key's new value.
type ChampionChange struct {
	Interval streams.Interval
	Symbol   string
	// ModelID is the new champion; empty when the series lost it.
	ModelID string
}

// WatchChampions calls apply with every series' current champion, then
// ready, then with every change, until ctx ends (nil) or the watch fails.
func (m *Models) WatchChampions(ctx context.Context, ready func(), apply func(ChampionChange)) error {
	w, err := m.kv.Watch(ctx, "champion.>")
	if err != nil {
		return fmt.Errorf("registry: watch champions: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("registry: champion watch ended")
			}
			if e == nil {
				if ready != nil {
					ready()
					ready = nil
				}
				continue
			}
			iv, sym, err := ParseChampionKey(e.Key())
			if err != nil {
				continue // not a key this registry writes
			}
			c := ChampionChange{Interval: iv, Symbol: sym}
			if e.Operation() == jetstream.KeyValuePut {
				c.ModelID = DecodeChampion(e.Value())
			}
			apply(c)
		}
	}
}

// EncodeChampion is a champion key's value: the bare model id.
func EncodeChampion(id string) []byte { return []byte(id) }

// DecodeChampion reads a champion key's value: the bare model id, or the
// same as a JSON string (as older writers and hand edits with the nats CLI
// store it).
func DecodeChampion(value []byte) string {
	var quoted string
	if json.Unmarshal(value, &quoted) == nil {
		return quoted
	}
	return string(bytes.TrimSpace(value))
}

// ParseChampionKey is the series a champion key names.
func ParseChampionKey(key string) (streams.Interval, string, error) {
	parts := strings.Split(key, ".")
	if len(parts) != 3 || parts[0] != "champion" {
		return 0, "", streams.Permanent(fmt.Errorf("registry: champion key %q", key))
	}
	iv, err := streams.ParseInterval(parts[1])
	if err != nil {
		return 0, "", streams.Permanent(fmt.Errorf("registry: champion key %q: %w", key, err))
	}
	sym, err := streams.SymbolFromToken(parts[2])
	if err != nil {
		return 0, "", streams.Permanent(fmt.Errorf("registry: champion key %q: %w", key, err))
	}
	return iv, sym, nil
}
