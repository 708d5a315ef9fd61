// Package forecast owns the forecast of a series' next moves and the tests
// that judge forecasts: the volatility model (an EWMA variance and a log-HAR
// regression on the day's, the hour's and the last minutes' realised
// variance, both on returns divided by a time-of-day profile, and their
// combination), the intervals it scales (split conformal prediction on the
// recent standardised errors, adaptive conformal inference to hold the
// coverage), the losses (QLIKE, MSE, the interval score, Brier), the
// Diebold–Mariano test with a Newey–West variance, and the promotion rule.
//
// Everything here is plain code over plain values: a Series takes one
// closed candle's start and close at a time and answers in constant time
// with a forecast for every horizon, so the predictor stage calls it per
// candle, the trainer calls Decide, and a backtest replays both. Every
// estimate at t is fitted on what was known at t: a forecast's outcome is
// used only once its horizon has passed.
package forecast
