// Package streams owns the bus: every JetStream stream, subject, durable
// consumer, KV bucket and object store of cryptostream is declared here as a
// Go value, together with the event types that travel on them, their JSON
// encoding, validation and deterministic message ids. Nobody else spells a
// subject. Ensure applies the whole topology idempotently.
package streams
