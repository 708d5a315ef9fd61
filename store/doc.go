// Package store owns the PostgreSQL read model: its schema (embedded,
// versioned migrations applied at start), the sink worker that projects the
// MARKET, PREDICTIONS, ALERTS and AUDIT streams and the assets, users and
// model-registry buckets into it idempotently, and the readmodel.Reader the
// gateway answers history from when a database is configured.
package store
