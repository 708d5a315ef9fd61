package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"cryptostream/gateway/auth"
	"cryptostream/notifier"
	"cryptostream/readmodel"
	"cryptostream/streams"
)

// ruleBody is what a client sends to create, replace or preview a rule.
// Owner, id and times are the server's.
type ruleBody struct {
	Name       string             `json:"name"`
	Kind       notifier.Kind      `json:"kind"`
	Symbol     string             `json:"symbol"`
	Interval   streams.Interval   `json:"interval"`
	Direction  notifier.Direction `json:"direction"`
	Threshold  *float64           `json:"threshold"`
	Window     notifier.Duration  `json:"window"`
	Count      int                `json:"count"`
	Horizon    notifier.Duration  `json:"horizon"`
	Per        notifier.Per       `json:"per"`
	Trigger    notifier.Trigger   `json:"trigger"`
	Cooldown   notifier.Duration  `json:"cooldown"`
	Hysteresis float64            `json:"hysteresis"`
	ExpiresAt  *time.Time         `json:"expires_at"`
	Webhook    *notifier.Webhook  `json:"webhook"`
	Disabled   bool               `json:"disabled"`
	// System makes the rule a system rule whose alerts every user receives
	// (admins only).
	System bool `json:"system"`
}

func (b ruleBody) rule() notifier.Rule {
	r := notifier.Rule{Name: b.Name, Kind: b.Kind, Symbol: b.Symbol, Interval: b.Interval, Direction: b.Direction,
		Window: b.Window, Count: b.Count, Horizon: b.Horizon, Per: b.Per, Trigger: b.Trigger, Cooldown: b.Cooldown, Hysteresis: b.Hysteresis,
		ExpiresAt: b.ExpiresAt, Webhook: b.Webhook, Disabled: b.Disabled}
	if b.Threshold != nil {
		r.Threshold = *b.Threshold
	}
	if r.Kind == notifier.KindFailedLogins && r.Count == 0 && b.Threshold != nil {
		r.Count = int(r.Threshold)
	}
	return r
}

type webhookView struct {
	URL       string          `json:"url"`
	Format    notifier.Format `json:"format"`
	SecretSet bool            `json:"secret_set"`
}

// ruleView is a rule as the API shows it: the webhook secret never leaves.
type ruleView struct {
	ID         string             `json:"id"`
	Owner      string             `json:"owner"`
	System     bool               `json:"system"`
	Name       string             `json:"name"`
	Kind       notifier.Kind      `json:"kind"`
	Symbol     string             `json:"symbol,omitempty"`
	Interval   string             `json:"interval,omitempty"`
	Direction  notifier.Direction `json:"direction,omitempty"`
	Threshold  float64            `json:"threshold"`
	Window     string             `json:"window,omitempty"`
	Count      int                `json:"count,omitempty"`
	Horizon    string             `json:"horizon,omitempty"`
	Per        notifier.Per       `json:"per,omitempty"`
	Trigger    notifier.Trigger   `json:"trigger"`
	Cooldown   string             `json:"cooldown,omitempty"`
	Hysteresis float64            `json:"hysteresis"`
	ExpiresAt  *time.Time         `json:"expires_at,omitempty"`
	Webhook    *webhookView       `json:"webhook,omitempty"`
	Disabled   bool               `json:"disabled"`
	FiredAt    *time.Time         `json:"fired_at,omitempty"`
	// LastFiredAt is the trigger time of the rule's newest alert in
	// ALERTS, whatever its trigger mode.
	LastFiredAt *time.Time `json:"last_fired_at,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// viewRule is viewRule with when the rule last fired.
func (g *Gateway) viewRule(r notifier.Rule) ruleView {
	v := viewRule(r)
	if t, ok := g.fired.LastFired(r.ID); ok {
		v.LastFiredAt = &t
	}
	return v
}

func viewRule(r notifier.Rule) ruleView {
	v := ruleView{ID: r.ID, Owner: r.Owner, System: r.Owner == notifier.SystemOwner, Name: r.Name, Kind: r.Kind, Symbol: r.Symbol,
		Direction: r.Direction, Threshold: r.Threshold, Count: r.Count, Per: r.Per, Trigger: r.Trigger, Hysteresis: r.Hysteresis,
		ExpiresAt: r.ExpiresAt, Disabled: r.Disabled, FiredAt: r.FiredAt, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
	if r.Interval != 0 {
		v.Interval = r.Interval.String()
	}
	if r.Window > 0 {
		v.Window = r.Window.D().String()
	}
	if r.Cooldown > 0 {
		v.Cooldown = r.Cooldown.D().String()
	}
	if r.Horizon > 0 {
		v.Horizon = r.Horizon.D().String()
	}
	if r.Webhook != nil {
		v.Webhook = &webhookView{URL: r.Webhook.URL, Format: r.Webhook.Format, SecretSet: r.Webhook.Secret != ""}
	}
	return v
}

// alertEventView is a fired alert as the alert routes show it.
type alertEventView struct {
	ID        string             `json:"id"`
	RuleID    string             `json:"rule_id"`
	Owner     string             `json:"owner"`
	Symbol    string             `json:"symbol,omitempty"`
	Interval  string             `json:"interval,omitempty"`
	Key       string             `json:"key,omitempty"`
	Kind      string             `json:"kind"`
	Message   string             `json:"message"`
	Value     float64            `json:"value"`
	Threshold float64            `json:"threshold"`
	Values    map[string]float64 `json:"values,omitempty"`
	At        time.Time          `json:"at"`
	Stream    string             `json:"stream,omitempty"`
	Seq       uint64             `json:"seq"`
}

func viewAlertEvent(a streams.Alert, seq uint64) alertEventView {
	v := alertEventView{ID: a.ID, RuleID: a.RuleID, Owner: a.Owner, Symbol: a.Symbol, Key: a.Key, Kind: a.Kind, Message: a.Message,
		Value: a.Value, Threshold: a.Threshold, Values: a.Values, At: a.At.UTC(), Stream: a.Stream, Seq: seq}
	if a.Interval != 0 {
		v.Interval = a.Interval.String()
	}
	return v
}

// alertsReady answers 503 when the gateway runs without the rules bucket.
func (g *Gateway) alertsReady(w http.ResponseWriter, r *http.Request) bool {
	if g.rules == nil {
		g.fail(w, r, errorf(http.StatusServiceUnavailable, "unavailable", "alert rules are not configured"))
		return false
	}
	return true
}

// ruleCaller starts a rule request: the bucket is configured and the
// caller is a current user. The context bounds the request's I/O.
func (g *Gateway) ruleCaller(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc, streams.User, bool) {
	ctx, cancel := g.io(r)
	if !g.alertsReady(w, r) {
		return ctx, cancel, streams.User{}, false
	}
	u, err := g.currentUser(ctx, r)
	if err != nil {
		g.fail(w, r, err)
		return ctx, cancel, u, false
	}
	return ctx, cancel, u, true
}

// checkRule validates a rule for its owner: the rule itself, the asset
// being tracked, admin-only kinds and the webhook target.
func (g *Gateway) checkRule(ctx context.Context, r *http.Request, rule *notifier.Rule, admin bool) error {
	rule.Normalize()
	if err := rule.Validate(); err != nil {
		var fe *notifier.FieldError
		if errors.As(err, &fe) {
			return errorf(http.StatusBadRequest, fe.Code, "%s", fe.Message)
		}
		return errorf(http.StatusBadRequest, "invalid_rule", "%s", err.Error())
	}
	if rule.Kind.Security() && !admin {
		return errorf(http.StatusForbidden, "forbidden", "only an admin may hold %s rules", rule.Kind)
	}
	if !rule.Kind.Security() {
		ok, err := g.tracked(r, rule.Symbol)
		if err != nil {
			return err
		}
		if !ok {
			return errorf(http.StatusBadRequest, "unknown_asset", "%s is not a tracked asset", rule.Symbol)
		}
	}
	if rule.Webhook != nil {
		res := g.d.Resolver
		if res == nil {
			res = net.DefaultResolver
		}
		if err := notifier.CheckTarget(ctx, rule.Webhook.URL, g.cfg.AllowPrivateWebhooks, res); err != nil {
			return errorf(http.StatusBadRequest, "invalid_webhook", "%s", err.Error())
		}
	}
	return nil
}

func (g *Gateway) ruleErr(err error) error {
	switch {
	case errors.Is(err, notifier.ErrRuleNotFound):
		return errorf(http.StatusNotFound, "rule_not_found", "no such rule")
	case errors.Is(err, notifier.ErrConflict):
		return errorf(http.StatusConflict, "conflict", "the rule changed concurrently; retry")
	case errors.Is(err, notifier.ErrTooManyRules):
		return errorf(http.StatusBadRequest, "too_many_rules", "at most %d rules per user", g.rules.MaxPerUser)
	}
	return err
}

// ownRule reads a rule the caller may see. Another user's rule answers
// 404, not 403: its existence is not the caller's business either.
func (g *Gateway) ownRule(ctx context.Context, id string, u streams.User) (notifier.Rule, uint64, error) {
	rule, rev, err := g.rules.Get(ctx, id)
	if err != nil {
		return rule, 0, g.ruleErr(err)
	}
	if u.Role != streams.RoleAdmin && (rule.System() || rule.OwnerID != u.ID) {
		return rule, 0, errorf(http.StatusNotFound, "rule_not_found", "no such rule")
	}
	return rule, rev, nil
}

// accountID is the account ID now under a username, for an admin's
// filters: alerts and rules are addressed to accounts, not names.
func (g *Gateway) accountID(ctx context.Context, name string) (string, error) {
	u, _, err := g.users.Get(ctx, name)
	if errors.Is(err, auth.ErrUserNotFound) {
		return "", errorf(http.StatusNotFound, "user_not_found", "no such user")
	}
	return u.ID, err
}

func (g *Gateway) decodeRule(w http.ResponseWriter, r *http.Request, u streams.User) (notifier.Rule, error) {
	var body ruleBody
	if err := g.decodeJSON(w, r, &body); err != nil {
		g.m.ruleRejects.WithLabelValues("malformed").Inc()
		return notifier.Rule{}, err
	}
	if body.Threshold == nil && body.Kind.NeedsThreshold() {
		g.m.ruleRejects.WithLabelValues("invalid").Inc()
		return notifier.Rule{}, errorf(http.StatusBadRequest, "invalid_threshold", "threshold is required")
	}
	admin := u.Role == streams.RoleAdmin
	if body.System && !admin {
		return notifier.Rule{}, errorf(http.StatusForbidden, "forbidden", "only an admin manages system rules")
	}
	rule := body.rule()
	rule.Owner, rule.OwnerID = u.Username, u.ID
	if body.System {
		rule.Owner, rule.OwnerID = notifier.SystemOwner, notifier.SystemOwner
	}
	ctx, cancel := g.io(r)
	defer cancel()
	if err := g.checkRule(ctx, r, &rule, admin); err != nil {
		if ae := (*apiError)(nil); errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			reason := "invalid"
			if ae.Code == "invalid_webhook" {
				reason = "webhook"
			}
			g.m.ruleRejects.WithLabelValues(reason).Inc()
		}
		return notifier.Rule{}, err
	}
	return rule, nil
}

func (g *Gateway) listRules(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, u, ok := g.ruleCaller(w, r)
	defer cancel()
	if !ok {
		return
	}
	var rules []notifier.Rule
	var err error
	switch owner := r.URL.Query().Get("owner"); {
	case u.Role != streams.RoleAdmin:
		rules, err = g.rules.ListOwned(ctx, u.ID)
	case owner == "":
		rules, err = g.rules.List(ctx)
	default:
		var id string
		if id, err = g.accountID(ctx, owner); err == nil {
			rules, err = g.rules.ListOwned(ctx, id)
		}
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	out := make([]ruleView, len(rules))
	for i, rule := range rules {
		out[i] = g.viewRule(rule)
	}
	writeJSON(w, http.StatusOK, map[string]any{"rules": out})
}

func (g *Gateway) createRule(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, u, ok := g.ruleCaller(w, r)
	defer cancel()
	if !ok {
		return
	}
	rule, err := g.decodeRule(w, r, u)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	rule, err = g.rules.Create(ctx, rule)
	if err != nil {
		g.fail(w, r, g.ruleErr(err))
		return
	}
	g.audit(ctx, "alert.rule.create", u.Username, rule.ID, "ok", remoteIP(r), string(rule.Kind))
	w.Header().Set("Location", "/alerts/rules/"+rule.ID)
	writeJSON(w, http.StatusCreated, g.viewRule(rule))
}

func (g *Gateway) getRule(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, u, ok := g.ruleCaller(w, r)
	defer cancel()
	if !ok {
		return
	}
	rule, _, err := g.ownRule(ctx, r.PathValue("id"), u)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, g.viewRule(rule))
}

func (g *Gateway) putRule(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, u, ok := g.ruleCaller(w, r)
	defer cancel()
	if !ok {
		return
	}
	id := r.PathValue("id")
	old, _, err := g.ownRule(ctx, id, u)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	next, err := g.decodeRule(w, r, u)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	rule, err := g.rules.Update(ctx, id, func(cur *notifier.Rule) error {
		if cur.OwnerID != old.OwnerID || cur.Owner != old.Owner {
			return notifier.ErrConflict
		}
		n := next
		n.Owner, n.OwnerID = cur.Owner, cur.OwnerID // an admin editing a user's rule leaves it theirs
		if n.Webhook != nil && n.Webhook.Secret == "" && cur.Webhook != nil && cur.Webhook.URL == n.Webhook.URL {
			n.Webhook.Secret = cur.Webhook.Secret // the secret is never shown, so a client cannot send it back
		}
		*cur = n
		return nil
	})
	if err != nil {
		g.fail(w, r, g.ruleErr(err))
		return
	}
	g.audit(ctx, "alert.rule.update", u.Username, id, "ok", remoteIP(r), string(rule.Kind))
	writeJSON(w, http.StatusOK, g.viewRule(rule))
}

func (g *Gateway) deleteRule(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, u, ok := g.ruleCaller(w, r)
	defer cancel()
	if !ok {
		return
	}
	id := r.PathValue("id")
	_, rev, err := g.ownRule(ctx, id, u)
	if err == nil {
		err = g.rules.Delete(ctx, id, rev)
	}
	if err != nil {
		g.fail(w, r, g.ruleErr(err))
		return
	}
	g.audit(ctx, "alert.rule.delete", u.Username, id, "ok", remoteIP(r), "")
	w.WriteHeader(http.StatusNoContent)
}

// Preview bounds: a range is read page by page from the read model, so
// both the span and the number of candles are capped.
const (
	previewMaxSpan    = 31 * 24 * time.Hour
	previewMaxCandles = 50_000
)

func (g *Gateway) previewRule(w http.ResponseWriter, r *http.Request) {
	if !g.alertsReady(w, r) {
		return
	}
	var body struct {
		Rule   *ruleBody `json:"rule"`
		RuleID string    `json:"rule_id"`
		From   string    `json:"from"`
		To     string    `json:"to"`
	}
	if err := g.decodeJSON(w, r, &body); err != nil {
		g.fail(w, r, err)
		return
	}
	from, err := parseTime("from", body.From)
	if err == nil {
		var to time.Time
		if to, err = parseTime("to", body.To); err == nil {
			err = previewRange(from, to)
		}
		if err == nil {
			g.previewRange(w, r, body.Rule, body.RuleID, from, to)
			return
		}
	}
	g.fail(w, r, err)
}

func previewRange(from, to time.Time) error {
	switch {
	case from.IsZero() || to.IsZero():
		return errorf(http.StatusBadRequest, "invalid_range", "from and to are required")
	case !to.After(from):
		return errorf(http.StatusBadRequest, "invalid_range", "to must be after from")
	case to.Sub(from) > previewMaxSpan:
		return errorf(http.StatusBadRequest, "invalid_range", "a preview spans at most %s", previewMaxSpan)
	}
	return nil
}

func (g *Gateway) previewRange(w http.ResponseWriter, r *http.Request, body *ruleBody, id string, from, to time.Time) {
	ctx, cancel := context.WithTimeout(r.Context(), 6*g.cfg.IOTimeout)
	defer cancel()
	u, err := g.currentUser(ctx, r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	var rule notifier.Rule
	switch {
	case (body == nil) == (id == ""):
		g.fail(w, r, errorf(http.StatusBadRequest, "malformed_body", "give either rule or rule_id"))
		return
	case id != "":
		if rule, _, err = g.ownRule(ctx, id, u); err != nil {
			g.fail(w, r, err)
			return
		}
		rule.FiredAt = nil // a spent once rule still previews its firing
	default:
		if body.Threshold == nil && body.Kind.NeedsThreshold() {
			g.fail(w, r, errorf(http.StatusBadRequest, "invalid_threshold", "threshold is required"))
			return
		}
		rule = body.rule()
		rule.ID, rule.Owner, rule.OwnerID = "preview", u.Username, u.ID
		if err := g.checkRule(ctx, r, &rule, u.Role == streams.RoleAdmin); err != nil {
			g.fail(w, r, err)
			return
		}
	}
	inputs, n, err := g.previewInputs(ctx, rule, from, to)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	// The rate cap is left out: it depends on the user's other rules.
	fired := notifier.Preview(notifier.EngineConfig{}, []notifier.Rule{rule}, inputs)
	out := make([]alertEventView, len(fired))
	for i, a := range fired {
		out[i] = viewAlertEvent(a, 0)
	}
	ans := map[string]any{"rule": viewRule(rule), "from": from, "to": to, "firings": out}
	if n.candles >= 0 {
		ans["candles"] = n.candles
	}
	if n.predictions >= 0 {
		ans["predictions"] = n.predictions
	}
	if n.audit >= 0 {
		ans["audit_events"] = n.audit
	}
	if rule.Trigger == notifier.TriggerOncePerCandle && !rule.Kind.Security() {
		// Ticks are kept minutes, not days: what a preview cannot replay
		// it says it did not.
		ans["note"] = "running candles (ticks) are not stored long enough to replay: a once_per_candle rule is previewed on closed candles, where it fires no earlier than it does live"
	}
	writeJSON(w, http.StatusOK, ans)
}

// previewCounts is how many events of each kind a preview replayed; -1
// for a kind the rule does not read.
type previewCounts struct{ candles, predictions, audit int }

// previewSkew is how far before a range a preview starts reading events
// by their store time, for a producer whose clock is a little behind.
const previewSkew = time.Minute

// previewInputs gathers what the worker would have fed the rule over
// [from, to): the series' closed candles (from the read model) for market
// rules, its predictions for prediction rules, and the audit events of
// the watched action for security rules (both from their streams).
func (g *Gateway) previewInputs(ctx context.Context, rule notifier.Rule, from, to time.Time) ([]notifier.Input, previewCounts, error) {
	n := previewCounts{candles: 0, predictions: -1, audit: -1}
	var inputs []notifier.Input
	inRange := func(in notifier.Input) bool { at := in.At(); return !at.Before(from) && at.Before(to) }
	read := func(stream, subject string, decode func([]byte) (notifier.Input, error)) (int, error) {
		msgs, err := streams.ReadSince(ctx, g.d.Streams, stream, subject, from.Add(-previewSkew), previewMaxCandles)
		if errors.Is(err, streams.ErrTooManyMessages) {
			return 0, errorf(http.StatusBadRequest, "invalid_range", "the range holds more than %d events", previewMaxCandles)
		}
		if err != nil {
			return 0, err
		}
		got := 0
		for _, m := range msgs {
			in, err := decode(m.Data)
			if err != nil || !inRange(in) {
				continue // the worker rejects what does not decode too
			}
			in.Source = notifier.Source{Stream: stream, Seq: m.Seq}
			inputs = append(inputs, in)
			got++
		}
		return got, nil
	}
	if rule.Kind.Security() {
		n.candles = -1
		var err error
		n.audit, err = read(streams.StreamAudit, streams.AuditSubject(notifier.AuditAction(rule.Kind)), func(b []byte) (notifier.Input, error) {
			a, err := streams.Decode[streams.AuditEvent](b)
			return notifier.Input{Audit: &a}, err
		})
		return inputs, n, err
	}
	cursor := ""
	for {
		page, err := g.d.Reader.Candles(ctx, readmodel.CandleQuery{Symbol: rule.Symbol, Interval: rule.Interval, From: from, To: to, Limit: readmodel.MaxLimit, After: cursor})
		if err != nil && !errors.Is(err, readmodel.ErrNotFound) {
			return nil, n, err
		}
		for i := range page.Candles {
			c := page.Candles[i]
			inputs = append(inputs, notifier.Input{Candle: &c, Source: notifier.Source{Stream: streams.StreamMarket}})
		}
		n.candles += len(page.Candles)
		if n.candles > previewMaxCandles {
			return nil, n, errorf(http.StatusBadRequest, "invalid_range", "the range holds more than %d candles", previewMaxCandles)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	// After the candles: a stable sort by event time keeps a candle before
	// a prediction of the same instant, the order they reach the worker.
	if rule.Kind.OnPredictions() {
		var err error
		n.predictions, err = read(streams.StreamPredictions, streams.PredictionSubject(rule.Interval, rule.Symbol), func(b []byte) (notifier.Input, error) {
			p, err := streams.Decode[streams.Prediction](b)
			return notifier.Input{Prediction: &p}, err
		})
		if err != nil {
			return nil, n, err
		}
	}
	return inputs, n, nil
}

// historyScan bounds the stream messages one history page reads: a user
// whose alerts are rare among everyone's still gets an answer quickly,
// with a cursor to read on from.
const historyScan = 5000

// alertsHistory pages through the ALERTS stream by sequence, keeping the
// alerts the caller may see: their own, the system's, and for an admin the
// admins' (or, with ?user=, that user's only).
func (g *Gateway) alertsHistory(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			g.fail(w, r, errorf(http.StatusBadRequest, "invalid_after", "after must be a stream sequence"))
			return
		}
		after = n
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > readmodel.MaxLimit {
			g.fail(w, r, errorf(http.StatusBadRequest, "invalid_limit", "limit must be in [1, %d]", readmodel.MaxLimit))
			return
		}
		limit = n
	}
	subject := "alerts.>"
	if s := q.Get("symbol"); s != "" {
		sym, err := assetParam(s)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		subject = streams.AlertSubject(sym)
	}
	ctx, cancel := g.io(r)
	defer cancel()
	u, err := g.currentUser(ctx, r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	admin := u.Role == streams.RoleAdmin
	only := q.Get("user")
	if only != "" && !admin {
		g.fail(w, r, errorf(http.StatusForbidden, "forbidden", "only an admin may read another user's alerts"))
		return
	}
	onlyID := ""
	if only != "" {
		if onlyID, err = g.accountID(ctx, only); err != nil {
			g.fail(w, r, err)
			return
		}
	}
	visible := func(a streams.Alert) bool {
		if only != "" {
			return a.Owner == onlyID
		}
		return streams.AlertVisible(a.Owner, u.ID, admin)
	}
	msgs, err := streams.ReadRange(ctx, g.d.Streams, streams.StreamAlerts, subject, after+1, after+1+historyScan)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	out := []alertEventView{}
	var next *uint64
	for _, m := range msgs {
		a, err := streams.Decode[streams.Alert](m.Data)
		if err != nil || !visible(a) {
			continue
		}
		out = append(out, viewAlertEvent(a, m.Seq))
		if len(out) == limit {
			seq := m.Seq
			next = &seq
			break
		}
	}
	if next == nil {
		// The whole window was read: point past it if the stream goes on.
		st, err := g.d.Streams.Stream(ctx, streams.StreamAlerts)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		info, err := st.Info(ctx)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		if end := after + historyScan; info.State.LastSeq > end {
			next = &end
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"alerts": out, "next": next})
}

// adoptRuleOwners gives the rules stored before rules named their owner's
// account that account's ID, and deletes those of accounts that are gone
// (see notifier.Store.AdoptOwners). renamed maps the accounts moved to
// their canonical names at this start.
func (g *Gateway) adoptRuleOwners(ctx context.Context, renamed []auth.Rename) error {
	if g.rules == nil {
		return nil
	}
	moved := map[string]string{}
	for _, r := range renamed {
		moved[r.From] = r.To
	}
	lookup := func(ctx context.Context, name string) (notifier.Account, bool, error) {
		if to, ok := moved[name]; ok {
			name = to
		}
		u, _, err := g.users.Get(ctx, name)
		if errors.Is(err, auth.ErrUserNotFound) {
			return notifier.Account{}, false, nil
		}
		if err == nil && u.ID == "" {
			// An account from before IDs: an update that changes nothing
			// gives it one, without revoking its tokens.
			u, err = g.users.Update(ctx, name, func(*streams.User) error { return nil })
		}
		if err != nil {
			return notifier.Account{}, false, err
		}
		return notifier.Account{ID: u.ID, CreatedAt: u.CreatedAt}, true, nil
	}
	adopted, removed, err := g.rules.AdoptOwners(ctx, lookup)
	for _, r := range adopted {
		g.log.Info("alert rule adopted by its owner's account", "rule_id", r.ID, "owner", r.Owner)
	}
	for _, r := range removed {
		g.log.Warn("deleted an alert rule whose owner's account is gone", "rule_id", r.ID, "owner", r.Owner)
		g.audit(ctx, "alert.rule.delete", "system", r.ID, "ok", "", "owner "+r.Owner+" gone")
	}
	if err != nil {
		return fmt.Errorf("gateway: adopt alert rules: %w", err)
	}
	// A deletion that stopped before its rules went, with no gateway
	// watching to finish it, is finished here.
	orphans, err := g.rules.DropOrphans(ctx, func(ctx context.Context) (map[string]bool, error) {
		users, err := g.users.List(ctx)
		ids := make(map[string]bool, len(users))
		for _, u := range users {
			ids[u.ID] = true
		}
		return ids, err
	})
	for _, r := range orphans {
		g.log.Warn("deleted an alert rule whose owner's account is gone", "rule_id", r.ID, "owner", r.Owner)
		g.audit(ctx, "alert.rule.delete", "system", r.ID, "ok", "", "owner "+r.Owner+" gone")
	}
	if err != nil {
		return fmt.Errorf("gateway: drop orphaned alert rules: %w", err)
	}
	return nil
}

// dropRulesOf deletes the rules of a deleted account: they would reach
// nobody, and the worker need not evaluate them. The users watch hears of
// the deletion too (ruleReaper), which finishes what this leaves.
func (g *Gateway) dropRulesOf(ctx context.Context, u streams.User, actor, remote string) {
	if g.rules == nil || u.ID == "" {
		return
	}
	if err := g.deleteRulesOf(ctx, u.Username, u.ID, actor, remote); err != nil {
		g.log.Warn("alert rules of a deleted user not deleted yet; the users watch retries", "user", u.Username, "err", err)
	}
}

// deleteRulesOf deletes an account's rules, auditing each.
func (g *Gateway) deleteRulesOf(ctx context.Context, name, id, actor, remote string) error {
	gone, err := g.rules.DeleteOwned(ctx, id)
	for _, r := range gone {
		g.audit(ctx, "alert.rule.delete", actor, r.ID, "ok", remote, "user "+name+" deleted")
	}
	return err
}

// ruleReaper queues the accounts the users watch saw go, whoever deleted
// them (this process, another replica, `cryptostream user delete`), for
// their rules to be deleted off the watch's goroutine.
type ruleReaper struct {
	mu      sync.Mutex
	pending []goneAccount
	wake    chan struct{}
}

type goneAccount struct{ name, id string }

func newRuleReaper() *ruleReaper { return &ruleReaper{wake: make(chan struct{}, 1)} }

func (q *ruleReaper) add(name, id string) {
	q.mu.Lock()
	q.pending = append(q.pending, goneAccount{name, id})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *ruleReaper) take() []goneAccount {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.pending
	q.pending = nil
	return p
}

// reapRules deletes the rules of every account the users watch saw go,
// retrying what failed, until ctx ends. Every replica does it: the
// deletions are compare-and-swap, so the second finds nothing.
func (g *Gateway) reapRules(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.reaper.wake:
		}
		for _, a := range g.reaper.take() {
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := g.deleteRulesOf(dctx, a.name, a.id, "system", "")
			cancel()
			if err != nil && ctx.Err() == nil {
				g.log.Warn("alert rules of a gone account not deleted; retrying", "user", a.name, "err", err)
				g.reaper.add(a.name, a.id)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
	}
}
