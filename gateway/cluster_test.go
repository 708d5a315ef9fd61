package gateway_test

import (
	"context"
	"testing"
	"time"

	"cryptostream/gateway"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// TestWebsocketResumeOnAnotherGateway: two gateway replicas on a
// three-node cluster (R3), each on its own connection to its own server,
// as behind a load balancer with no sticky sessions. A client signs up and
// subscribes on the first, drops its socket, and resumes with since on the
// second while candles keep coming: no gap, no duplicate, then live.
func TestWebsocketResumeOnAnotherGateway(t *testing.T) {
	servers, urls := natstest.Cluster(t, 3)
	_, js := natstest.ConnectURL(t, urls)
	natstest.WaitFor(t, 2*time.Minute, "the topology on the cluster", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		return streams.Ensure(ctx, js, streams.Declare(3)) == nil
	})
	big := func(c *gateway.Config, _ *gateway.Deps) { c.Hub.QueueSize = 4096; c.Hub.MaxPending = 100_000 }
	_, js1 := natstest.Connect(t, servers[0])
	_, js2 := natstest.Connect(t, servers[1])
	resume(t, newStackOn(t, js1, big), newStackOn(t, js2, big))
}
