package store_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/pgtest"
	"cryptostream/readmodel/readmodeltest"
	"cryptostream/store"
)

// TestReaderContract runs the readmodel contract against the projection,
// fed by the sink from the same streams the JetStream reader reads.
func TestReaderContract(t *testing.T) {
	readmodeltest.Run(t, func(t *testing.T) readmodeltest.Setup {
		js := bus(t)
		db := testDB(t, pgtest.AdminURL())
		sink := runSink(t, js, db, prometheus.NewRegistry())
		return readmodeltest.Setup{JS: js, Reader: store.NewReader(db), Sync: func(t *testing.T) { waitSynced(t, sink) }}
	})
}
