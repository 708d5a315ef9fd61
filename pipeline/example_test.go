package pipeline_test

import (
	"context"
	"fmt"

	"cryptostream/pipeline"
)

// A stage runs over stored events with no NATS: what the backtest and the
// alert-rule preview do.
func ExampleReplay() {
	events := []pipeline.Msg{
		{Stream: "IN", Subject: "in.a", Seq: 1, Data: []byte("2")},
		{Stream: "IN", Subject: "in.b", Seq: 2, Data: []byte("5")},
		{Stream: "IN", Subject: "in.a", Seq: 3, Data: []byte("3")},
	}
	for out, err := range pipeline.Replay(context.Background(), newSummer(), pipeline.Msgs(events), pipeline.ReplayConfig{}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		s := out.Event.(*sum)
		fmt.Println(out.In.Seq, s.Key, s.Sum)
	}
	// Output:
	// 1 a 2
	// 2 b 5
	// 3 a 5
}
