package ingest

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/streams"
)

type metrics struct {
	frames             *prometheus.CounterVec
	rejected           *prometheus.CounterVec
	candles            *prometheus.CounterVec
	ticks              prometheus.Counter
	tickErrors         prometheus.Counter
	gapsHealed         *prometheus.CounterVec
	gapsUnhealed       *prometheus.CounterVec
	reconnects         *prometheus.CounterVec
	silentResubscribes *prometheus.CounterVec
	connected          *prometheus.GaugeVec
	subscriptions      *prometheus.GaugeVec
	publishLag         *prometheus.HistogramVec
	frameToStored      *prometheus.HistogramVec
	completeness       *prometheus.GaugeVec
	lastAge            *prometheus.GaugeVec
	active             prometheus.Gauge

	mu     sync.Mutex
	series map[seriesKey]*coverage
}

type seriesKey struct {
	symbol string
	iv     streams.Interval
}

// coverage counts the candles of one series since this process stored its
// first one: completeness is the share of the grid that is present.
type coverage struct {
	first, last time.Time
	present     int
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		frames: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_ingest_frames_received_total",
			Help: "WebSocket frames received, by kind."}, []string{"kind"}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_ingest_rejected_total",
			Help: "Frames, candles and acks refused, by reason."}, []string{"reason"}),
		candles: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_ingest_candles_published_total",
			Help: "Final candles stored in MARKET, by interval and quality (live, backfilled, filled)."}, []string{"interval", "quality"}),
		ticks: f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_ingest_ticks_published_total",
			Help: "Running-candle updates published to TICKS."}),
		tickErrors: f.NewCounter(prometheus.CounterOpts{Name: "cryptostream_ingest_tick_publish_errors_total",
			Help: "Running-candle updates that could not be published (harmless: the next one replaces it)."}),
		gapsHealed: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_ingest_gaps_healed_total",
			Help: "REST heals that stored at least one candle."}, []string{"interval"}),
		gapsUnhealed: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_ingest_gaps_unhealed_total",
			Help: "Gaps REST could not cover (outage longer than its 720 rows), left open."}, []string{"interval"}),
		reconnects: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_ingest_reconnects_total",
			Help: "WebSocket reconnects."}, []string{"interval"}),
		silentResubscribes: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_ingest_silent_resubscribes_total",
			Help: "Acked subscriptions resubscribed because they delivered nothing."}, []string{"interval"}),
		active: f.NewGauge(prometheus.GaugeOpts{Name: "cryptostream_ingest_active",
			Help: "1 while this instance holds the ingest lease and ingests; 0 while it stands by."}),
		connected: f.NewGaugeVec(prometheus.GaugeOpts{Name: "cryptostream_ingest_connected",
			Help: "1 while the interval's WebSocket connection is up."}, []string{"interval"}),
		subscriptions: f.NewGaugeVec(prometheus.GaugeOpts{Name: "cryptostream_ingest_subscriptions",
			Help: "Subscriptions by state (queued, pending, acked, failed)."}, []string{"interval", "state"}),
		publishLag: f.NewHistogramVec(prometheus.HistogramOpts{Name: "cryptostream_ingest_publish_lag_seconds",
			Help: "From a live candle's end to its storage in MARKET.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}, []string{"interval"}),
		frameToStored: f.NewHistogramVec(prometheus.HistogramOpts{Name: "cryptostream_ingest_frame_to_stored_seconds",
			Help: "From receipt of the frame that made a candle final to its storage.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"interval"}),
		completeness: f.NewGaugeVec(prometheus.GaugeOpts{Name: "cryptostream_ingest_completeness_ratio",
			Help: "Share of expected candles present since this process stored the series' first one."}, []string{"symbol", "interval"}),
		lastAge: f.NewGaugeVec(prometheus.GaugeOpts{Name: "cryptostream_ingest_last_candle_age_seconds",
			Help: "Time since the end of the newest stored candle of a series."}, []string{"symbol", "interval"}),
		series: map[seriesKey]*coverage{},
	}
}

func (m *metrics) observe(c streams.Candle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := seriesKey{c.Symbol, c.Interval}
	cv := m.series[k]
	if cv == nil {
		cv = &coverage{first: c.Start, last: c.Start}
		m.series[k] = cv
	}
	if c.Start.After(cv.last) {
		cv.last = c.Start
	}
	cv.present++
	expected := int(cv.last.Sub(cv.first)/c.Interval.Duration()) + 1
	m.completeness.WithLabelValues(c.Symbol, c.Interval.String()).Set(min(float64(cv.present)/float64(max(expected, 1)), 1))
}

// refreshAges sets the age of every series' newest candle of interval iv:
// a series that stops must show its age growing, not its last value.
func (m *metrics) refreshAges(iv streams.Interval, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, cv := range m.series {
		if k.iv == iv {
			m.lastAge.WithLabelValues(k.symbol, iv.String()).Set(now.Sub(cv.last.Add(iv.Duration())).Seconds())
		}
	}
}

// forget drops a series that is no longer tracked.
func (m *metrics) forget(iv streams.Interval, symbol string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.series, seriesKey{symbol, iv})
	m.completeness.DeleteLabelValues(symbol, iv.String())
	m.lastAge.DeleteLabelValues(symbol, iv.String())
}
