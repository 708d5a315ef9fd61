package streams_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/natstest"
	"cryptostream/streams"
)

// On a three-node cluster, the history reads answer in full while the
// stream is fresh, and again, without an error, once the node that led
// the stream is stopped: they wait for the new leader rather than
// failing with "no responders" or returning short.
func TestTailOnClusterNodeLoss(t *testing.T) {
	servers, urls := natstest.Cluster(t, 3)
	_, js := natstest.ConnectURL(t, urls)
	ctx := t.Context()
	natstest.WaitFor(t, 2*time.Minute, "an R3 stream", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
		return err == nil
	})
	const total = 300
	for i := range total {
		subj := "t.b"
		if i%3 == 0 {
			subj = "t.a"
		}
		// A fresh R3 stream may not answer its first publishes while its
		// leader settles; the msg-id keeps a retried publish stored once.
		natstest.WaitFor(t, 2*time.Minute, "a publish stored", func() bool {
			_, err := js.Publish(ctx, subj, fmt.Appendf(nil, "%d", i), jetstream.WithMsgID(fmt.Sprint(i)))
			return err == nil
		})
	}
	check := func(when string) {
		t.Helper()
		got, err := streams.Tail(ctx, js, "T", "t.a", 10, 0)
		if err != nil {
			t.Fatalf("%s: tail: %v", when, err)
		}
		if len(got) != 10 || got[0].Seq != 271 || got[9].Seq != 298 {
			t.Fatalf("%s: tail gave %d messages %v, want the 10 of seqs 271..298", when, len(got), seqs(got))
		}
		all, err := streams.Tail(ctx, js, "T", "t.a", 1000, 0)
		if err != nil || len(all) != total/3 {
			t.Fatalf("%s: whole subject: %d messages, %v", when, len(all), err)
		}
		page, err := streams.ReadRange(ctx, js, "T", "t.b", 2, 20)
		if err != nil || len(page) != 12 {
			t.Fatalf("%s: range: %d messages %v, %v", when, len(page), seqs(page), err)
		}
		since, err := streams.ReadSince(ctx, js, "T", "t.a", time.Time{}, 0)
		if err != nil || len(since) != total/3 {
			t.Fatalf("%s: since: %d messages, %v", when, len(since), err)
		}
	}
	// Fresh consumers on a stream just written, read many times over:
	// the case that once came back empty.
	for i := range 20 {
		check(fmt.Sprintf("fresh read %d", i))
	}

	lost := natstest.StreamLeader(t, js, servers, "T")
	lost.Shutdown()
	lost.WaitForShutdown()
	// At once, while the two others elect a leader.
	check("after the leader's node stopped")
	check("again")
}

func seqs(m []streams.StoredMsg) []uint64 {
	var out []uint64
	for _, x := range m {
		out = append(out, x.Seq)
	}
	return out
}
