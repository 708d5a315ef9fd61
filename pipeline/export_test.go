package pipeline

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SetSend puts f between r and its connection for the messages of its fast
// batches, so that a test can lose, refuse or cut one.
func SetSend(r *Runner, f func(m *nats.Msg, send func(*nats.Msg) error) error) {
	send := r.bs.send
	r.bs.send = func(m *nats.Msg) error { return f(m, send) }
}

// SetConsumerInfo puts f between r's takeover and the server's answer on
// what its consumer has in flight, so that a test can delay, age or fail
// the answer.
func SetConsumerInfo(r *Runner, f func(ctx context.Context, c jetstream.Consumer) (*jetstream.ConsumerInfo, error)) {
	r.consumerInfo = f
}

// SetResetConsumer puts f between r and the server for each reset of a
// consumer to its ack floor (on a partition's acquire, and by a partition
// runner whose pin moved), so that a test can delay or lose one.
func SetResetConsumer(r *Runner, f func(ctx context.Context, stream, consumer string, reset func(context.Context, string, string) (uint64, error)) (uint64, error)) {
	reset := r.resetConsumer
	r.resetConsumer = func(ctx context.Context, stream, consumer string) (uint64, error) {
		return f(ctx, stream, consumer, reset)
	}
}

// SetStuckStep sets how long a partition's step may run before its lease
// is left to expire, and returns the previous bound.
func SetStuckStep(d time.Duration) time.Duration {
	old := stuckStep
	stuckStep = d
	return old
}

// SetServerFence turns the server-side fence on or off for the partitions
// taken from then on, in every runner of the process.
func SetServerFence(on bool) {
	serverFenceOff.Store(!on)
}
