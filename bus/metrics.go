package bus

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// streamCollector reports each declared stream's size and bound on every
// scrape, so that an alert fires before a stream reaches its MaxBytes
// (after which it drops its oldest messages, or a bucket refuses writes).
type streamCollector struct {
	b                  *Bus
	bytes, max, msgs   *prometheus.Desc
	up                 *prometheus.Desc
	scrapeTimeoutBound time.Duration
}

// RegisterMetrics registers the streams' size metrics on reg:
// cryptostream_stream_bytes, cryptostream_stream_max_bytes and
// cryptostream_stream_messages, labelled by stream.
func (b *Bus) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(&streamCollector{
		b:                  b,
		bytes:              prometheus.NewDesc("cryptostream_stream_bytes", "Bytes a stream holds.", []string{"stream"}, nil),
		max:                prometheus.NewDesc("cryptostream_stream_max_bytes", "A stream's MaxBytes bound.", []string{"stream"}, nil),
		msgs:               prometheus.NewDesc("cryptostream_stream_messages", "Messages a stream holds.", []string{"stream"}, nil),
		up:                 prometheus.NewDesc("cryptostream_stream_info_up", "1 when the stream's info could be read on this scrape.", []string{"stream"}, nil),
		scrapeTimeoutBound: 2 * time.Second,
	})
}

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.max
	ch <- c.msgs
	ch <- c.up
}

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	if c.b.JS == nil || !c.b.NC.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.scrapeTimeoutBound)
	defer cancel()
	// A role's user may read the info of its own streams only.
	for _, name := range visibleStreams(c.b.role, c.b.Topology.StreamNames()) {
		s, err := c.b.JS.Stream(ctx, name)
		if err != nil {
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, name)
			continue
		}
		info := s.CachedInfo()
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(info.State.Bytes), name)
		ch <- prometheus.MustNewConstMetric(c.msgs, prometheus.GaugeValue, float64(info.State.Msgs), name)
		if info.Config.MaxBytes > 0 {
			ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(info.Config.MaxBytes), name)
		}
	}
}
