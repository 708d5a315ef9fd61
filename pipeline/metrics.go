package pipeline

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one runner's figures; every runner of a process shares the
// vectors, labelled by stage.
type metrics struct {
	inputs *prometheus.CounterVec
	// acked, covered and termed are inputs' outcomes resolved once:
	// they are counted on every batch.
	acked, covered, termed prometheus.Counter
	outputs                prometheus.Counter
	republished            prometheus.Counter
	retries                prometheus.Counter
	cut                    prometheus.Counter
	warmups                prometheus.Counter
	warmupSeconds          prometheus.Observer
	takeoverSeconds        prometheus.Observer
	owners                 prometheus.Counter
	batch                  prometheus.Observer
	duration               prometheus.Observer
	lag                    prometheus.Gauge
	owned                  prometheus.Gauge
	fenced                 prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, stage string) metrics {
	l := prometheus.Labels{"stage": stage}
	m := metrics{
		inputs: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_inputs_total",
			Help: "Inputs settled by a stage runner, by outcome (ack: outputs stored; covered: delivered again after its series moved past it; term: rejected as permanent; nak: handed back for redelivery).",
		}, []string{"stage", "outcome"})).MustCurryWith(l),
		outputs: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_outputs_total",
			Help: "Outputs a stage runner stored (a duplicate the server already held included).",
		}, []string{"stage"})).With(l),
		republished: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_republished_total",
			Help: "Outputs published again one at a time after an asynchronous publish of their batch failed or timed out.",
		}, []string{"stage"})).With(l),
		retries: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_batch_retries_total",
			Help: "Batches retried in place after a step or publish failed.",
		}, []string{"stage"})).With(l),
		cut: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_batches_cut_total",
			Help: "Flights whose fast-ingest batch ended before all their outputs were stored (a leader change, a lost or refused message, a timeout); the rest went again one at a time, in order.",
		}, []string{"stage"})).With(l),
		warmups: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_warmups_total",
			Help: "Series warmed from history (after a start, a change of owner or a failure).",
		}, []string{"stage"})).With(l),
		warmupSeconds: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cryptostream_pipeline_warmup_seconds",
			Help:    "Time a series' warm-up took, reads of history and the wait for the instance's stage (a partition's runners share it) included: after a failover, the part of the stall between the new owner's first input and its first output.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 7),
		}, []string{"stage"})).With(l),
		takeoverSeconds: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cryptostream_pipeline_takeover_seconds",
			Help:    "Time a new pin's owner held its first inputs until it held everything the consumer had in flight (the previous owner's unacked inputs come again after a reset, or after AckWait): after a failover, the part of the stall between the consumer's reset and the first step.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 7),
		}, []string{"stage"})).With(l),
		owners: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_owner_changes_total",
			Help: "Pins of a pinned consumer this instance took, its first included; the server gives a new one when the pin lapses (no pull within PinnedTTL), and each warms every series again.",
		}, []string{"stage"})).With(l),
		batch: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cryptostream_pipeline_batch_size_messages",
			Help:    "Inputs per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 6),
		}, []string{"stage"})).With(l),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cryptostream_pipeline_batch_duration_seconds",
			Help:    "Time from a batch's fetch to its last ack: step, publish and PubAcks.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"stage"})).With(l),
		lag: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cryptostream_pipeline_consumer_backlog_messages",
			Help: "Inputs in the stream not yet handled by the stage's consumer (pending plus unacked).",
		}, []string{"stage"})).With(l),
		owned: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cryptostream_pipeline_partitions_owned",
			Help: "Partitions (symbols) of a partitioned stage this instance owns.",
		}, []string{"stage"})).With(l),
		fenced: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_pipeline_partitions_fenced_total",
			Help: "Partitions an instance stopped because the server refused their outputs: a later owner's marker stood on the partition's fence subject (a stalled owner resumed after its lease was taken over).",
		}, []string{"stage"})).With(l),
	}
	m.acked = m.inputs.WithLabelValues("ack")
	m.covered = m.inputs.WithLabelValues("covered")
	m.termed = m.inputs.WithLabelValues("term")
	return m
}

// register registers c, or returns the collector of that name already
// registered by another runner of the process.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
