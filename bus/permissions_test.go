package bus

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/streams"
)

// lockedServer is a JetStream server whose only users are the roles', from
// the files `cryptostream nats-auth` writes, with the topology applied by
// admin. It returns the folder of the roles' seeds.
func lockedServer(t *testing.T) (*server.Server, string) {
	t.Helper()
	s, dir := lockedServerBare(t)
	_, js := connectAs(t, s, dir, RoleAdmin)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// lockedServerBare is lockedServer before the admin applies the topology.
func lockedServerBare(t *testing.T) (*server.Server, string) {
	t.Helper()
	dir := t.TempDir()
	pubs, err := WriteAuth(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The server takes its users from the file the operator includes,
	// so that what is tested is what is deployed.
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "server", AuthConfFile))
	if err != nil {
		t.Fatalf("nats-server refuses the generated auth.conf: %v", err)
	}
	want, err := NkeyUsers(pubs)
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Nkeys) != len(want) {
		t.Fatalf("auth.conf has %d users, want %d", len(opts.Nkeys), len(want))
	}
	for i, u := range opts.Nkeys {
		if u.Nkey != want[i].Nkey || !reflect.DeepEqual(u.Permissions, want[i].Permissions) {
			t.Fatalf("auth.conf user %d: %+v %+v, want %+v %+v", i, u.Nkey, u.Permissions, want[i].Nkey, want[i].Permissions)
		}
	}
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir = "127.0.0.1", -1, true, t.TempDir()
	opts.JetStreamMaxStore = natstest.MaxStore
	return natstest.Start(t, opts), dir
}

// roleConn is a role's connection.
type roleConn struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func connectAs(t *testing.T, s *server.Server, dir, role string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	c := connectRole(t, s, dir, role)
	return c.nc, c.js
}

func connectRole(t *testing.T, s *server.Server, dir, role string) roleConn {
	t.Helper()
	key, err := nats.NkeyOptionFromSeed(filepath.Join(dir, role, KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), key, nats.CustomInboxPrefix(InboxPrefix(role)),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return roleConn{nc, js}
}

// refused checks that the server refused subject. The server drops what a
// user may not publish or subscribe to and answers with an error before
// it answers the next ping, so after a flush the connection's last error
// is that refusal, or there was none.
func (c roleConn) refused(t *testing.T, what, subject string) {
	t.Helper()
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	err := c.nc.LastError()
	if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `"`+subject+`"`) {
		t.Fatalf("%s was not refused (last error %v)", what, err)
	}
}

// Issue 16: the gateway's user is refused publishing to a MARKET subject,
// and may publish what it owns (an audit event).
func TestGatewayCannotPublishCandles(t *testing.T) {
	s, dir := lockedServer(t)
	gw := connectRole(t, s, dir, RoleGateway)
	ctx := t.Context()

	candle := streams.CandleSubject(streams.Interval1m, "BTC/USD")
	if err := gw.nc.Publish(candle, []byte(`{"close":1}`)); err != nil {
		t.Fatal(err)
	}
	gw.refused(t, "the gateway's candle", candle)
	// Through JetStream too: no PubAck, and the stream holds nothing.
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := gw.js.Publish(pctx, candle, []byte(`{"close":1}`))
	cancel()
	if err == nil {
		t.Fatal("the gateway's candle was stored")
	}
	_, admin := connectAs(t, s, dir, RoleAdmin)
	st, err := admin.Stream(ctx, streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("MARKET holds %d messages after the gateway's attempts", n)
	}

	ev := &streams.AuditEvent{ID: "a1", Action: "auth.login", Actor: "bob", Outcome: "ok", At: time.Now()}
	if _, err := streams.Publish(ctx, gw.js, ev); err != nil {
		t.Fatalf("the gateway cannot publish its audit event: %v", err)
	}
	// Nor may it read another role's replies.
	if _, err := gw.nc.SubscribeSync(InboxPrefix(RoleSink) + ".>"); err != nil {
		t.Fatal(err)
	}
	gw.refused(t, "the gateway's subscription to the sink's inbox", InboxPrefix(RoleSink)+".>")
}

// Issue 16: the ingester's user is refused reading the users bucket, by
// every way in (the bucket's info, a direct get, a consumer, the raw
// subjects), and reads the assets bucket it needs.
func TestIngesterCannotReadUsers(t *testing.T) {
	s, dir := lockedServer(t)
	ctx := t.Context()
	_, admin := connectAs(t, s, dir, RoleAdmin)
	users, err := admin.KeyValue(ctx, streams.BucketUsers)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := users.Put(ctx, "alice", []byte(`{"hash":"secret"}`)); err != nil {
		t.Fatal(err)
	}
	assets, err := admin.KeyValue(ctx, streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := assets.Put(ctx, "BTC-USD", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}

	in := connectRole(t, s, dir, RoleIngest)
	kv, err := in.js.KeyValue(ctx, streams.BucketAssets)
	if err != nil {
		t.Fatalf("the ingester cannot open assets: %v", err)
	}
	if _, err := kv.Get(ctx, "BTC-USD"); err != nil {
		t.Fatalf("the ingester cannot read assets: %v", err)
	}

	for _, subject := range []string{
		"$JS.API.STREAM.INFO.KV_" + streams.BucketUsers,
		"$JS.API.DIRECT.GET.KV_" + streams.BucketUsers + ".$KV." + streams.BucketUsers + ".alice",
		"$JS.API.STREAM.MSG.GET.KV_" + streams.BucketUsers,
		"$JS.API.CONSUMER.CREATE.KV_" + streams.BucketUsers,
	} {
		if err := in.nc.PublishRequest(subject, in.nc.NewRespInbox(), []byte(`{"last_by_subj":"$KV.users.alice"}`)); err != nil {
			t.Fatal(err)
		}
		in.refused(t, "the ingester's "+subject, subject)
	}
	sub := "$KV." + streams.BucketUsers + ".>"
	if _, err := in.nc.SubscribeSync(sub); err != nil {
		t.Fatal(err)
	}
	in.refused(t, "the ingester's subscription to the users subjects", sub)
	// Nor may it change the users bucket's stream so as to copy it into
	// one it reads.
	create := "$JS.API.STREAM.CREATE.MARKET2"
	if err := in.nc.PublishRequest(create, in.nc.NewRespInbox(), []byte(`{"name":"MARKET2","sources":[{"name":"KV_users"}]}`)); err != nil {
		t.Fatal(err)
	}
	in.refused(t, "the ingester's stream create", create)
}

// Every role's table entry names only declared streams and buckets, and a
// role that is not in the table has no permissions.
func TestPermissionsCoverDeclaredStreams(t *testing.T) {
	declared := map[string]bool{}
	for _, n := range streams.Declare(1).StreamNames() {
		declared[n] = true
	}
	for _, r := range Roles() {
		p, err := Permissions(r)
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		if len(p.Publish.Allow) == 0 || len(p.Subscribe.Allow) == 0 {
			t.Errorf("%s has no permissions", r)
		}
		for _, s := range visibleStreams(r, streams.Declare(1).StreamNames()) {
			if !declared[s] {
				t.Errorf("%s sees undeclared stream %s", r, s)
			}
		}
	}
	for r, a := range roleAccess {
		all := a.write
		all = append(all, a.read...)
		for _, b := range append(append([]string{}, a.kvRead...), a.kvWrite...) {
			all = append(all, "KV_"+b)
		}
		for _, b := range append(append([]string{}, a.objRead...), a.objWrite...) {
			all = append(all, "OBJ_"+b)
		}
		for _, s := range all {
			if !declared[s] {
				t.Errorf("%s names %s, which the topology does not declare", r, s)
			}
		}
	}
	if _, err := Permissions("nobody"); err == nil {
		t.Error("a role with no table entry got permissions")
	}
}

// nats-auth run twice keeps every seed, so that a rerun does not lock the
// running roles out; a rotation replaces the one asked for.
func TestWriteAuthKeepsAndRotates(t *testing.T) {
	dir := t.TempDir()
	first, err := WriteAuth(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := WriteAuth(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, again) {
		t.Fatal("a second nats-auth changed the keys")
	}
	rotated, err := WriteAuth(dir, []string{RoleGateway})
	if err != nil {
		t.Fatal(err)
	}
	for r, k := range first {
		if (rotated[r] != k) != (r == RoleGateway) {
			t.Errorf("%s: key %s -> %s after rotating the gateway's", r, k, rotated[r])
		}
	}
	conf, err := os.ReadFile(filepath.Join(dir, "server", AuthConfFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(conf), first[RoleGateway]) || !strings.Contains(string(conf), rotated[RoleGateway]) {
		t.Error("auth.conf does not hold the rotated key alone")
	}
	fi, err := os.Stat(filepath.Join(dir, RoleGateway, KeyFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the gateway's seed: %v, %v", fi.Mode(), err)
	}
	if _, err := WriteAuth(dir, []string{"nobody"}); err == nil {
		t.Error("rotating an unknown role was accepted")
	}
}

// A role's bus waits for the admin to apply the topology rather than try
// to (its user may not), then is ready, and its metrics read only the
// streams it may see: no request of it is refused.
func TestRoleBusVerifiesTopology(t *testing.T) {
	s, dir := lockedServerBare(t)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	opened := make(chan error, 1)
	var b *Bus
	go func() {
		var err error
		b, err = Open(t.Context(), Config{URL: s.ClientURL(), Replicas: 1, Name: "test-gateway", Role: RoleGateway,
			NKeyFile: filepath.Join(dir, RoleGateway, KeyFileName)}, log)
		opened <- err
	}()
	natstest.WaitFor(t, time.Minute, "the gateway to wait for the topology", func() bool {
		return strings.Contains(logs.String(), "waiting for the admin")
	})
	_, admin := connectAs(t, s, dir, RoleAdmin)
	if err := streams.Ensure(t.Context(), admin, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("open as the gateway: %v\n%s", err, logs.String())
	}
	defer b.Close()
	if err := b.Ready(t.Context()); err != nil {
		t.Fatalf("the gateway is not ready: %v", err)
	}
	reg := prometheus.NewRegistry()
	if err := b.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "cryptostream_stream_info_up" {
			continue
		}
		for _, m := range mf.GetMetric() {
			stream := m.GetLabel()[0].GetValue()
			seen[stream] = true
			if m.GetGauge().GetValue() != 1 {
				t.Errorf("the gateway cannot read the info of %s", stream)
			}
		}
	}
	if !seen[streams.StreamMarket] || seen["KV_"+streams.BucketWebhookDeliveries] {
		t.Errorf("the gateway's stream metrics cover %v", seen)
	}
	if err := b.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.NC.LastError(); err != nil {
		t.Fatalf("a request of the gateway's bus was refused: %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Issue 16: the permissions table of docs/operations.md is the one the
// servers enforce (AccessTable, from roleAccess), between its markers.
func TestOperationsDocPermissionsTable(t *testing.T) {
	raw, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- permissions table: generated from bus.AccessTable -->\n", "<!-- end of permissions table -->"
	doc := string(raw)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/operations.md has no permissions table between %q and %q", begin, end)
	}
	if got, want := doc[i+len(begin):j], AccessTable(); got != want {
		t.Fatalf("docs/operations.md's permissions table differs from bus.AccessTable; replace it with:\n%s", want)
	}
}

// A partition owner writes and reads back its fence marker in the stream
// it publishes to (pipeline's server-side fence), as its own user.
func TestPartitionOwnersClaimTheirFence(t *testing.T) {
	s, dir := lockedServer(t)
	for role, stream := range map[string]string{RoleFeatures: streams.StreamFeatures, RolePredictor: streams.StreamPredictions} {
		t.Run(role, func(t *testing.T) {
			ctx := t.Context()
			_, js := connectAs(t, s, dir, role)
			subject := streams.FenceSubject(stream, role, "BTC-USD")
			if name, err := js.StreamNameBySubject(ctx, subject); err != nil || name != stream {
				t.Fatalf("stream of %s: %q, %v; want %s", subject, name, err, stream)
			}
			st, err := js.Stream(ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.GetLastMsgForSubject(ctx, subject); !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Fatalf("read of a marker not yet written: %v, want not found", err)
			}
			ack, err := js.Publish(ctx, subject, []byte(`{"epoch":1}`), jetstream.WithExpectLastSequencePerSubject(0))
			if err != nil {
				t.Fatalf("write of the marker: %v", err)
			}
			m, err := st.GetLastMsgForSubject(ctx, subject)
			if err != nil || m.Sequence != ack.Sequence {
				t.Fatalf("marker read back: %v, %v; want seq %d", m, err, ack.Sequence)
			}
		})
	}
}

// The predictor reads back its own forecasts still waiting for their
// target when it warms a series after a takeover or a lost lease
// (Predictions.Warm tails PREDICTIONS): as its own user, beside stress-ng,
// TestRolesRunAsTheirOwnNATSUsers saw "Permissions Violation for Publish
// to $JS.API.CONSUMER.CREATE.PREDICTIONS..." and the warm failed.
func TestPredictorTailsItsForecasts(t *testing.T) {
	s, dir := lockedServer(t)
	ctx := t.Context()
	_, js := connectAs(t, s, dir, RolePredictor)
	subject := streams.PredictionSubject(streams.Interval1m, "BTC/USD")
	if _, err := js.Publish(ctx, subject, []byte(`{"v":1}`)); err != nil {
		t.Fatalf("publish a forecast: %v", err)
	}
	msgs, err := streams.Tail(ctx, js, streams.StreamPredictions, subject, 10, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("tail of its own forecasts: %d messages, %v", len(msgs), err)
	}
}
