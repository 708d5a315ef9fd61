// Package ingest owns the Kraken market-data ingester: the WebSocket v2
// client for the ohlc channel, the candle assembler that decides when a
// candle is final, the gap heal from REST OHLC after every (re)connect, the
// empty-interval policy shared by the live path, the REST backfill and the
// history import, and the CSV import itself.
//
// One connection per interval. Kraken accepts one ohlc interval per symbol
// per connection, so the ingester opens one connection for each configured
// interval and subscribes every tracked symbol on it. It does not derive 5m
// from 1m: Kraken's own candles at each interval are what REST backfill
// returns for that interval, so live and healed candles agree to the last
// digit, and a handful of intervals is a handful of connections, far below
// Kraken's connection limits.
//
// A candle is final when a later interval_begin arrives for its symbol, or
// when its end plus a grace period has passed by the server's clock and a
// frame has arrived since (which proves no update of it is still in
// flight). After every (re)subscription the series is healed from REST
// OHLC since the newest stored candle; REST's last row, still open, is never
// stored. Every candle goes to MARKET once with its deterministic message
// id (a duplicate ack is success), marked live, backfilled or filled; every
// update goes to TICKS.
//
// No candle from the future is accepted anywhere (streams.MaxClockSkew), and
// the ingester resumes after the newest valid stored candle, reading the
// series back past anything that does not validate.
//
// Empty intervals become flat "filled" candles (grid.go), the way Kraken's
// REST API returns them, in one function used by the live path, the REST
// heal and the import, and only between two accepted candles with no
// refused row between them. Importing kraken_BTCUSD_1m_2023-03.csv (29,881
// rows, 2023-03-01 05:00 to 2023-03-21 23:59) therefore stores 29,940
// candles: the rows plus 59 filled minutes.
//
// The core (ParseFrame, Assembler, RegularizeSeries, the subscription table)
// does no I/O; the Worker moves frames and messages through the small
// interfaces in worker.go: session.go is one connection, subscriptions.go
// its subscription table, heal.go the REST heal.
package ingest
