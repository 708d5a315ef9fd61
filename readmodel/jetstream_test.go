package readmodel_test

import (
	"testing"

	"cryptostream/natstest"
	"cryptostream/readmodel"
	"cryptostream/readmodel/readmodeltest"
	"cryptostream/streams"
)

func TestJetStreamReaderContract(t *testing.T) {
	readmodeltest.Run(t, func(t *testing.T) readmodeltest.Setup {
		s := natstest.Server(t)
		_, js := natstest.Connect(t, s)
		if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
			t.Fatal(err)
		}
		return readmodeltest.Setup{JS: js, Reader: readmodel.NewJetStream(js), Sync: func(*testing.T) {}}
	})
}
