package streams

import (
	"slices"
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
	// BucketWebhookDeliveries tracks each webhook delivery by alert id:
	// attempts, and delivered or dead-lettered.
	BucketWebhookDeliveries = "webhook-deliveries"
	ObjectStoreModels       = "models"
)

// BucketPreferences holds each user's dashboard preferences (watchlist,
// default interval), keyed by username.
const BucketPreferences = "preferences"

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
	ConsumerNotifierTicks      = "notifier-ticks"
	ConsumerNotifierAudit      = "notifier-audit"
	ConsumerNotifierWebhooks   = "notifier-webhooks"
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
	// Partitioned are the stages shared by symbol between instances.
	Partitioned []Partitioned
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
				// About 25 series of a year of 1m candles; an alert fires at 80%.
				MaxBytes: 8 << 30,
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
				// The fence subjects hold the partition owners'
				// markers, which the server checks their outputs
				// against (pipeline's server-side fence).
				Subjects: []string{rootFeatures + ".>", FenceFilter(StreamFeatures)},
				// Derivable from MARKET, but the trainer reads a year of
				// them; 400 days keeps a year of training data and slack.
				MaxAge:     400 * day,
				Duplicates: day,
				// Written by a stage runner as fast-ingest batches, which
				// store a series in order through a leader change.
				AllowBatchPublish: true,
				// The predictor asks at every gap in a series whether
				// vectors were stored in between (streams.NextSeq):
				// without direct gets each ask was a stream info and a
				// message get, two API requests (2 µs of the predictor's
				// CPU per candle in BenchmarkPipelineThroughput).
				AllowDirect: true,
				// Derivable from MARKET, so losing the oldest costs a rebuild only.
				MaxBytes: 8 << 30,
			}),
			stream(jetstream.StreamConfig{
				Name:        StreamPredictions,
				Description: "predictions, one per closed candle, with provenance",
				Subjects:    []string{rootPrediction + ".>", FenceFilter(StreamPredictions)},
				// Kept forever: live evaluation and audits of a model
				// need every prediction it made.
				MaxAge:      0,
				Duplicates:  day,
				AllowDirect: true,
				// Written by a stage runner as fast-ingest batches, which
				// store a series in order through a leader change.
				AllowBatchPublish: true,
				// A prediction with every horizon's forecast and
				// intervals is about 2 KB stored, six times its binary
				// feature vector: the same 25 series of a year of 1m
				// candles as MARKET holds need 26 GiB
				// (predictor.TestPredictionFitsItsStream).
				MaxBytes: 28 << 30,
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
				// Written by a stage runner as fast-ingest batches, which
				// store a series in order through a leader change.
				AllowBatchPublish: true,
				// Alert history beyond this lives in the SQL read model.
				MaxBytes: 1 << 30,
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
				// Jobs are small and short-lived.
				MaxBytes: 256 << 20,
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
				// Bounded, so that no flood of events fills the disk; the oldest go
				// first, and the alert fires long before.
				MaxBytes: 1 << 30,
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
				// Champion decisions are small.
				MaxBytes: 256 << 20,
			}),
		},
		KeyValues: []jetstream.KeyValueConfig{
			// History lets an operator see what an asset or a user was
			// before the last change.
			// A full bucket refuses writes (the library declares DiscardNew), so
			// the bounds are far above what the data needs.
			{Bucket: BucketAssets, Description: "tracked pairs; the ingester watches it", History: 10, MaxBytes: 64 << 20, Replicas: replicas, Storage: jetstream.FileStorage},
			{Bucket: BucketUsers, Description: "users with password hashes", History: 5, MaxBytes: 256 << 20, Replicas: replicas, Storage: jetstream.FileStorage},
			{Bucket: BucketAlertRules, Description: "alert rules", History: 5, MaxBytes: 256 << 20, Replicas: replicas, Storage: jetstream.FileStorage},
			{Bucket: BucketModelRegistry, Description: "models, metrics and champions", History: 10, MaxBytes: 256 << 20, Replicas: replicas, Storage: jetstream.FileStorage},
			// Job state is only interesting while someone polls for it.
			{Bucket: BucketJobs, Description: "job state by job id", History: 1, TTL: 7 * day, MaxBytes: 256 << 20, Replicas: replicas, Storage: jetstream.FileStorage},
			// A delivery record outlives the redeliveries of its alert by
			// far; dead letters stay a month for an operator to read.
			{Bucket: BucketWebhookDeliveries, Description: "webhook deliveries and dead letters by alert id", History: 1, TTL: 30 * day, MaxBytes: 256 << 20, Replicas: replicas, Storage: jetstream.FileStorage},
			{Bucket: BucketPreferences, Description: "per-user dashboard preferences", History: 1, MaxBytes: 64 << 20, Replicas: replicas, Storage: jetstream.FileStorage},
			{Bucket: BucketLeases, Description: "members and partition owners of partitioned stages", History: 1, TTL: time.Hour, MaxBytes: 64 << 20, Replicas: replicas, Storage: jetstream.FileStorage},
		},
		ObjectStores: []jetstream.ObjectStoreConfig{
			{Bucket: ObjectStoreModels, Description: "model artifacts", MaxBytes: 4 << 30, Replicas: replicas, Storage: jetstream.FileStorage},
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
			durable(StreamAudit, ConsumerNotifierAudit, true, rootAudit+".>"),
			ticks(durable(StreamTicks, ConsumerNotifierTicks, true, rootTick+".>")),
			webhooks(durable(StreamAlerts, ConsumerNotifierWebhooks, false, rootAlert+".>")),
			sink(durable(StreamMarket, ConsumerSinkMarket, false, CandleFilter(0, ""))),
			sink(durable(StreamPredictions, ConsumerSinkPredictions, false, rootPrediction+".>")),
			sink(durable(StreamAlerts, ConsumerSinkAlerts, false, rootAlert+".>")),
			sink(durable(StreamAudit, ConsumerSinkAudit, false, rootAudit+".>")),
		},
		Partitioned: []Partitioned{
			partitioned(ConsumerFeatures, rootCandle, inOrder(durable(StreamMarket, ConsumerFeatures, true, CandleFilter(0, ""))), StreamFeatures),
			partitioned(ConsumerPredictor, rootFeatures, inOrder(durable(StreamFeatures, ConsumerPredictor, true, rootFeatures+".>")), StreamPredictions),
			// Its jobs go to the JOBS work queue, which holds no fence
			// subject: their ids, derived from the vectors, are the guard.
			partitioned(ConsumerTrainerFeatures, rootFeatures, durable(StreamFeatures, ConsumerTrainerFeatures, true, rootFeatures+".>")),
			// The notifier's closes, ticks and predictions of a symbol
			// are owned together (pipeline.Config.With): MARKET's
			// partitions lead, the others follow.
			partitioned(ConsumerNotifierMarket, rootCandle, durable(StreamMarket, ConsumerNotifierMarket, true, CandleFilter(0, ""))),
			partitioned(ConsumerNotifierTicks, rootTick, ticks(durable(StreamTicks, ConsumerNotifierTicks, true, rootTick+".>"))),
			partitioned(ConsumerNotifierPrediction, rootPrediction, durable(StreamPredictions, ConsumerNotifierPrediction, true, rootPrediction+".>")),
		},
	}
}

// Partition returns the declaration of a partitioned stage.
func (t Topology) Partition(stage string) (Partitioned, bool) {
	for _, p := range t.Partitioned {
		if p.Stage == stage {
			return p, true
		}
	}
	return Partitioned{}, false
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
// order (see inOrder): its stage runner handles it as two batches of half
// as many, one stepped while the other's outputs are stored.
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

// ticks start a consumer at the newest tick: a running candle is only worth
// evaluating while it runs, and the notifier catches up on closes from
// MARKET, so ticks missed while it was down are not replayed.
func ticks(c ConsumerSpec) ConsumerSpec {
	c.Config.DeliverPolicy = jetstream.DeliverNewPolicy
	// A tick not handled within a few seconds is superseded by the next.
	c.Config.AckWait = 10 * time.Second
	c.Config.BackOff = nil
	c.Config.MaxDeliver = 2
	return c
}

// webhooks deliver alerts fired from the consumer's creation on, never the
// stream's past, and retry on their own schedule (NakWithDelay with jitter),
// and so have no consumer BackOff: the server offsets a nak's delay by the
// BackOff step of the delivery count, which would stretch a 2s retry to a
// minute. Deliveries to different receivers run side by side, so many may
// be in flight.
func webhooks(c ConsumerSpec) ConsumerSpec {
	c.Config.DeliverPolicy = jetstream.DeliverNewPolicy
	c.Config.BackOff = nil
	c.Config.MaxDeliver = 20
	c.Config.MaxAckPending = 256
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

// StreamNames lists every stream of the topology, the backing streams of
// the buckets and object stores included.
func (t Topology) StreamNames() []string {
	var names []string
	for _, s := range t.Streams {
		names = append(names, s.Name)
	}
	for _, kv := range t.KeyValues {
		names = append(names, "KV_"+kv.Bucket)
	}
	for _, o := range t.ObjectStores {
		names = append(names, "OBJ_"+o.Bucket)
	}
	return names
}

// StoreBytes is what the topology reserves on one server: the sum of the
// MaxBytes of its file streams, and of its memory streams.
func (t Topology) StoreBytes() (file, memory int64) {
	for _, s := range t.Streams {
		if s.Storage == jetstream.MemoryStorage {
			memory += s.MaxBytes
		} else {
			file += s.MaxBytes
		}
	}
	for _, kv := range t.KeyValues {
		file += kv.MaxBytes
	}
	for _, o := range t.ObjectStores {
		file += o.MaxBytes
	}
	return file, memory
}

// minStreamBytes is the least Fit leaves a stream: enough for a demo.
const minStreamBytes = 8 << 20

// Fit scales the streams' MaxBytes down, in proportion, until the file
// streams take at most nine tenths of maxStore and the memory streams half
// of maxMemory (a value of zero or less leaves that kind alone): a single
// server refuses a stream whose bound does not fit what it has left, so an
// unscaled topology would not start on a small disk. It reports whether it
// changed anything.
func (t Topology) Fit(maxStore, maxMemory int64) (Topology, bool) {
	file, memory := t.StoreBytes()
	scale := func(have, budget int64) float64 {
		if budget <= 0 || have <= budget {
			return 1
		}
		return float64(budget) / float64(have)
	}
	fs, ms := scale(file, maxStore/10*9), scale(memory, maxMemory/2)
	if fs == 1 && ms == 1 {
		return t, false
	}
	bound := func(b int64, f float64) int64 {
		if b <= 0 || f == 1 {
			return b
		}
		return max(int64(float64(b)*f), minStreamBytes)
	}
	out := t
	out.Streams = slices.Clone(t.Streams)
	for i := range out.Streams {
		f := fs
		if out.Streams[i].Storage == jetstream.MemoryStorage {
			f = ms
		}
		out.Streams[i].MaxBytes = bound(out.Streams[i].MaxBytes, f)
	}
	out.KeyValues = slices.Clone(t.KeyValues)
	for i := range out.KeyValues {
		out.KeyValues[i].MaxBytes = bound(out.KeyValues[i].MaxBytes, fs)
	}
	out.ObjectStores = slices.Clone(t.ObjectStores)
	for i := range out.ObjectStores {
		out.ObjectStores[i].MaxBytes = bound(out.ObjectStores[i].MaxBytes, fs)
	}
	return out, true
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
