package ops_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/ops"
)

// TestPipelineLatencyShared: every stage asks for the family; the second
// ask gets the registered one, and both stages' observations land in it.
func TestPipelineLatencyShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	ops.PipelineLatency(reg).WithLabelValues("features").Observe(0.01)
	ops.PipelineLatency(reg).WithLabelValues("predictor").Observe(0.02)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "cryptostream_pipeline_latency_seconds" || len(mfs[0].GetMetric()) != 2 {
		t.Fatalf("gathered %v", mfs)
	}
}
