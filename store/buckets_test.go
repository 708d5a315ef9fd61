package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"cryptostream/natstest"
	"cryptostream/pgtest"
	"cryptostream/store"
	"cryptostream/streams"
)

// TestBucketsProjected: assets, users (without their password hash) and
// model records follow their buckets, deletes and bad entries included.
func TestBucketsProjected(t *testing.T) {
	js := bus(t)
	db := testDB(t, pgtest.AdminURL())
	ctx := t.Context()
	assets, err := js.KeyValue(ctx, streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	users, err := js.KeyValue(ctx, streams.BucketUsers)
	if err != nil {
		t.Fatal(err)
	}
	registry, err := js.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		t.Fatal(err)
	}
	put := func(kv interface {
		Put(context.Context, string, []byte) (uint64, error)
	}, key string, v any) {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// Present before the sink starts: the initial values are projected.
	put(assets, streams.AssetKey("BTC/USD"), streams.Asset{Symbol: "BTC/USD", AddedBy: "admin", AddedAt: now, KrakenKey: "XXBTZUSD"})
	put(assets, streams.AssetKey("ETH/USD"), streams.Asset{Symbol: "ETH/USD", AddedAt: now})
	put(users, streams.UserKey("alice"), streams.User{Username: "alice", Role: streams.RoleAdmin, PasswordHash: "$2a$secret", CreatedAt: now})
	if _, err := users.Put(ctx, "mallory", []byte("{not json")); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	sink := runSink(t, js, db, reg)
	waitSynced(t, sink)

	// Changes after the start are followed.
	model := streams.ModelRecord{Schema: streams.Schema{V: streams.SchemaVersion}, ID: "m-1", Symbol: "BTC/USD", Interval: streams.Interval1m, Horizon: 1,
		Features: []string{"r1"}, Coefficients: []float64{0.1, 0.2}, ResidualStd: 0.01, TrainFrom: now.Add(-time.Hour), TrainTo: now,
		Metrics: map[string]streams.Metrics{"test": {N: 10, MSE: 0.5, R2: 0.1}}, Champion: true, Decision: "beats baseline", CreatedAt: now}
	put(registry, streams.ModelKey("m-1"), model)
	if _, err := registry.Put(ctx, streams.ChampionKey(streams.Interval1m, "BTC/USD"), []byte("m-1")); err != nil {
		t.Fatal(err)
	}
	if err := assets.Delete(ctx, streams.AssetKey("ETH/USD")); err != nil {
		t.Fatal(err)
	}
	put(users, streams.UserKey("alice"), streams.User{Username: "alice", Role: streams.RoleUser, PasswordHash: "$2a$other", CreatedAt: now, Email: "a@example.org"})

	natstest.WaitProgress(t, time.Minute, "bucket changes projected", func() (bool, string) {
		var assetsN, models, champions int
		var role string
		err := db.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM assets), (SELECT count(*) FROM model_evaluations),
			(SELECT count(*) FROM champions WHERE model_id = 'm-1'), coalesce((SELECT role FROM users WHERE username = 'alice'), '')`).
			Scan(&assetsN, &models, &champions, &role)
		return err == nil && assetsN == 1 && models == 1 && champions == 1 && role == "user",
			fmt.Sprint(assetsN, models, champions, role)
	})
	var sym, krakenKey string
	if err := db.QueryRow(ctx, "SELECT symbol, kraken_key FROM assets").Scan(&sym, &krakenKey); err != nil || sym != "BTC/USD" || krakenKey != "XXBTZUSD" {
		t.Fatalf("assets: %q %q %v", sym, krakenKey, err)
	}
	var hashColumns int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name LIKE '%password%'").Scan(&hashColumns); err != nil || hashColumns != 0 {
		t.Fatalf("users has %d password columns (%v)", hashColumns, err)
	}
	var mse float64
	if err := db.QueryRow(ctx, "SELECT (metrics->'test'->>'mse')::float8 FROM model_evaluations WHERE model_id = 'm-1'").Scan(&mse); err != nil || mse != 0.5 {
		t.Fatalf("model metrics: %v %v", mse, err)
	}
	if got := testutil.ToFloat64(counter(t, reg, "cryptostream_sink_rejected_total")); got != 1 {
		t.Fatalf("rejected = %v, want 1 (the malformed user)", got)
	}
	evals, err := store.NewReader(db).ModelEvaluations(ctx, "BTC/USD", streams.Interval1m)
	if err != nil || len(evals) != 1 || !reflect.DeepEqual(evals[0], model) {
		t.Fatalf("ModelEvaluations = %+v, %v\nwant %+v", evals, err, model)
	}
}
