package notifier_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"cryptostream/natstest"
	"cryptostream/notifier"
	"cryptostream/streams"
)

type bus struct {
	url     string
	js      jetstream.JetStream
	rules   *notifier.Store
	records jetstream.KeyValue
}

func newBus(t *testing.T) *bus {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), streams.BucketAlertRules)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := js.KeyValue(t.Context(), streams.BucketWebhookDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	return &bus{url: srv.ClientURL(), js: js, rules: notifier.NewStore(kv, 0, nil), records: rec}
}

// deliverer runs a deliverer until the returned stop is called.
func (b *bus) deliverer(t *testing.T, cfg notifier.DeliveryConfig, reg prometheus.Registerer) (stop func()) {
	t.Helper()
	cons, err := b.js.Consumer(t.Context(), streams.StreamAlerts, streams.ConsumerNotifierWebhooks)
	if err != nil {
		t.Fatal(err)
	}
	w, err := notifier.NewDeliverer(cfg, notifier.DeliveryDeps{Alerts: cons, Records: b.records, Rules: b.rules, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	return run(t, w, false)
}

func (b *bus) rule(t *testing.T, url, secret string) notifier.Rule {
	t.Helper()
	r, err := b.rules.Create(t.Context(), notifier.Rule{Owner: "alice", OwnerID: "id-alice", Kind: notifier.KindPriceCross, Symbol: "BTC/USD", Interval: streams.Interval1m,
		Threshold: 100, Trigger: notifier.TriggerOncePerClose, Webhook: &notifier.Webhook{URL: url, Format: notifier.FormatGeneric, Secret: secret}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var at0 = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

func (b *bus) fire(t *testing.T, r notifier.Rule, minute int) streams.Alert {
	t.Helper()
	at := at0.Add(time.Duration(minute) * time.Minute)
	a := streams.Alert{ID: streams.AlertID(r.ID, "BTC/USD", at), RuleID: r.ID, Owner: r.OwnerID, Symbol: "BTC/USD", Interval: streams.Interval1m,
		Kind: string(r.Kind), Message: "BTC/USD rose above 100.00 to 101.00", Value: 101, Threshold: 100, At: at, Stream: streams.StreamMarket, Seq: 7}
	if _, err := streams.Publish(t.Context(), b.js, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// waitRecord waits until the alert's delivery record reaches state.
func (b *bus) waitRecord(t *testing.T, id, state string) notifier.DeliveryRecord {
	t.Helper()
	for {
		rec, ok, err := notifier.Record(t.Context(), b.records, id)
		if err != nil {
			t.Fatal(err)
		}
		if ok && rec.State == state {
			return rec
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("record of %s never reached %s (last %+v)", id, state, rec)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

type hit struct {
	header http.Header
	body   []byte
	status int
}

// receiver answers each request with the next status of plan (the last
// repeats) and reports every request on hits.
func receiver(t *testing.T, plan ...int) (*httptest.Server, chan hit) {
	t.Helper()
	hits := make(chan hit, 100)
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		st := plan[min(n, len(plan)-1)]
		n++
		mu.Unlock()
		w.WriteHeader(st)
		hits <- hit{r.Header.Clone(), body, st}
	}))
	t.Cleanup(srv.Close)
	return srv, hits
}

var fast = notifier.DeliveryConfig{MaxAttempts: 4, BaseDelay: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond, Timeout: 5 * time.Second, AllowPrivate: true}

func TestWebhookFailsTwiceThenSucceeds(t *testing.T) {
	b := newBus(t)
	srv, hits := receiver(t, 500, 503, 200)
	reg := prometheus.NewRegistry()
	stop := b.deliverer(t, fast, reg)
	r := b.rule(t, srv.URL, "s3cret")
	a := b.fire(t, r, 0)
	rec := b.waitRecord(t, a.ID, notifier.DeliveryDelivered)
	if rec.Attempts != 3 {
		t.Fatalf("record %+v, want 3 attempts", rec)
	}
	var ok []hit
	for range 3 {
		h := <-hits
		if h.status == 200 {
			ok = append(ok, h)
		}
	}
	if len(ok) != 1 {
		t.Fatalf("%d successful deliveries", len(ok))
	}
	h := ok[0]
	if err := notifier.Verify("s3cret", h.header.Get(notifier.HeaderSignature), h.body, time.Now(), 5*time.Minute); err != nil {
		t.Fatalf("signature: %v (header %q)", err, h.header.Get(notifier.HeaderSignature))
	}
	if err := notifier.Verify("wrong", h.header.Get(notifier.HeaderSignature), h.body, time.Now(), 5*time.Minute); err == nil {
		t.Fatal("a wrong secret verifies")
	}
	if err := notifier.Verify("s3cret", h.header.Get(notifier.HeaderSignature), h.body, time.Now().Add(time.Hour), 5*time.Minute); err == nil {
		t.Fatal("a replay an hour later verifies")
	}
	var got struct {
		Alert streams.Alert `json:"alert"`
	}
	if err := json.Unmarshal(h.body, &got); err != nil || got.Alert.ID != a.ID || h.header.Get(notifier.HeaderDelivery) != a.ID {
		t.Fatalf("body %s: %v", h.body, err)
	}
	if v := testutil.ToFloat64(counter(t, reg, "retry")); v != 2 {
		t.Errorf("retries %v", v)
	}
	// A restart does not send the delivered alert again: the next alert is
	// the next request the receiver sees.
	stop()
	b.deliverer(t, fast, prometheus.NewRegistry())
	next := b.fire(t, r, 1)
	b.waitRecord(t, next.ID, notifier.DeliveryDelivered)
	var body struct {
		Alert streams.Alert `json:"alert"`
	}
	if h := <-hits; json.Unmarshal(h.body, &body) != nil || body.Alert.ID != next.ID {
		t.Fatalf("after the restart the receiver got %s", h.body)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, outcome string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "cryptostream_notifier_webhook_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == outcome {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
				c.Add(m.GetCounter().GetValue())
				return c
			}
		}
	}
	return prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
}

// A receiver that always fails ends in a dead letter, and while it is
// being retried other alerts are delivered: its second attempt waits until
// the good receiver has had its alert.
func TestWebhookDeadLetterDoesNotBlockOthers(t *testing.T) {
	b := newBus(t)
	goodSrv, goodHits := receiver(t, 200)
	gotGood := make(chan struct{})
	var badN int
	var mu sync.Mutex
	badSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		badN++
		n := badN
		mu.Unlock()
		if n == 2 {
			<-gotGood
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(badSrv.Close)
	reg := prometheus.NewRegistry()
	b.deliverer(t, fast, reg)
	bad, good := b.rule(t, badSrv.URL, ""), b.rule(t, goodSrv.URL, "")
	ba := b.fire(t, bad, 0)
	b.waitRecord(t, ba.ID, notifier.DeliveryPending)
	ga := b.fire(t, good, 0)
	<-goodHits
	close(gotGood)
	b.waitRecord(t, ga.ID, notifier.DeliveryDelivered)
	dead := b.waitRecord(t, ba.ID, notifier.DeliveryDead)
	if dead.Attempts != fast.MaxAttempts || !strings.Contains(dead.LastError, "500") || dead.URL != badSrv.URL {
		t.Fatalf("dead letter %+v", dead)
	}
	if v := testutil.ToFloat64(counter(t, reg, "dead")); v != 1 {
		t.Errorf("dead letters counted %v", v)
	}
	mu.Lock()
	defer mu.Unlock()
	if badN != fast.MaxAttempts {
		t.Errorf("bad receiver called %d times", badN)
	}
}

// A target that passed the check when the rule was stored and is internal
// at delivery (DNS rebinding, or a rule written behind the API's back) is
// refused at connect time and dead-lettered at once.
func TestWebhookRefusedAtDialTime(t *testing.T) {
	b := newBus(t)
	srv, hits := receiver(t, 200)
	cfg := fast
	cfg.AllowPrivate = false
	b.deliverer(t, cfg, prometheus.NewRegistry())
	a := b.fire(t, b.rule(t, srv.URL, ""), 0)
	dead := b.waitRecord(t, a.ID, notifier.DeliveryDead)
	if dead.Attempts != 1 || !strings.Contains(dead.LastError, "forbidden webhook target") {
		t.Fatalf("record %+v", dead)
	}
	select {
	case h := <-hits:
		t.Fatalf("the internal target was called: %+v", h)
	default:
	}
}

// A delivery pending when the deliverer stops is finished by the next one,
// once; an alert whose record says delivered (the deliverer died between
// the record and the ack) is not sent again.
func TestWebhookSurvivesRestart(t *testing.T) {
	b := newBus(t)
	srv, hits := receiver(t, 500, 200)
	stop := b.deliverer(t, fast, prometheus.NewRegistry())
	r := b.rule(t, srv.URL, "")
	a := b.fire(t, r, 0)
	b.waitRecord(t, a.ID, notifier.DeliveryPending)
	stop()
	<-hits
	done := notifier.DeliveryRecord{AlertID: streams.AlertID(r.ID, "BTC/USD", at0.Add(time.Minute)), RuleID: r.ID, State: notifier.DeliveryDelivered, Attempts: 1}
	raw, _ := json.Marshal(done)
	if _, err := b.records.Put(t.Context(), notifier.DeliveryKey(done.AlertID), raw); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b.deliverer(t, fast, reg)
	b.fire(t, r, 1)
	rec := b.waitRecord(t, a.ID, notifier.DeliveryDelivered)
	if h := <-hits; h.status != 200 || rec.Attempts != 2 {
		t.Fatalf("hit %d, record %+v", h.status, rec)
	}
	for testutil.ToFloat64(counter(t, reg, "skipped")) != 1 {
		select {
		case <-t.Context().Done():
			t.Fatal("the delivered alert was never skipped")
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case h := <-hits:
		t.Fatalf("an extra request: %s", h.body)
	default:
	}
}

func TestPayloadFormats(t *testing.T) {
	a := streams.Alert{ID: "r:BTC-USD:1", RuleID: "r", Symbol: "BTC/USD", Interval: streams.Interval1m, Kind: "percent_move",
		Message: "BTC/USD fell 2.3% in 15 min to 22,872", Value: -2.3, Threshold: 2, At: at0}
	for _, tc := range []struct {
		f    notifier.Format
		want string
	}{
		{notifier.FormatSlack, `{"text":":rotating_light: BTC/USD fell 2.3% in 15 min to 22,872"}`},
		{notifier.FormatDiscord, `"content":"BTC/USD fell 2.3% in 15 min to 22,872","embeds":[{"description":"BTC/USD fell 2.3% in 15 min to 22,872"`},
		{notifier.FormatGeneric, `{"alert":{"v":0,"id":"r:BTC-USD:1"`},
	} {
		b, err := notifier.Payload(tc.f, a)
		if err != nil || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %s (%v), want %s", tc.f, b, err, tc.want)
		}
	}
}
