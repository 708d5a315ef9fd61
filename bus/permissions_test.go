package bus

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"cryptostream/natstest"
	"cryptostream/streams"
)

// lockedServer is a JetStream server whose only users are the roles', with
// their permissions, and the topology applied by admin. It returns each
// role's seed.
func lockedServer(t *testing.T) (*server.Server, map[string][]byte) {
	t.Helper()
	seeds, pubs := map[string][]byte{}, map[string]string{}
	for _, r := range Roles() {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seeds[r], _ = kp.Seed()
		pubs[r], _ = kp.PublicKey()
	}
	users, err := NkeyUsers(pubs)
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		JetStreamMaxStore: natstest.MaxStore, NoLog: true, NoSigs: true, Nkeys: users,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	_, js := connectAs(t, s, seeds, RoleAdmin)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	return s, seeds
}

// roleConn is a role's connection.
type roleConn struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func connectAs(t *testing.T, s *server.Server, seeds map[string][]byte, role string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	c := connectRole(t, s, seeds, role)
	return c.nc, c.js
}

func connectRole(t *testing.T, s *server.Server, seeds map[string][]byte, role string) roleConn {
	t.Helper()
	kp, err := nkeys.FromSeed(seeds[role])
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(s.ClientURL(), nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(InboxPrefix(role)),
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
	s, seeds := lockedServer(t)
	gw := connectRole(t, s, seeds, RoleGateway)
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
	_, admin := connectAs(t, s, seeds, RoleAdmin)
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
	s, seeds := lockedServer(t)
	ctx := t.Context()
	_, admin := connectAs(t, s, seeds, RoleAdmin)
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

	in := connectRole(t, s, seeds, RoleIngest)
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
