package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"cryptostream/natstest"
	"cryptostream/streams"
)

// `run --demo` fires an alert within a minute with no rule stored: the
// system move rule on the demo's backfilled and live candles. And 20
// failed logins through the real gateway fire the system security rule.
func TestRunDemoFiresAlerts(t *testing.T) {
	ctx := t.Context()
	sys, stop := startTestSystemArgs(t, "--data-dir", t.TempDir(), "--demo", "--bcrypt-cost", "10")
	alerts, err := sys.bus.JS.Stream(ctx, streams.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	last := func(subject string) (streams.Alert, bool) {
		m, err := alerts.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return streams.Alert{}, false
		}
		a, err := streams.Decode[streams.Alert](m.Data)
		return a, err == nil
	}
	natstest.WaitFor(t, time.Minute, "a demo alert", func() bool {
		a, ok := last(streams.AlertSubject("BTC/USD"))
		return ok && a.RuleID == "system-move-BTC-USD" && a.Owner == "" && strings.HasPrefix(a.Message, "BTC/USD ")
	})

	for range 20 {
		resp, err := http.Post("http://"+sys.Addr()+"/auth/login", "application/json", strings.NewReader(`{"username":"mallory","password":"not-the-password"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("login answered %d", resp.StatusCode)
		}
	}
	natstest.WaitFor(t, time.Minute, "the failed-logins alert", func() bool {
		a, ok := last(streams.AlertSecuritySubject)
		return ok && a.Kind == "failed_logins" && a.Owner == streams.AlertAudienceAdmins && (a.Key == "mallory" || a.Key == "127.0.0.1")
	})
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestNotifierFlags(t *testing.T) {
	for _, args := range [][]string{{"--alert-move-percent", "-1"}, {"--alert-move-window", "90s"}, {"--alert-failed-logins", "1"}, {"--webhook-attempts", "0"}, {"--max-alert-rules", "0"}} {
		if _, err := parseRunConfig(args, testEnv(nil)); err == nil {
			t.Errorf("parseRunConfig(%q) accepted", args)
		}
	}
	cfg, err := parseRunConfig([]string{"--allow-private-webhooks", "--demo"}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Notifier.AllowPrivateWebhooks || !cfg.Gateway.AllowPrivateWebhooks || cfg.Notifier.system().MovePercent != 0.4 {
		t.Errorf("flags %+v %+v", cfg.Notifier, cfg.Gateway.AllowPrivateWebhooks)
	}
	alone, err := parseRoleConfig("notifier", "", ":8086", []role{roleByName(t, "notifier")}, []string{"--allow-private-webhooks"}, testEnv(nil))
	if err != nil || !alone.Notifier.AllowPrivateWebhooks || alone.Notifier.system().MovePercent != 2 {
		t.Errorf("notifier alone: %+v %v", alone.Notifier, err)
	}
}

func roleByName(t *testing.T, name string) role {
	t.Helper()
	for _, r := range roles() {
		if r.name == name {
			return r
		}
	}
	t.Fatalf("no role %s", name)
	return role{}
}
