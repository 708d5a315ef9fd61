package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"time"

	"github.com/gorilla/websocket"

	"cryptostream/streams"
)

// A resumer follows the busy ticks and a candles channel (candles never
// conflate, so every one is owed), drops its connection once during the
// window, reconnects and resumes the candles with since = the last sequence
// it saw. What it received across both connections, against the sequences
// the stream stored, says whether the resume left a gap or a duplicate at
// the seam while the gateway was under load.
type resumer struct {
	url, token string
	chans      []string // ticks first, the candles channel last (see dial)
	candles    string
	conn       *websocket.Conn
	got        []uint64 // candle sequences, live and replayed, in arrival order
	resumed    bool     // reconnected and subscribed with since
	gapFrames  int      // "gap" notices from the gateway
	err        error
}

// ResumeResult is what the resumers saw.
type ResumeResult struct {
	Clients int
	Resumed int // reconnected with since during the window
	// Owed: candles stored from each resumer's first live one to its last
	// received, summed; Missing of those never came (a gap), Duplicates
	// came twice, Late were stored after its last one and had not come by
	// the end of the drain.
	Owed, Missing, Duplicates, Late int
	GapFrames                       int // gap notices the gateway sent
	Errors                          []string
}

func candlesOf(sym string) string { return "candles:" + streams.AssetKey(sym) + ":1m" }

type frame struct {
	Type     string `json:"type"`
	Channel  string `json:"channel"`
	Seq      uint64 `json:"seq"`
	Snapshot bool   `json:"snapshot"`
}

// read notes the candle sequences until the read deadline or an error.
func (r *resumer) read() error {
	for {
		_, b, err := r.conn.ReadMessage()
		if err != nil {
			return err
		}
		var f frame
		if json.Unmarshal(b, &f) != nil || f.Channel != r.candles {
			continue
		}
		switch {
		case f.Type == "gap":
			r.gapFrames++
		case f.Type == "event" && !f.Snapshot:
			r.got = append(r.got, f.Seq)
		}
	}
}

// run reads until dropAt, drops and resumes, then reads until stop.
func (r *resumer) run(ctx context.Context, dropAt time.Time, stop <-chan struct{}) {
	_ = r.conn.SetReadDeadline(dropAt)
	if err := r.read(); !isTimeout(err) {
		r.err = err
		return
	}
	_ = r.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = r.conn.Close()
	var since *uint64
	if n := len(r.got); n > 0 {
		since = &r.got[n-1]
	}
	c, err := dialSince(ctx, r.url, r.token, r.chans, since)
	if err != nil {
		r.err = err
		return
	}
	r.conn, r.resumed = c.conn, since != nil
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-stop:
			_ = r.conn.SetReadDeadline(time.Now())
		case <-ctx.Done():
			_ = r.conn.SetReadDeadline(time.Now())
		}
	}()
	_ = r.conn.SetReadDeadline(time.Time{})
	if err := r.read(); !isTimeout(err) {
		r.err = err
	}
	<-done
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// check compares what r received with the candle sequences stored.
func (r *resumer) check(stored []uint64, into *ResumeResult) {
	if r.resumed {
		into.Resumed++
	}
	into.GapFrames += r.gapFrames
	if r.err != nil {
		into.Errors = append(into.Errors, r.err.Error())
	}
	if len(r.got) == 0 {
		return
	}
	seen := make(map[uint64]int, len(r.got))
	last := uint64(0)
	for _, s := range r.got {
		seen[s]++
		last = max(last, s)
	}
	for _, n := range seen {
		into.Duplicates += n - 1
	}
	first := r.got[0]
	for _, s := range stored {
		switch {
		case s < first:
		case s <= last:
			into.Owed++
			if seen[s] == 0 {
				into.Missing++
			}
		default:
			into.Late++
		}
	}
}

// storedSeqs is the sorted sequences of a seqLog.
func (l *seqLog) storedSeqs() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.seqs)
	slices.Sort(s)
	return s
}
