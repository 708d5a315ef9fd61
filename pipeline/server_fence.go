package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// The server-side fence.
//
// The local fence (partition_fence.go) stops an owner at its own deadline,
// but a process that stalls after it stepped an input and before it sent
// the outputs (a pause of the process, a stop of its machine) sends them
// when it resumes, however late, and so does one whose clock or guard is
// wrong. The server fences those off: each owner of a partition holds an
// epoch, the revision of the lease it took (every take of a lease writes a
// higher revision), and before its first output into a stream it writes an
// owner marker with its epoch to the partition's fence subject in that
// stream (streams.FenceSubject), with a compare-and-swap on the marker it
// read (Nats-Expected-Last-Subject-Sequence), unless the marker already
// holds a higher epoch: then the partition is someone else's. The stored
// sequence of its marker is its token. Its outputs carry the token as
// Nats-Expected-Last-Subject-Sequence, checked against the fence subject
// (Nats-Expected-Last-Subject-Sequence-Subject): once a new owner wrote its
// marker, the server refuses every output the old owner sends with the
// token, atomically with storing, whatever either process's clock says.
//
// What carries the token: the first message of each fast-ingest batch, and
// every output published on its own (the one-at-a-time path after a cut
// batch, and every output into a stream that takes no batches). In gap
// mode "fail" a refused first message ends the batch, and the server
// stores nothing sent into it afterwards, so a batch the old owner starts
// after the takeover stores nothing. Not every message of a batch carries
// it: a replicated stream refuses an expectation on a subject while
// another expectation on that subject is still being replicated, which
// would refuse all but one message of each batch in flight. So messages
// the old owner appends to a batch the server accepted before the
// takeover are not checked one by one. Those are outputs of inputs it
// stepped before it stalled, at most its two flights: the new owner
// rewinds the consumer to its ack floor and publishes the same outputs in
// the same order under the same msg-ids, so the server stores each once,
// in order, whichever arrives first; and the old owner's pin is lifted, so
// it receives no input to step after that. The streams fenced are those
// the stage declares (streams.Partitioned.Outputs); others, such as the
// JOBS work queue the trainer's schedule writes, are not. A declared
// stream that holds no fence subject (a deployment whose topology was not
// applied again) is published to unfenced, and the owner says so at Warn.

// ErrFenced refuses the outputs of a partition whose owner marker holds a
// later owner's epoch: another instance owns it now.
var ErrFenced = errors.New("pipeline: partition fenced off by a later owner")

// serverFenceOff turns the server-side fence off for the partitions taken
// from then on, for a test to show what it stops and a benchmark to
// measure its cost.
var serverFenceOff atomic.Bool

// Headers of the server's check, spelled as nats-server reads them.
const (
	hdrExpectedLastSubjSeq     = "Nats-Expected-Last-Subject-Sequence"
	hdrExpectedLastSubjSeqSubj = "Nats-Expected-Last-Subject-Sequence-Subject"
)

// serverFence is one partition owner's standing in its output streams.
type serverFence struct {
	stage, part, instance string
	// outputs are the streams fenced.
	outputs []string
	// epoch is the revision of the lease this owner took.
	epoch uint64
	// lost shuts the partition's local fence and stops its runner once
	// it is fenced off. (A marker is written through the partition's
	// fenced bus, only while the local fence is open, so that an owner
	// past its deadline cannot claim back what a later owner took once
	// its marker was removed by a stream limit.)
	lost func()
	// Owned by the Run goroutine: the tokens by stream, and whether the
	// partition was found fenced off.
	tokens map[string]fenceToken
	off    bool
}

// fenceToken is the owner's marker in one stream: its subject and stored
// sequence, or none when the stream holds no fence subject.
type fenceToken struct {
	subject string
	seq     uint64
	none    bool
}

// marker is an owner marker's body.
type marker struct {
	Epoch    uint64 `json:"epoch"`
	Instance string `json:"instance"`
}

// token is the expectation an output into stream carries: nil when the
// runner owns no partition, the server fence is off, or the stream holds
// no fence subject.
func (r *Runner) token(ctx context.Context, stream string) (*fenceToken, error) {
	if r.fence == nil || !slices.Contains(r.fence.outputs, stream) {
		return nil, nil
	}
	tok, err := r.fenceToken(ctx, stream)
	if err != nil || tok.none {
		return nil, err
	}
	return &tok, nil
}

// fenceToken is this owner's token in stream, claimed on first use.
func (r *Runner) fenceToken(ctx context.Context, stream string) (fenceToken, error) {
	f := r.fence
	if tok, ok := f.tokens[stream]; ok {
		return tok, nil
	}
	tok, err := r.claim(ctx, stream)
	if errors.Is(err, ErrFenced) && !f.off {
		f.off = true
		r.m.fenced.Inc()
		r.log.Warn("another instance owns the partition now: its outputs are refused; stopping it",
			"partition", f.part, "err", err)
		f.lost()
	}
	if err != nil {
		return tok, err
	}
	f.tokens[stream] = tok
	return tok, nil
}

// claim writes this owner's marker into stream, or finds it written, and
// fails with ErrFenced when the marker holds a later epoch.
func (r *Runner) claim(ctx context.Context, stream string) (fenceToken, error) {
	f := r.fence
	subject := streams.FenceSubject(stream, f.stage, f.part)
	cctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	holder, err := r.js.StreamNameBySubject(cctx, subject)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fenceToken{}, fmt.Errorf("pipeline: fence of %s: %w", stream, err)
	}
	if holder != stream {
		r.log.Warn("output stream holds no fence subject: a stalled owner's outputs to it are not refused by the server (apply the topology again)",
			"stream", stream, "subject", subject)
		return fenceToken{subject: subject, none: true}, nil
	}
	s, err := r.js.Stream(cctx, stream)
	if err != nil {
		return fenceToken{}, fmt.Errorf("pipeline: fence of %s: %w", stream, err)
	}
	body, _ := json.Marshal(marker{Epoch: f.epoch, Instance: f.instance})
	// A read from a replica that lags, or another owner's write between
	// the read and the swap, only fails the swap: read again.
	for range 5 {
		var last uint64
		m, err := s.GetLastMsgForSubject(cctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return fenceToken{}, fmt.Errorf("pipeline: read fence %s: %w", subject, err)
		default:
			var cur marker
			if err := json.Unmarshal(m.Data, &cur); err != nil {
				// Not ours to judge: write over it, by sequence.
				r.log.Warn("unreadable fence marker", "subject", subject, "seq", m.Sequence, "err", err)
			}
			switch {
			case cur.Epoch > f.epoch:
				return fenceToken{}, fmt.Errorf("%w: %s holds epoch %d of %s, this owner's is %d", ErrFenced, subject, cur.Epoch, cur.Instance, f.epoch)
			case cur.Epoch == f.epoch:
				return fenceToken{subject: subject, seq: m.Sequence}, nil
			}
			last = m.Sequence
		}
		msg := nats.NewMsg(subject)
		msg.Data = body
		msg.Header.Set(hdrExpectedLastSubjSeq, strconv.FormatUint(last, 10))
		// Through the partition's fenced bus: refused once the local
		// fence shut.
		ack, err := r.js.PublishMsg(cctx, msg)
		switch {
		case err == nil:
			r.log.Info("partition fence claimed", "stream", stream, "partition", f.part, "epoch", f.epoch, "seq", ack.Sequence)
			return fenceToken{subject: subject, seq: ack.Sequence}, nil
		case !wrongLastSeq(err):
			return fenceToken{}, fmt.Errorf("pipeline: write fence %s: %w", subject, err)
		}
	}
	return fenceToken{}, fmt.Errorf("pipeline: fence %s kept changing under this owner", subject)
}

// wrongLastSeq says the server refused a publish's expected sequence.
func wrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.ErrorCode(10071) || apiErr.ErrorCode == jetstream.ErrorCode(10164))
}

// fenced handles a publish the server refused on its expectation: either
// another owner's marker stands (the partition is stopped, ErrFenced), or
// this owner's token is stale (a marker removed by a limit, or another
// expectation on the subject still replicating): the token is claimed
// again for the retry.
func (r *Runner) fenced(ctx context.Context, stream string, cause error) error {
	delete(r.fence.tokens, stream)
	if _, err := r.fenceToken(ctx, stream); err != nil {
		return err
	}
	return cause
}

// withToken is m carrying tok's expectation, m itself left as it was.
func withToken(m *nats.Msg, tok fenceToken) *nats.Msg {
	out := *m
	out.Header = maps.Clone(m.Header)
	if out.Header == nil {
		out.Header = nats.Header{}
	}
	out.Header.Set(hdrExpectedLastSubjSeq, strconv.FormatUint(tok.seq, 10))
	out.Header.Set(hdrExpectedLastSubjSeqSubj, tok.subject)
	return &out
}
