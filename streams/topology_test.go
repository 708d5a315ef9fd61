package streams_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
	want := topo.StreamNames()
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
	// Consumers take the replicas of their stream: a durable's position
	// survives the loss of a node as its stream does.
	for _, spec := range topo.Consumers {
		natstest.WaitAtLeast(t, time.Minute, spec.Config.Durable+" replicas", 2, func() int {
			c, err := js.Consumer(ctx, spec.Stream, spec.Config.Durable)
			if err != nil {
				return 0
			}
			ci, err := c.Info(ctx)
			if err != nil || ci.Cluster == nil {
				return 0
			}
			return len(ci.Cluster.Replicas)
		})
	}
	// Issue 9: a role started with one replica (ingest and import
	// hard-coded it) scales nothing down, and says so.
	diffs, err := streams.EnsureReport(ctx, js, streams.Declare(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range wantStreamNames(topo) {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().Config.Replicas; got != 3 {
			t.Errorf("%s replicas = %d after an R1 Ensure, want 3", name, got)
		}
		if !slices.ContainsFunc(diffs, func(d streams.Difference) bool { return d.Stream == name && d.Limit == "replicas" && d.Kept }) {
			t.Errorf("no kept-replicas difference reported for %s in %v", name, diffs)
		}
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

// Issue 9: applying the topology again keeps a limit an operator raised and
// reports it, and puts back one an operator lowered.
func TestEnsureKeepsRaisedLimits(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	topo := streams.Declare(1)
	if err := streams.Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	update := func(name string, change func(*jetstream.StreamConfig)) {
		t.Helper()
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		change(&cfg)
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("operator update of %s: %v", name, err)
		}
	}
	// The operator keeps two years of audit trail, more user history, and
	// (by mistake) a week of features.
	update(streams.StreamAudit, func(c *jetstream.StreamConfig) { c.MaxAge = 800 * 24 * time.Hour })
	update("KV_"+streams.BucketUsers, func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 20 })
	update(streams.StreamFeatures, func(c *jetstream.StreamConfig) { c.MaxAge = 7 * 24 * time.Hour })

	diffs, err := streams.EnsureReport(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	config := func(name string) jetstream.StreamConfig {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config
	}
	if got := config(streams.StreamAudit).MaxAge; got != 800*24*time.Hour {
		t.Errorf("AUDIT max age = %s after Ensure, want the operator's 800 days", got)
	}
	if got := config("KV_" + streams.BucketUsers).MaxMsgsPerSubject; got != 20 {
		t.Errorf("users history = %d after Ensure, want the operator's 20", got)
	}
	if got := config(streams.StreamFeatures).MaxAge; got != 400*24*time.Hour {
		t.Errorf("FEATURES max age = %s after Ensure, want the declared 400 days back", got)
	}
	want := map[string]bool{"AUDIT max_age": true, "KV_users max_msgs_per_subject": true, "FEATURES max_age": false}
	for _, d := range diffs {
		k := d.Stream + " " + d.Limit
		kept, ok := want[k]
		if !ok {
			t.Errorf("unexpected difference %s", d)
			continue
		}
		if d.Kept != kept {
			t.Errorf("%s: kept = %v, want %v", d, d.Kept, kept)
		}
		delete(want, k)
	}
	for k := range want {
		t.Errorf("no difference reported for %s", k)
	}
	// The raised values stay raised on every later start, reported each time.
	diffs, err = streams.EnsureReport(ctx, js, topo)
	if err != nil || len(diffs) != 2 || config(streams.StreamAudit).MaxAge != 800*24*time.Hour {
		t.Fatalf("third Ensure: %v, %v", diffs, err)
	}
}

// Issue 11 item 2: every stream and bucket is bounded, so no flood of
// events (AUDIT) can fill the disk.
func TestEveryStreamBounded(t *testing.T) {
	topo := streams.Declare(1)
	for _, s := range topo.Streams {
		if s.MaxBytes <= 0 {
			t.Errorf("stream %s has no MaxBytes", s.Name)
		}
	}
	for _, kv := range topo.KeyValues {
		if kv.MaxBytes <= 0 {
			t.Errorf("bucket %s has no MaxBytes", kv.Bucket)
		}
	}
	for _, o := range topo.ObjectStores {
		if o.MaxBytes <= 0 {
			t.Errorf("object store %s has no MaxBytes", o.Bucket)
		}
	}
}

// Issue 11 item 2: on a small disk the bounds shrink to fit the server's
// store, which refuses a stream whose bound it cannot reserve; and a
// stream from before the bounds (unlimited, no record) gets its bound.
func TestFitSmallStoreAndBoundLegacyStreams(t *testing.T) {
	const small = 1 << 30
	topo, changed := streams.Declare(1).Fit(small, 0)
	if !changed {
		t.Fatal("a 1 GiB store did not change a topology that declares more")
	}
	if file, _ := topo.StoreBytes(); file > small {
		t.Fatalf("fitted topology reserves %d bytes of a %d store", file, small)
	}
	if _, changed := streams.Declare(1).Fit(1<<50, 1<<50); changed {
		t.Fatal("a store large enough changed the topology")
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		JetStreamMaxStore: small, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(s.Shutdown)
	_, js := natstest.Connect(t, s)
	// The premise: the unfitted bounds do not fit this store.
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err == nil {
		t.Fatal("a 1 GiB store took the unfitted topology")
	}
	// A stream as an older release declared it: no bound, no record.
	legacy := topo.Streams[slices.IndexFunc(topo.Streams, func(c jetstream.StreamConfig) bool { return c.Name == streams.StreamAudit })]
	legacy.MaxBytes, legacy.Metadata = -1, nil
	_ = js.DeleteStream(t.Context(), streams.StreamAudit)
	if _, err := js.CreateStream(t.Context(), legacy); err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(t.Context(), js, topo); err != nil {
		t.Fatalf("the fitted topology on a 1 GiB store: %v", err)
	}
	st, err := js.Stream(t.Context(), streams.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxBytes; got <= 0 || got > small {
		t.Fatalf("AUDIT MaxBytes = %d after Ensure, want its fitted bound", got)
	}
}
