package ops

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// PipelineLatency returns the histogram of the time from a candle's close to
// a stage handling what was derived from it, labelled by stage. Every stage
// observes into the same family, so each asks for it here: the first call
// registers it and the others get the registered one instead of a duplicate
// registration panic.
func PipelineLatency(reg prometheus.Registerer) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cryptostream_pipeline_latency_seconds",
		Help: "Time from a candle's close to a pipeline stage handling it or what was derived from it.",
		// From a few milliseconds (in process) to a minute (a whole 1m
		// interval late).
		Buckets: prometheus.ExponentialBucketsRange(0.001, 60, 16),
	}, []string{"stage"})
	if err := reg.Register(h); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.HistogramVec); ok {
				return existing
			}
		}
		panic(err)
	}
	return h
}
