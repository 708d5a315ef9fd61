package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"cryptostream/pgtest"
	"cryptostream/store"
)

// TestMigrateConcurrentlyAndAgain starts like several sinks and gateways at
// once on an empty database, then migrates again: one schema, no error.
func TestMigrateConcurrentlyAndAgain(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), pgtest.Database(t, pgtest.AdminURL()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = store.Migrate(t.Context(), pool) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(t.Context(), pool); err != nil {
		t.Fatalf("migrating a migrated database: %v", err)
	}
	var applied int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM goose_db_version WHERE version_id > 0").Scan(&applied); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if applied != len(files) {
		t.Fatalf("%d migrations recorded, want one per file (%d)", applied, len(files))
	}
	var tables int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('candles','predictions','users','audit_events')").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 4 {
		t.Fatalf("%d of the 4 core tables exist", tables)
	}
}
