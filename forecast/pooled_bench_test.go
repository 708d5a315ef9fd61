package forecast_test

import (
	"testing"
	"time"

	"cryptostream/forecast"
	"cryptostream/streams"
)

// BenchmarkVolatilityStepPooled is BenchmarkVolatilityStep with the
// 60-minute pool on (the default) and off (the best candidate published,
// as before), in one binary, so that their ratio is the pool's cost.
func BenchmarkVolatilityStepPooled(b *testing.B) {
	for _, pooled := range []bool{true, false} {
		name := "pooled"
		if !pooled {
			name = "best"
		}
		b.Run(name, func(b *testing.B) {
			cfg := forecast.DefaultConfig(time.Minute)
			cfg.Pooled[len(cfg.Pooled)-1] = pooled
			s, err := forecast.NewSeries(cfg)
			if err != nil {
				b.Fatal(err)
			}
			add := func(c streams.Candle) {
				if _, err := s.Add(c.Start, c.Close, nil); err != nil {
					b.Fatal(err)
				}
			}
			perCandle(b, benchCandles(), add, add)
		})
	}
}
