package pipeline

import "github.com/nats-io/nats.go"

// SetSend puts f between r and its connection for the messages of its fast
// batches, so that a test can lose, refuse or cut one.
func SetSend(r *Runner, f func(m *nats.Msg, send func(*nats.Msg) error) error) {
	send := r.bs.send
	r.bs.send = func(m *nats.Msg) error { return f(m, send) }
}
