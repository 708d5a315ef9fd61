package backtest

// ReadMarketRaw is the backtest's ordered consumer on MARKET with no
// decode, the raw reference of BenchmarkReplayMarket.
var ReadMarketRaw = readMarket
