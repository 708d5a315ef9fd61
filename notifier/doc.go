// Package notifier owns alerting: the alert rules (their types, validation
// and the alert-rules bucket), their evaluation over candles, ticks,
// predictions and audit events, and the delivery of what fires (the ALERTS
// stream, signed webhooks with retries and a dead-letter record).
//
// Evaluation is pure: Engine takes plain values in event time and returns
// firings, with no NATS and no clock of its own, so that the live worker,
// the rule preview of the REST API and a backtest all run the same code and
// get the same answers.
package notifier
