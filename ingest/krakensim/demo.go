package krakensim

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"

	"cryptostream/streams"
)

// demoCSV is Kraken's XBT/USD 1-minute candles of 2023-03-01 05:00 to
// 2023-03-21 23:59 UTC (29,881 rows; minutes without trades are absent), so
// that `run --demo` needs nothing beside the binary.
//
//go:embed data/kraken_BTCUSD_1m_2023-03.csv.gz
var demoCSV []byte

// DemoFeed is the embedded recording, served as the v2 symbol BTC/USD.
func DemoFeed() (Feed, error) {
	zr, err := gzip.NewReader(bytes.NewReader(demoCSV))
	if err != nil {
		return Feed{}, fmt.Errorf("krakensim: demo data: %w", err)
	}
	defer zr.Close()
	return LoadFeed("BTC/USD", streams.Interval1m, zr)
}
