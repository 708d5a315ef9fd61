package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/streams"
)

// DeliveryConfig tunes webhook delivery. Zero values take the defaults.
type DeliveryConfig struct {
	// MaxAttempts before an alert's delivery is dead-lettered.
	MaxAttempts int
	// BaseDelay and MaxDelay bound the backoff between attempts.
	BaseDelay, MaxDelay time.Duration
	// Timeout of one POST.
	Timeout time.Duration
	// Concurrency is how many deliveries run at once, so that one slow
	// receiver does not hold up the others.
	Concurrency int
	// AllowPrivate lets webhooks reach loopback and private addresses.
	AllowPrivate bool
}

func (c *DeliveryConfig) defaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 8
	}
	if c.BaseDelay == 0 {
		c.BaseDelay = 2 * time.Second
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = 5 * time.Minute
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
}

// Records is the part of the webhook-deliveries bucket the deliverer uses.
type Records interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
}

// RuleSource reads a rule by id; *Store is one.
type RuleSource interface {
	Get(ctx context.Context, id string) (Rule, uint64, error)
}

// Consumer is the durable consumer of ALERTS the deliverer reads.
type Consumer interface {
	Consume(handler jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error)
}

// DeliveryDeps are what the deliverer talks to.
type DeliveryDeps struct {
	Alerts  Consumer
	Records Records
	Rules   RuleSource
	Metrics prometheus.Registerer
	Log     *slog.Logger
	Now     func() time.Time
}

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryDead      = "dead"
)

// DeliveryRecord is one alert's webhook delivery, in the
// webhook-deliveries bucket under DeliveryKey. A dead one is the
// dead-letter record.
type DeliveryRecord struct {
	AlertID   string    `json:"alert_id"`
	RuleID    string    `json:"rule_id"`
	URL       string    `json:"url"`
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// DeliveryKey is the bucket key of an alert's delivery record.
func DeliveryKey(alertID string) string { return "d." + strings.ReplaceAll(alertID, ":", ".") }

// Deliverer POSTs each alert whose rule has a webhook. The pending state
// is JetStream's: an alert message stays unacked (naked with the backoff)
// until its delivery succeeds or is dead-lettered, so a restart resumes
// every pending delivery; the record, written before the ack, makes a
// redelivered message that was already delivered a no-op. The one window
// left is a crash between the receiver's answer and the record: the
// delivery id header lets a receiver drop that repeat.
type Deliverer struct {
	cfg    DeliveryConfig
	d      DeliveryDeps
	log    *slog.Logger
	sender *Sender
	mu     sync.Mutex
	rnd    *rand.Rand
	out    *prometheus.CounterVec
}

// NewDeliverer builds a deliverer; it does no I/O.
func NewDeliverer(cfg DeliveryConfig, d DeliveryDeps) (*Deliverer, error) {
	cfg.defaults()
	if d.Alerts == nil || d.Records == nil || d.Rules == nil {
		return nil, errors.New("notifier: deliverer needs the alerts consumer, the deliveries bucket and the rules")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = prometheus.NewRegistry()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Deliverer{
		cfg: cfg, d: d, log: d.Log.With("worker", "notifier-webhooks"),
		sender: NewSender(cfg.Timeout, cfg.AllowPrivate, d.Now),
		rnd:    rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		out: promauto.With(d.Metrics).NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_notifier_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome: delivered, retry, dead (dead-lettered), skipped (already done or no webhook)."}, []string{"outcome"}),
	}, nil
}

// Run delivers until ctx ends, then waits for the deliveries in flight.
func (w *Deliverer) Run(ctx context.Context) error {
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	h := streams.Acker(ctx, w.log, w.handle, nil)
	cc, err := w.d.Alerts.Consume(func(msg jetstream.Msg) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return // unacked: redelivered to whoever runs next
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			h(msg)
		}()
	}, jetstream.PullMaxMessages(w.cfg.Concurrency))
	if err != nil {
		return fmt.Errorf("notifier: consume alerts for webhooks: %w", err)
	}
	<-ctx.Done()
	cc.Stop()
	wg.Wait()
	return nil
}

func (w *Deliverer) backoff(n int) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Backoff(n, w.cfg.BaseDelay, w.cfg.MaxDelay, w.rnd)
}

func (w *Deliverer) record(ctx context.Context, rec DeliveryRecord) {
	rec.UpdatedAt = w.d.Now().UTC()
	b, _ := json.Marshal(rec) // plain strings and numbers
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := w.d.Records.Put(ctx, DeliveryKey(rec.AlertID), b); err != nil {
		w.log.Error("delivery record not written", "alert_id", rec.AlertID, "state", rec.State, "err", err)
	}
}

// Record reads an alert's delivery record.
func Record(ctx context.Context, r Records, alertID string) (DeliveryRecord, bool, error) {
	e, err := r.Get(ctx, DeliveryKey(alertID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return DeliveryRecord{}, false, nil
	}
	if err != nil {
		return DeliveryRecord{}, false, fmt.Errorf("notifier: delivery record: %w", err)
	}
	var rec DeliveryRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return DeliveryRecord{}, false, fmt.Errorf("notifier: delivery record: %w", err)
	}
	return rec, true, nil
}

func (w *Deliverer) handle(ctx context.Context, msg jetstream.Msg) error {
	a, err := streams.Decode[streams.Alert](msg.Data())
	if err != nil {
		return err
	}
	rule, _, err := w.d.Rules.Get(ctx, a.RuleID)
	if errors.Is(err, ErrRuleNotFound) || (err == nil && rule.Webhook == nil) {
		return nil // a system rule, or one deleted since: nothing to send
	}
	if err != nil {
		return err
	}
	rec, found, err := Record(ctx, w.d.Records, a.ID)
	if err != nil {
		return err
	}
	if found && rec.State != DeliveryPending {
		w.out.WithLabelValues("skipped").Inc()
		return nil
	}
	attempt := rec.Attempts + 1
	if md, err := msg.Metadata(); err == nil {
		attempt = max(attempt, int(md.NumDelivered))
	}
	rec = DeliveryRecord{AlertID: a.ID, RuleID: a.RuleID, URL: rule.Webhook.URL, Attempts: attempt}
	sendCtx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	err = w.sender.Send(sendCtx, *rule.Webhook, a)
	cancel()
	if err == nil {
		rec.State = DeliveryDelivered
		w.record(ctx, rec)
		w.out.WithLabelValues("delivered").Inc()
		return nil
	}
	rec.LastError = err.Error()
	if errors.Is(err, ErrGiveUp) || attempt >= w.cfg.MaxAttempts {
		rec.State = DeliveryDead
		w.record(ctx, rec)
		w.out.WithLabelValues("dead").Inc()
		w.log.Warn("webhook dead-lettered", "alert_id", a.ID, "rule_id", a.RuleID, "attempts", attempt, "err", err)
		return nil
	}
	rec.State = DeliveryPending
	w.record(ctx, rec)
	w.out.WithLabelValues("retry").Inc()
	w.log.Debug("webhook retried", "alert_id", a.ID, "attempt", attempt, "err", err)
	return streams.RetryAfter(err, w.backoff(attempt))
}
