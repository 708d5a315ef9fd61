package streams

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	StreamMarket      = "MARKET"
	StreamTicks       = "TICKS"
	StreamFeatures    = "FEATURES"
	StreamPredictions = "PREDICTIONS"
	StreamAlerts      = "ALERTS"
	StreamJobs        = "JOBS"
	StreamAudit       = "AUDIT"
	StreamModels      = "MODELS"
)

// KV buckets and the object store.
const (
	BucketAssets        = "assets"
	BucketUsers         = "users"
	BucketAlertRules    = "alert-rules"
	BucketModelRegistry = "model-registry"
	BucketJobs          = "jobs"
	ObjectStoreModels   = "models"
)

// PriorityGroup is the pinned group of every consumer that keeps per-symbol
// state: the server pins it to one client at a time and fails over to a
// standby when that client stops pulling, so scaling out a stateful worker
// adds standbys, never a second writer of the same window.
const PriorityGroup = "active"

// Durable consumer names.
const (
	ConsumerFeatures           = "features"
	ConsumerPredictor          = "predictor"
	ConsumerTrainerFeatures    = "trainer-features"
	ConsumerTrainerJobs        = "trainer-jobs"
	ConsumerPredictorJobs      = "predictor-jobs"
	ConsumerBacktestJobs       = "backtest-jobs"
	ConsumerNotifierMarket     = "notifier-market"
	ConsumerNotifierPrediction = "notifier-predictions"
	ConsumerSinkMarket         = "sink-market"
	ConsumerSinkPredictions    = "sink-predictions"
	ConsumerSinkAlerts         = "sink-alerts"
	ConsumerSinkAudit          = "sink-audit"
)

// Topology is every stream, bucket and consumer, sized for a replica count.
type Topology struct {
	Streams      []jetstream.StreamConfig
	KeyValues    []jetstream.KeyValueConfig
	ObjectStores []jetstream.ObjectStoreConfig
	Consumers    []ConsumerSpec
}

// ConsumerSpec is a durable consumer and the stream it reads.
type ConsumerSpec struct {
	Stream string
	Config jetstream.ConsumerConfig
}

const day = 24 * time.Hour

// Declare returns the topology for a deployment with the given number of
// replicas: 1 on the embedded server, 3 on a cluster.
func Declare(replicas int) Topology {
	if replicas < 1 {
		replicas = 1
	}
	stream := func(cfg jetstream.StreamConfig) jetstream.StreamConfig {
		cfg.Replicas = replicas
		if cfg.Storage == 0 {
			cfg.Storage = jetstream.FileStorage
		}
		cfg.Discard = jetstream.DiscardOld
		return cfg
	}
	return Topology{
		Streams: []jetstream.StreamConfig{
			stream(jetstream.StreamConfig{
				Name:        StreamMarket,
				Description: "closed OHLC candles: the system of record for prices",
				Subjects:    []string{rootCandle + ".>"},
				// Kept forever: every feature, model and backtest is
				// rebuilt from it, and the exchange keeps only 720 bars.
				MaxAge: 0,
				// Covers Kraken's whole REST window (720 bars of 1m = 12h)
				// twice over, so a reconnect's backfill that re-sends bars
				// the socket already delivered is dropped by the server.
				// Older duplicates are caught by idempotent consumers.
				Duplicates: day,
				// Direct get serves asset_latest from any replica.
				AllowDirect: true,
				DenyDelete:  true,
			}),
			stream(jetstream.StreamConfig{
				Name:        StreamTicks,
				Description: "in-progress candle updates for live views",
				Subjects:    []string{rootTick + ".>"},
				// A tick is stale once its candle closes; an hour lets a
				// browser that reconnects catch up, and memory keeps the
				// per-trade write path off the disk.
				Storage:           jetstream.MemoryStorage,
				MaxAge:            time.Hour,
				MaxMsgsPerSubject: 10_000,
				MaxBytes:          256 << 20,
				Duplicates:        time.Minute,
				AllowDirect:       true,
			}),
			stream(jetstream.StreamConfig{
				Name:        StreamFeatures,
				Description: "feature vectors, one per closed candle",
				Subjects:    []string{rootFeatures + ".>"},
				// Derivable from MARKET, but the trainer reads a year of
				// them; 400 days keeps a year of training data and slack.
				MaxAge:     400 * day,
				Duplicates: day,
			}),
			stream(jetstream.StreamConfig{
				Name:        StreamPredictions,
				Description: "predictions, one per closed candle, with provenance",
				Subjects:    []string{rootPrediction + ".>"},
				// Kept forever: live evaluation and audits of a model
				// need every prediction it made.
				MaxAge:      0,
				Duplicates:  day,
				AllowDirect: true,
			}),
			stream(jetstream.StreamConfig{
				Name:        StreamAlerts,
				Description: "fired alerts",
				Subjects:    []string{rootAlert + ".>"},
				// Alert history is read for a quarter at most; the SQL
				// read model keeps it longer when configured.
				MaxAge:      90 * day,
				Duplicates:  day,
				AllowDirect: true,
			}),
			stream(jetstream.StreamConfig{
				Name:        StreamJobs,
				Description: "train, score, predict and backtest requests",
				Subjects:    []string{rootJob + ".>"},
				// A work queue: a job is gone once a worker acks it.
				Retention: jetstream.WorkQueuePolicy,
				// A job nobody took in a week is obsolete.
				MaxAge: 7 * day,
				// A client that retries a POST within an hour gets the
				// same job, not a second one.
				Duplicates: time.Hour,
			}),
			stream(jetstream.StreamConfig{
				Name:        StreamAudit,
				Description: "authentication and administrative events",
				Subjects:    []string{rootAudit + ".>"},
				// A year of audit trail plus slack; nobody may delete or
				// purge it.
				MaxAge:     400 * day,
				Duplicates: 2 * time.Minute,
				DenyDelete: true,
				DenyPurge:  true,
			}),
			stream(jetstream.StreamConfig{
				Name:        StreamModels,
				Description: "champion changes, for whoever must react to a new model",
				Subjects:    []string{rootModels + ".>"},
				// The registry bucket holds the state; this keeps only
				// the recent decisions to show and react to.
				MaxAge:            30 * day,
				MaxMsgsPerSubject: 100,
				Duplicates:        2 * time.Minute,
			}),
		},
		KeyValues: []jetstream.KeyValueConfig{
			// History lets an operator see what an asset or a user was
			// before the last change.
			{Bucket: BucketAssets, Description: "tracked pairs; the ingester watches it", History: 10, Replicas: replicas, Storage: jetstream.FileStorage},
			{Bucket: BucketUsers, Description: "users with password hashes", History: 5, Replicas: replicas, Storage: jetstream.FileStorage},
			{Bucket: BucketAlertRules, Description: "alert rules", History: 5, Replicas: replicas, Storage: jetstream.FileStorage},
			{Bucket: BucketModelRegistry, Description: "models, metrics and champions", History: 10, Replicas: replicas, Storage: jetstream.FileStorage},
			// Job state is only interesting while someone polls for it.
			{Bucket: BucketJobs, Description: "job state by job id", History: 1, TTL: 7 * day, Replicas: replicas, Storage: jetstream.FileStorage},
		},
		ObjectStores: []jetstream.ObjectStoreConfig{
			{Bucket: ObjectStoreModels, Description: "model artifacts", Replicas: replicas, Storage: jetstream.FileStorage},
		},
		Consumers: []ConsumerSpec{
			inOrder(durable(StreamMarket, ConsumerFeatures, true, CandleFilter(0, ""))),
			inOrder(durable(StreamFeatures, ConsumerPredictor, true, rootFeatures+".>")),
			durable(StreamFeatures, ConsumerTrainerFeatures, true, rootFeatures+".>"),
			durable(StreamJobs, ConsumerTrainerJobs, false, JobSubject(JobTrain), JobSubject(JobScore)),
			durable(StreamJobs, ConsumerPredictorJobs, false, JobSubject(JobPredict)),
			durable(StreamJobs, ConsumerBacktestJobs, false, JobSubject(JobBacktest)),
			durable(StreamMarket, ConsumerNotifierMarket, true, CandleFilter(0, "")),
			durable(StreamPredictions, ConsumerNotifierPrediction, true, rootPrediction+".>"),
			sink(durable(StreamMarket, ConsumerSinkMarket, false, CandleFilter(0, ""))),
			sink(durable(StreamPredictions, ConsumerSinkPredictions, false, rootPrediction+".>")),
			sink(durable(StreamAlerts, ConsumerSinkAlerts, false, rootAlert+".>")),
			sink(durable(StreamAudit, ConsumerSinkAudit, false, rootAudit+".>")),
		},
	}
}

// durable declares a pull consumer with the one ack policy: explicit acks,
// a bounded number of deliveries with growing waits, and a bound on what may
// be in flight. pinned consumers keep per-symbol state (see PriorityGroup).
func durable(stream, name string, pinned bool, filters ...string) ConsumerSpec {
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// A handler that has not acked in 30s has died or hung; BackOff
		// then spaces out the redeliveries of a message that keeps
		// timing out, and MaxDeliver ends the attempts at the eighth.
		AckWait:    30 * time.Second,
		BackOff:    []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute},
		MaxDeliver: 8,
		// Enough in flight to batch a sink's writes and hide a round trip,
		// few enough that a crash redelivers a bounded amount.
		MaxAckPending: 1024,
	}
	if len(filters) == 1 {
		cfg.FilterSubject = filters[0]
	} else {
		cfg.FilterSubjects = filters
	}
	if pinned {
		cfg.PriorityPolicy = jetstream.PriorityPolicyPinned
		cfg.PriorityGroups = []string{PriorityGroup}
		// A standby takes over two minutes after the active instance
		// stops pulling: long enough not to flap on a GC pause.
		cfg.PinnedTTL = 2 * time.Minute
	}
	return ConsumerSpec{Stream: stream, Config: cfg}
}

// StageBatch is the in-flight bound of a consumer that keeps per-series
// order (see inOrder), and so the largest batch its stage runner handles.
const StageBatch = 256

// inOrder bounds a per-series consumer to one batch of its stage runner in
// flight: what a crash hands back to the next owner, which holds newer
// inputs until it has those back and then goes on in stream order (see
// pipeline). A batch rather than one message in flight amortises the
// round trips of the acks over a backlog.
func inOrder(c ConsumerSpec) ConsumerSpec {
	c.Config.MaxAckPending = StageBatch
	return c
}

// SinkMaxAckPending is the in-flight bound of the sink's consumers: the sink
// fetches and decodes the next batch (up to 1,000 messages) while it writes
// the previous one, so it needs room for about three batches unacked.
const SinkMaxAckPending = 4096

func sink(c ConsumerSpec) ConsumerSpec {
	c.Config.MaxAckPending = SinkMaxAckPending
	return c
}

// Consumer returns the declared spec of a durable consumer.
func (t Topology) Consumer(name string) (ConsumerSpec, bool) {
	for _, c := range t.Consumers {
		if c.Config.Durable == name {
			return c, true
		}
	}
	return ConsumerSpec{}, false
}

// Ensure creates or updates the whole topology. It is idempotent and safe to
// run from several processes at once: creating what exists with the same
// configuration is a no-op on the server.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) error {
	for _, cfg := range t.Streams {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("streams: ensure stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range t.KeyValues {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("streams: ensure kv %s: %w", cfg.Bucket, err)
		}
	}
	for _, cfg := range t.ObjectStores {
		if _, err := js.CreateOrUpdateObjectStore(ctx, cfg); err != nil {
			return fmt.Errorf("streams: ensure object store %s: %w", cfg.Bucket, err)
		}
	}
	for _, c := range t.Consumers {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.Stream, c.Config); err != nil {
			return fmt.Errorf("streams: ensure consumer %s on %s: %w", c.Config.Durable, c.Stream, err)
		}
	}
	return nil
}
