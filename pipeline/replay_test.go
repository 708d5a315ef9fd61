package pipeline_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"cryptostream/pipeline"
	"cryptostream/streams"
)

// stored is what IN holds after inputs(keys, 0, n).
func stored(keys []string, n int) []pipeline.Msg {
	var out []pipeline.Msg
	for i := range n {
		out = append(out, pipeline.Msg{Stream: "IN", Subject: "in." + keys[i%len(keys)], Seq: uint64(i + 1), Data: []byte(strconv.Itoa(i))})
	}
	return out
}

func collect(t *testing.T, seq func(func(pipeline.Output, error) bool)) ([]sum, error) {
	t.Helper()
	var got []sum
	for out, err := range seq {
		if err != nil {
			return got, err
		}
		s, ok := out.Event.(*sum)
		if !ok || s.Seq != out.In.Seq {
			t.Fatalf("output %+v of input %d", out.Event, out.In.Seq)
		}
		got = append(got, *s)
	}
	return got, nil
}

// TestReplay: the same stage over stored events, with no NATS, yields what
// the runner stores, rejections reported and skipped, redeliveries ignored.
func TestReplay(t *testing.T) {
	keys := []string{"a", "b", "c"}
	msgs := stored(keys, 300)
	bad := msgs[100]
	bad.Data = []byte("not a number")
	msgs[100] = bad
	// A redelivery of an input already handled.
	msgs = append(msgs[:201], append([]pipeline.Msg{msgs[150]}, msgs[201:]...)...)
	var rejected []uint64
	got, err := collect(t, pipeline.Replay(t.Context(), newSummer(), pipeline.Msgs(msgs), pipeline.ReplayConfig{
		Rejected: func(m pipeline.Msg, err error) {
			if !errors.Is(err, streams.ErrPermanent) {
				t.Errorf("rejection %v is not permanent", err)
			}
			rejected = append(rejected, m.Seq)
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	check(t, got, want(keys, 300, map[int]bool{100: true}))
	if len(rejected) != 1 || rejected[0] != 101 {
		t.Fatalf("rejected %v, want [101]", rejected)
	}
}

// TestReplayFromTheMiddle: replaying a range with a History over what
// precedes it warms each series as the runner does after a restart.
func TestReplayFromTheMiddle(t *testing.T) {
	keys := []string{"a", "b"}
	msgs := stored(keys, 200)
	got, err := collect(t, pipeline.Replay(t.Context(), newSummer(), pipeline.Msgs(msgs[120:]), pipeline.ReplayConfig{History: pipeline.MemoryHistory(msgs)}))
	if err != nil {
		t.Fatal(err)
	}
	check(t, got, want(keys, 200, nil)[120:])
}

// TestReplayStops: a failure the runner would retry ends the replay with
// the error, and so does breaking out of the loop.
func TestReplayStops(t *testing.T) {
	keys := []string{"a"}
	st := newSummer()
	st.fail = func(m pipeline.Msg) bool { return m.Seq == 10 }
	got, err := collect(t, pipeline.Replay(t.Context(), st, pipeline.Msgs(stored(keys, 20)), pipeline.ReplayConfig{}))
	if err == nil || errors.Is(err, streams.ErrPermanent) || len(got) != 9 {
		t.Fatalf("%d outputs, err %v: want 9 and the transient failure", len(got), err)
	}
	n := 0
	for range pipeline.Replay(t.Context(), newSummer(), pipeline.Msgs(stored(keys, 20)), pipeline.ReplayConfig{}) {
		if n++; n == 5 {
			break
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := collect(t, pipeline.Replay(ctx, newSummer(), pipeline.Msgs(stored(keys, 20)), pipeline.ReplayConfig{})); !errors.Is(err, context.Canceled) {
		t.Fatalf("replay on an ended context: %v", err)
	}
}
