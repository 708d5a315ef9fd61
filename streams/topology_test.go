package streams_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/natstest"
	"cryptostream/streams"
)

func streamNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	var names []string
	lister := js.StreamNames(t.Context())
	for n := range lister.Name() {
		names = append(names, n)
	}
	if err := lister.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func wantStreamNames(topo streams.Topology) []string {
	var want []string
	for _, s := range topo.Streams {
		want = append(want, s.Name)
	}
	for _, kv := range topo.KeyValues {
		want = append(want, "KV_"+kv.Bucket)
	}
	for _, o := range topo.ObjectStores {
		want = append(want, "OBJ_"+o.Bucket)
	}
	slices.Sort(want)
	return want
}

func TestEnsureTwiceAndConcurrently(t *testing.T) {
	s := natstest.Server(t)
	topo := streams.Declare(1)

	t.Run("twice", func(t *testing.T) {
		_, js := natstest.Connect(t, s)
		for i := range 2 {
			if err := streams.Ensure(t.Context(), js, topo); err != nil {
				t.Fatalf("Ensure #%d: %v", i+1, err)
			}
		}
		if got, want := streamNames(t, js), wantStreamNames(topo); !slices.Equal(got, want) {
			t.Fatalf("streams = %v, want %v", got, want)
		}
	})

	t.Run("concurrently from two connections", func(t *testing.T) {
		s2 := natstest.Server(t) // a fresh server: nothing exists yet
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			_, js := natstest.Connect(t, s2)
			wg.Go(func() { errs[i] = streams.Ensure(t.Context(), js, topo) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		_, js := natstest.Connect(t, s2)
		if got, want := streamNames(t, js), wantStreamNames(topo); !slices.Equal(got, want) {
			t.Fatalf("streams = %v, want %v", got, want)
		}
		for _, c := range topo.Consumers {
			info, err := js.Consumer(t.Context(), c.Stream, c.Config.Durable)
			if err != nil {
				t.Fatalf("consumer %s: %v", c.Config.Durable, err)
			}
			if info.CachedInfo().Config.AckPolicy != jetstream.AckExplicitPolicy {
				t.Fatalf("consumer %s is not explicit-ack", c.Config.Durable)
			}
		}
	})
}

func TestPublishDeduplicates(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	c := streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: time.Unix(1677646800, 0).UTC(),
		Open: 1, High: 2, Low: 1, Close: 2, Volume: 1, Quality: streams.QualityLive}
	first, err := streams.Publish(t.Context(), js, &c)
	if err != nil {
		t.Fatal(err)
	}
	c.Quality = streams.QualityBackfilled
	second, err := streams.Publish(t.Context(), js, &c)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !second.Duplicate || second.Sequence != first.Sequence {
		t.Fatalf("acks %+v then %+v: want the second to be a duplicate of the first", first, second)
	}
	bad := c
	bad.High = -1
	if _, err := streams.Publish(t.Context(), js, &bad); !errors.Is(err, streams.ErrInvalidEvent) {
		t.Fatalf("publishing an invalid candle = %v, want ErrInvalidEvent", err)
	}
	stream, err := js.Stream(t.Context(), streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	if n := stream.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("MARKET holds %d messages, want 1", n)
	}
}

// TestEnsureOnCluster runs the topology with three replicas on a three-node
// cluster: the scale-out deployment, in one process.
func TestEnsureOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster start-up is slow")
	}
	servers, urls := natstest.Cluster(t, 3)
	_, js := natstest.ConnectURL(t, urls)
	ctx := t.Context()
	topo := streams.Declare(3)
	var err error
	// Until every peer has joined, the meta layer may refuse an R3 stream.
	natstest.WaitFor(t, time.Minute, "R3 topology", func() bool {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		err = streams.Ensure(actx, js, topo)
		return err == nil
	})
	info, err := js.Stream(ctx, streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.Replicas; got != 3 {
		t.Fatalf("MARKET replicas = %d, want 3", got)
	}
	c := streams.Candle{Symbol: "ETH/USD", Interval: streams.Interval1m, Start: time.Unix(1677646800, 0).UTC(),
		Open: 1, High: 2, Low: 1, Close: 2, Volume: 1, Quality: streams.QualityLive}
	if _, err := streams.Publish(ctx, js, &c); err != nil {
		t.Fatal(err)
	}
	// Take down the stream leader: the candle survives on the others.
	leader := info.CachedInfo().Cluster.Leader
	for _, s := range servers {
		if s.Name() == leader {
			s.Shutdown()
		}
	}
	natstest.WaitFor(t, time.Minute, "candle readable after leader loss", func() bool {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		stream, err := js.Stream(actx, streams.StreamMarket)
		if err != nil {
			return false
		}
		msg, err := stream.GetLastMsgForSubject(actx, c.Subject())
		return err == nil && msg.Header.Get(jetstream.MsgIDHeader) == c.MsgID()
	})
}
