package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"cryptostream/notifier"
	"cryptostream/streams"
)

// notifierFlags are the notifier role's settings: the system rule set
// (evaluated with no rule stored) and webhook delivery.
type notifierFlags struct {
	MovePercent, DemoMovePercent float64
	MoveWindow, MoveCooldown     time.Duration
	FailedLogins                 int
	FailedLoginsWindow           time.Duration
	UserRateCap                  int
	WebhookAttempts              int
	AllowPrivateWebhooks         bool
	demo                         bool
}

func (n *notifierFlags) register(fs *flagSet) {
	d := notifier.DefaultSystem
	fs.Float64Var(&n.MovePercent, "alert-move-percent", d.MovePercent, "system rule: alert every user when a tracked asset moves this many percent within --alert-move-window (0: off)")
	// The embedded recording's quietest 12 hours still hold a 0.45% move in
	// 15 minutes, so the demo fires from its backfill whatever the hour.
	fs.Float64Var(&n.DemoMovePercent, "demo-alert-move-percent", 0.4, "--alert-move-percent under --demo")
	fs.durationVar(&n.MoveWindow, "alert-move-window", "ALERT_MOVE_WINDOW", d.MoveWindow, "window of the system move rule")
	fs.durationVar(&n.MoveCooldown, "alert-move-cooldown", "ALERT_MOVE_COOLDOWN", d.MoveCooldown, "least time between two system move alerts of one asset")
	fs.intVar(&n.FailedLogins, "alert-failed-logins", "ALERT_FAILED_LOGINS", d.FailedLogins, "system security rule: alert admins at this many failed logins per username or address within --alert-failed-logins-window (0: off)")
	fs.durationVar(&n.FailedLoginsWindow, "alert-failed-logins-window", "ALERT_FAILED_LOGINS_WINDOW", d.FailedLoginsWindow, "window of the failed-logins rule")
	fs.intVar(&n.UserRateCap, "alert-user-rate-cap", "ALERT_USER_RATE_CAP", 60, "most alerts one user's rules may fire per hour (0: no cap)")
	fs.intVar(&n.WebhookAttempts, "webhook-attempts", "WEBHOOK_ATTEMPTS", 8, "webhook attempts before an alert's delivery is dead-lettered")
	registerPrivateWebhooks(fs, &n.AllowPrivateWebhooks)
}

// registerPrivateWebhooks defines --allow-private-webhooks once: the
// gateway (checks at rule creation) and the notifier (checks at connect
// time) share it, and whoever registers first owns it.
func registerPrivateWebhooks(fs *flagSet, p *bool) {
	if fs.Lookup("allow-private-webhooks") == nil {
		fs.boolVar(p, "allow-private-webhooks", "ALLOW_PRIVATE_WEBHOOKS", false, "let webhooks target loopback, link-local and private addresses (closed networks only)")
	}
}

func lookupBool(fs *flagSet, name string) bool {
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	g, ok := f.Value.(flag.Getter)
	b, _ := g.Get().(bool)
	return ok && b
}

func (n *notifierFlags) validate(fs *flagSet, cfg *runConfig) error {
	n.AllowPrivateWebhooks = lookupBool(fs, "allow-private-webhooks")
	n.demo = cfg.Ingest.Demo
	switch {
	case n.MovePercent < 0 || n.MovePercent > 100 || n.DemoMovePercent < 0 || n.DemoMovePercent > 100:
		return fmt.Errorf("--alert-move-percent %v: want 0 to 100", n.MovePercent)
	case n.MoveWindow < time.Minute || n.MoveWindow > notifier.MaxWindow || n.MoveWindow%time.Minute != 0:
		return fmt.Errorf("--alert-move-window %s: whole minutes up to %s", n.MoveWindow, notifier.MaxWindow)
	case n.MoveCooldown < 0 || n.FailedLogins < 0 || n.FailedLogins == 1 || n.FailedLoginsWindow <= 0 || n.UserRateCap < 0:
		return fmt.Errorf("notifier settings: cooldown, counts and windows must be positive (failed logins 0 or at least 2)")
	case n.WebhookAttempts < 1 || n.WebhookAttempts > 19:
		return fmt.Errorf("--webhook-attempts %d: want 1 to 19 (the consumer delivers 20 times)", n.WebhookAttempts)
	}
	return nil
}

func (n notifierFlags) system() notifier.SystemConfig {
	move := n.MovePercent
	if n.demo {
		move = n.DemoMovePercent
	}
	return notifier.SystemConfig{MovePercent: move, MoveWindow: n.MoveWindow, MoveCooldown: n.MoveCooldown,
		FailedLogins: n.FailedLogins, FailedLoginsWindow: n.FailedLoginsWindow, RoleChanges: true, UserDeletions: true}
}

// LogValue logs the notifier's settings.
func (n notifierFlags) LogValue() slog.Value {
	s := n.system()
	return slog.GroupValue(slog.Float64("move_percent", s.MovePercent), slog.Duration("move_window", s.MoveWindow),
		slog.Int("failed_logins", s.FailedLogins), slog.Duration("failed_logins_window", s.FailedLoginsWindow),
		slog.Int("user_rate_cap", n.UserRateCap), slog.Int("webhook_attempts", n.WebhookAttempts),
		slog.Bool("allow_private_webhooks", n.AllowPrivateWebhooks))
}

func addNotifier(ctx context.Context, s *system, cfg *runConfig) error {
	n := cfg.Notifier
	js := s.bus.JS
	rules, err := js.KeyValue(ctx, streams.BucketAlertRules)
	if err != nil {
		return fmt.Errorf("alert-rules bucket: %w", err)
	}
	assets, err := js.KeyValue(ctx, streams.BucketAssets)
	if err != nil {
		return fmt.Errorf("assets bucket: %w", err)
	}
	records, err := js.KeyValue(ctx, streams.BucketWebhookDeliveries)
	if err != nil {
		return fmt.Errorf("webhook-deliveries bucket: %w", err)
	}
	w, err := notifier.New(notifier.Config{
		System:   n.system(),
		Engine:   notifier.EngineConfig{UserRateCap: n.UserRateCap},
		Webhooks: true,
		Delivery: notifier.DeliveryConfig{MaxAttempts: n.WebhookAttempts, AllowPrivate: n.AllowPrivateWebhooks},
		// Shared by symbol with the other instances, as features and
		// predictor are.
		Partitioned: true,
	}, notifier.Deps{JS: js, Rules: rules, Assets: assets, Records: records, Log: s.log, Metrics: s.registry})
	if err != nil {
		return err
	}
	s.workers["notifier"] = w
	return nil
}
