package streams_test

import (
	"testing"

	"cryptostream/streams"
)

func TestPartitionedConsumers(t *testing.T) {
	topo := streams.Declare(1)
	p, ok := topo.Partition(streams.ConsumerFeatures)
	if !ok {
		t.Fatal("features is not declared partitioned")
	}
	for _, tc := range []struct {
		subject, want string
		ok            bool
	}{
		{streams.CandleSubject(streams.Interval1m, "BTC/USD"), "BTC-USD", true},
		{streams.CandleSubject(streams.Interval5m, "ETH/USD"), "ETH-USD", true},
		{streams.FeaturesSubject(streams.Interval1m, "BTC/USD"), "", false},
		{"market.candle.1m", "", false},
		{"market.candle.1m.BTC-USD.x", "", false},
		{"market.candle.1m.btc", "", false},
	} {
		got, ok := p.Partition(tc.subject)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Partition(%q) = %q, %v; want %q, %v", tc.subject, got, ok, tc.want, tc.ok)
		}
	}
	c := p.Consumer("BTC-USD")
	if c.Config.Durable != "features-BTC-USD" || c.Config.FilterSubject != "market.candle.*.BTC-USD" || c.Stream != streams.StreamMarket {
		t.Errorf("consumer = %s on %s filter %q", c.Config.Durable, c.Stream, c.Config.FilterSubject)
	}
	legacy, _ := topo.Consumer(streams.ConsumerFeatures)
	// The per-symbol consumers keep the stage's ack policy and its
	// in-order bound; only the pin lasts longer than the lease.
	if c.Config.MaxAckPending != legacy.Config.MaxAckPending || c.Config.AckWait != legacy.Config.AckWait || c.Config.PriorityPolicy != legacy.Config.PriorityPolicy {
		t.Errorf("partition consumer %+v differs from the stage's %+v", c.Config, legacy.Config)
	}
	if p.Legacy != streams.ConsumerFeatures {
		t.Errorf("legacy = %q", p.Legacy)
	}
	if _, ok := topo.Partition(streams.ConsumerPredictor); !ok {
		t.Error("predictor is not declared partitioned")
	}
}
