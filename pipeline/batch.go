package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Outputs go to a stream that allows it (allow_batched, nats-server 2.14)
// as one fast-ingest batch in gap mode "fail": the server stores a batch's
// messages only in order and without a hole, so that a message lost in a
// leader change, refused or dropped makes the server store nothing after
// it, where plain asynchronous publishes let the new leader store what
// came after. What is stored is then a prefix, and the rest goes again in
// order. A duplicate msg-id inside a fast batch is skipped and the batch
// goes on, so a redelivery after a kill republishes what was stored
// without harm. (An atomic batch, 2.12, refuses a whole batch that holds
// one duplicate, which every redelivery after a kill does.)
//
// The protocol lives in the reply subject,
// <inbox>.<batch id>.<flow>.<gap mode>.<batch seq>.<op>.$FI, and the server
// answers on it: a flow ack ({"type":"ack","seq":N}: 1..N are stored)
// every flow messages, a gap or an error notice, and a PubAck with the
// count stored when the batch ends. Each flow ack says when the next one
// is due (after "msgs" more stored), so the runner knows at any time
// whether what it sent will be confirmed by a flow ack still to come; when
// it waits for an output that none will cover, it ends the batch, whose
// PubAck then confirms everything sent. It asks for a flow ack every
// batchFlow messages rather than every message: a flow ack costs the server
// a JSON encode and a message, and the runner a delivery, about as much as
// the stored message itself (BenchmarkPipelineThroughput). It keeps one
// batch per stream open across consecutive flights, so that the next
// flight can never be stored ahead of a hole in the previous one, and opens
// the next batch only once the last one has ended with everything stored;
// an idle runner ends its batches (the server drops a batch after 10s
// without messages).

const (
	batchOpStart     = "0"
	batchOpAppend    = "1"
	batchOpCommitEOB = "3"
	// batchFlow asks for a flow ack after every 64 messages stored at
	// most (the server starts lower when several batches share a stream
	// and ramps up). A flight is 128 inputs in a backlog, so the acks that
	// land it come from the next flight's first outputs; a flight that no
	// flow ack will cover ends its batch instead (see needAck). 64 rather
	// than 16: fewer acks cost the server and the runner less per output,
	// and a backlog's flights are still landed by flow acks.
	batchFlow = "64"
)

// errBatchEnded says a batch ended before the output was stored.
var errBatchEnded = errors.New("pipeline: fast batch ended")

// fastBatch is one open batch into one stream.
type fastBatch struct {
	stream string
	id     string
	// prefix is the reply subject up to the batch sequence.
	prefix string
	// Owned by the Run goroutine: the last sequence sent, the subject it
	// went to (an end of batch goes to it), and how many flights not yet
	// landed sent outputs into the batch.
	sent    uint64
	subject string
	flights int

	// committing: an end of batch was sent, whose PubAck will confirm
	// what was stored; nothing more may be sent into the batch.
	committing bool

	mu sync.Mutex
	// acked: every message up to it is stored.
	acked uint64
	// every is how many stored messages the next flow ack comes after
	// the one for acked (0: not yet told).
	every uint64
	// ended: the server ended the batch, or the runner gave up on it;
	// nothing more may be sent into it.
	ended bool
	why   error
	// wake is signalled at every change; the Run goroutine is the one
	// waiter, and a signal it finds stale only makes it look again.
	wake chan struct{}
}

func (b *fastBatch) state() (acked uint64, ended bool, wake <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.acked, b.ended, b.wake
}

// needAck makes sure that the server will say whether seq is stored: it
// ends the batch when no flow ack still to come would cover what was sent
// (the first message's answer says when the first is due). Called from the
// Run goroutine before each wait for seq, and again at every wake, since
// each flow ack says when the next is due.
func (bs *batches) needAck(b *fastBatch, seq uint64) {
	if b.committing {
		return
	}
	b.mu.Lock()
	acked, every, ended := b.acked, b.every, b.ended
	b.mu.Unlock()
	if ended || acked >= seq || every == 0 || acked+every <= b.sent {
		return
	}
	bs.commit(b)
}

// commit ends b after what was sent: the server answers with a PubAck once
// all of it is stored, with the count stored.
func (bs *batches) commit(b *fastBatch) {
	b.committing = true
	eob := nats.NewMsg(b.subject)
	eob.Reply = b.prefix + strconv.FormatUint(b.sent+1, 10) + "." + batchOpCommitEOB + ".$FI"
	if err := bs.send(eob); err != nil {
		b.update(0, 0, true, fmt.Errorf("pipeline: end of batch: %w", err))
	}
}

func (b *fastBatch) reason() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.why
}

// update records that 1..acked are stored, that the next flow ack comes
// every messages later (when not 0) and, when end, that the batch is over
// (why says how).
func (b *fastBatch) update(acked, every uint64, end bool, why error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := false
	if acked > b.acked {
		b.acked, changed = acked, true
	}
	if every > 0 && acked >= b.acked {
		b.every, changed = every, true
	}
	if end && !b.ended {
		b.ended, b.why, changed = true, why, true
	}
	if changed {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// batches are a runner's fast-ingest batches and the subscription their
// answers arrive on.
type batches struct {
	// send publishes one message (the connection's PublishMsg; tests
	// put a fault in between).
	send  func(*nats.Msg) error
	conn  *nats.Conn
	inbox string
	sub   *nats.Subscription

	// Owned by the Run goroutine: the open batch per stream, and per
	// output subject its stream.
	open   map[string]*fastBatch
	stream map[string]outStream
	// out and reply are the scratch of each send.
	out   nats.Msg
	reply []byte

	mu   sync.Mutex
	byID map[string]*fastBatch
}

func newBatches(conn *nats.Conn) *batches {
	bs := &batches{conn: conn, open: map[string]*fastBatch{}, stream: map[string]outStream{}, byID: map[string]*fastBatch{}}
	if conn != nil {
		bs.send = conn.PublishMsg
	}
	return bs
}

// outStream is the stream that stores an output subject, and whether it
// takes fast-ingest batches.
type outStream struct {
	name    string
	batched bool
}

// streamOf names the stream that stores subject, and says whether it
// takes fast-ingest batches (when it does not, its outputs go one by one,
// asynchronously, as before). Answers are kept. A failed lookup is not:
// it refuses the output, which then goes one at a time in order, rather
// than asynchronously beside its stream's batch. Without a connection
// (a test's bus) no stream is known and nothing is batched.
func (r *Runner) streamOf(ctx context.Context, subject string) (outStream, error) {
	if s, ok := r.bs.stream[subject]; ok {
		return s, nil
	}
	if r.bs.conn == nil {
		return outStream{}, nil
	}
	lctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	name, err := r.js.StreamNameBySubject(lctx, subject)
	if err != nil {
		return outStream{}, fmt.Errorf("pipeline: stream of %s: %w", subject, err)
	}
	s, err := r.js.Stream(lctx, name)
	if err != nil {
		return outStream{}, fmt.Errorf("pipeline: stream %s: %w", name, err)
	}
	out := outStream{name: name}
	if info := s.CachedInfo(); info != nil && info.Config.AllowBatchPublish {
		out.batched = true
	} else {
		r.log.Warn("output stream takes no fast-ingest batches (allow_batched, nats-server 2.14): after a leader change an output may be stored after a later one",
			"stream", name)
	}
	r.bs.stream[subject] = out
	return out, nil
}

// sendBatched sends m into its stream's open batch, opening one when there
// is none or the last has ended and every flight that used it has landed.
// It refuses (errBatchEnded) while an ended batch still has a flight to
// land: what that flight could not store goes again first.
// The first message of a batch carries tok's expectation, when set (see
// server_fence.go).
func (r *Runner) sendBatched(fl *flight, stream string, m *nats.Msg, tok *fenceToken) error {
	bs := r.bs
	b := bs.open[stream]
	if b != nil && b.committing {
		// Ended to land a flight: the next batch opens once the server
		// has answered that everything sent is stored, so that it can
		// never be stored ahead of a hole in this one.
		awaitEnd(b, r.cfg.PublishTimeout)
	}
	if b != nil {
		if acked, ended, _ := b.state(); ended {
			if b.flights > 0 && acked < b.sent {
				return errBatchEnded
			}
			bs.drop(b)
			b = nil
		}
	}
	if b == nil {
		if err := bs.subscribe(); err != nil {
			return err
		}
		id := nuid.Next()
		b = &fastBatch{stream: stream, id: id, prefix: bs.inbox + "." + id + "." + batchFlow + ".fail.", wake: make(chan struct{}, 1)}
		bs.mu.Lock()
		bs.byID[id] = b
		bs.mu.Unlock()
		bs.open[stream] = b
	}
	op := batchOpAppend
	if b.sent == 0 {
		op = batchOpStart
	}
	seq := b.sent + 1
	// A copy, since the flight keeps m as it was for a publish one at a
	// time; the connection is done with it when send returns, so one
	// serves every output.
	if op == batchOpStart && tok != nil {
		bs.out = *withToken(m, *tok)
	} else {
		bs.out = *m
	}
	bs.reply = strconv.AppendUint(append(bs.reply[:0], b.prefix...), seq, 10)
	bs.reply = append(append(append(bs.reply, '.'), op...), ".$FI"...)
	bs.out.Reply = string(bs.reply)
	err := bs.send(&bs.out)
	bs.out = nats.Msg{}
	if err != nil {
		b.update(0, 0, true, err)
		return err
	}
	b.sent, b.subject = seq, m.Subject
	if !fl.uses(b) {
		fl.batches = append(fl.batches, b)
		b.flights++
	}
	fl.acks = append(fl.acks, pending{b: b, seq: seq})
	return nil
}

// subscribe opens the subscription the batches' answers arrive on.
func (bs *batches) subscribe() error {
	if bs.sub != nil {
		return nil
	}
	bs.inbox = bs.conn.NewInbox()
	sub, err := bs.conn.Subscribe(bs.inbox+".>", bs.answer)
	if err != nil {
		return fmt.Errorf("pipeline: subscribe to batch answers: %w", err)
	}
	bs.sub = sub
	return nil
}

// closeIdle ends every open batch that no flight still waits on: an end
// of batch without a message, whose PubAck nobody needs (every output was
// confirmed or goes again one at a time).
func (bs *batches) closeIdle() {
	for _, b := range bs.open {
		if b.flights > 0 {
			continue
		}
		if _, ended, _ := b.state(); !ended && !b.committing {
			bs.commit(b) // a batch not ended the server drops after 10s
		}
		bs.drop(b)
	}
}

func (bs *batches) drop(b *fastBatch) {
	delete(bs.open, b.stream)
	bs.mu.Lock()
	delete(bs.byID, b.id)
	bs.mu.Unlock()
}

// stop ends the open batches and the subscription.
func (bs *batches) stop() {
	bs.closeIdle()
	if bs.sub != nil {
		_ = bs.sub.Unsubscribe()
		bs.sub = nil
	}
}

var (
	flowAckPrefix = []byte(`{"type":"ack","seq":`)
	flowAckEvery  = []byte(`"msgs":`)
	flowGapPrefix = []byte(`{"type":"gap"`)
	flowErrPrefix = []byte(`{"type":"err"`)
)

// batchPubAck is the PubAck that ends a batch.
type batchPubAck struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Count uint64 `json:"count"`
}

// answer handles what the server says of a batch. A gap or error notice
// ends the batch at once on this side: in gap mode "fail" the server
// stores nothing after it, and its closing PubAck may still say how much
// was stored before.
func (bs *batches) answer(m *nats.Msg) {
	rest, ok := strings.CutPrefix(m.Subject, bs.inbox+".")
	if !ok {
		return
	}
	id, _, _ := strings.Cut(rest, ".")
	bs.mu.Lock()
	b := bs.byID[id]
	bs.mu.Unlock()
	if b == nil {
		return // an ended batch's late answers
	}
	data := m.Data
	switch {
	case len(data) == 0 && m.Header.Get("Status") != "":
		// 503: no stream leader took the message (a leader change).
		b.update(0, 0, true, fmt.Errorf("status %s", m.Header.Get("Status")))
	case bytes.HasPrefix(data, flowAckPrefix):
		seq := leadingUint(data[len(flowAckPrefix):])
		var every uint64
		if i := bytes.Index(data, flowAckEvery); i >= 0 {
			every = leadingUint(data[i+len(flowAckEvery):])
		}
		if every == 0 {
			// Not told when the next comes: assume none, so that a
			// wait ends the batch rather than waiting for nothing.
			every = math.MaxUint32
		}
		b.update(seq, every, false, nil)
	case bytes.HasPrefix(data, flowGapPrefix), bytes.HasPrefix(data, flowErrPrefix):
		b.update(0, 0, true, fmt.Errorf("server: %s", truncate(string(data), 200)))
	default:
		var ack batchPubAck
		if err := json.Unmarshal(data, &ack); err != nil {
			b.update(0, 0, true, fmt.Errorf("batch answer: %w", err))
			return
		}
		if ack.Error != nil {
			// Typed, for the fence to tell its refusal (server_fence.go).
			b.update(0, 0, true, fmt.Errorf("server: %w", &jetstream.APIError{
				Code: ack.Error.Code, ErrorCode: jetstream.ErrorCode(ack.Error.ErrCode), Description: ack.Error.Description}))
			return
		}
		b.update(ack.Count, 0, true, errBatchEnded)
	}
}

// leadingUint is the decimal number data starts with.
func leadingUint(data []byte) uint64 {
	var n uint64
	for _, c := range data {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}

// pending is an output sent and not yet confirmed: an asynchronous
// publish's future, or a message of a fast batch.
type pending struct {
	fut jetstream.PubAckFuture
	b   *fastBatch
	seq uint64
}

// awaitBatched waits until p's message is stored (true), its batch ended
// short of it, or timeout fires (false; the runner then gives the batch
// up, so that nothing more goes into it).
func (bs *batches) awaitBatched(p pending, timeout <-chan time.Time) bool {
	for {
		acked, ended, wake := p.b.state()
		if acked >= p.seq {
			return true
		}
		if ended {
			return false
		}
		bs.needAck(p.b, p.seq)
		select {
		case <-wake:
		case <-timeout:
			p.b.update(0, 0, true, errors.New("pipeline: batch acks timed out"))
			return false
		}
	}
}

// awaitEnd waits until the server has answered b's end of batch, or gives
// b up after bound.
func awaitEnd(b *fastBatch, bound time.Duration) {
	t := time.NewTimer(bound)
	defer t.Stop()
	for {
		_, ended, wake := b.state()
		if ended {
			return
		}
		select {
		case <-wake:
		case <-t.C:
			b.update(0, 0, true, errors.New("pipeline: end of batch unanswered"))
			return
		}
	}
}
