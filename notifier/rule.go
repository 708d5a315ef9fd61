package notifier

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"cryptostream/streams"
)

// Kind names what a rule watches.
type Kind string

// The kinds of rule.
const (
	// KindPriceCross fires when the price crosses Threshold (a level).
	KindPriceCross Kind = "price_cross"
	// KindPercentMove fires when the close moved Threshold percent or more
	// over Window.
	KindPercentMove Kind = "percent_move"
	// KindPredictedMove fires when a prediction's close is Threshold
	// percent or more away from the close it was made at.
	KindPredictedMove Kind = "predicted_move"
	// KindVolatilitySpike fires when the realised volatility over Window is
	// Threshold times (or more) its average over the Count windows before.
	KindVolatilitySpike Kind = "volatility_spike"
	// KindModelError fires when the root mean squared error of the last
	// Count scored predictions is above Threshold percent, or, with a zero
	// Threshold, above the error of the zero-return forecast.
	KindModelError Kind = "model_error"
	// KindForecastFailing fires when the predictor's live score flags the
	// series' forecast failing (its 80% interval covering outside 75-85%
	// over the last week): at Horizon, or at any horizon when Horizon is
	// zero. It fires when the flag is raised and re-arms once it is down.
	KindForecastFailing Kind = "forecast_failing"
	// KindFailedLogins fires when Count failed logins or more happened
	// within Window for one username or one client address (Per).
	KindFailedLogins Kind = "failed_logins"
	// KindRoleGranted fires on every role change.
	KindRoleGranted Kind = "role_granted"
	// KindUserDeleted fires on every deleted user.
	KindUserDeleted Kind = "user_deleted"
)

// Kinds lists every kind, in the order the API documents them.
func Kinds() []Kind {
	return []Kind{KindPriceCross, KindPercentMove, KindPredictedMove, KindVolatilitySpike, KindModelError,
		KindForecastFailing, KindFailedLogins, KindRoleGranted, KindUserDeleted}
}

// Security reports whether k watches the AUDIT stream: only an admin may
// hold such a rule.
func (k Kind) Security() bool {
	return k == KindFailedLogins || k == KindRoleGranted || k == KindUserDeleted
}

// System reports whether the rule is a system rule (no owning account).
func (r *Rule) System() bool { return r.OwnerID == SystemOwner && r.Owner == SystemOwner }

// AuditAction is the audit action a security kind watches (see
// streams.AuditSubject), "" for the other kinds.
func AuditAction(k Kind) string {
	switch k {
	case KindFailedLogins:
		return "auth.login"
	case KindRoleGranted:
		return "user.role"
	case KindUserDeleted:
		return "user.delete"
	}
	return ""
}

// OnPredictions reports whether the kind is evaluated on PREDICTIONS.
func (k Kind) OnPredictions() bool {
	return k == KindPredictedMove || k == KindModelError || k == KindForecastFailing
}

// NeedsThreshold reports whether a rule of the kind must state a
// threshold: the security kinds and a failing forecast are conditions
// with no level.
func (k Kind) NeedsThreshold() bool { return !k.Security() && k != KindForecastFailing }

// onTicks reports whether the kind can trigger on the running candle.
func (k Kind) onTicks() bool { return k == KindPriceCross || k == KindPercentMove }

// Direction is which way a move or a cross must go.
type Direction string

// The directions.
const (
	Up     Direction = "up"
	Down   Direction = "down"
	Either Direction = "either"
)

// Trigger is when a rule may fire, as trading platforms name it.
type Trigger string

// The trigger modes.
const (
	// TriggerOnce fires the first time and never again.
	TriggerOnce Trigger = "once"
	// TriggerOncePerCandle fires at most once per candle, as soon as the
	// running candle (TICKS) meets the condition.
	TriggerOncePerCandle Trigger = "once_per_candle"
	// TriggerOncePerClose fires only on closed candles: slower, but never
	// on a move the candle takes back before it closes.
	TriggerOncePerClose Trigger = "once_per_close"
)

// Per is what failed logins are counted by.
type Per string

// The counting keys of KindFailedLogins.
const (
	PerUsername Per = "username"
	PerIP       Per = "ip"
)

// Format is the shape of a webhook's body.
type Format string

// The webhook payload formats.
const (
	FormatGeneric Format = "generic"
	FormatSlack   Format = "slack"
	FormatDiscord Format = "discord"
)

// Webhook is where a rule's firings are also POSTed. Secret signs them; it
// is stored with the rule and never shown back by the API.
type Webhook struct {
	URL    string `json:"url"`
	Format Format `json:"format,omitempty"`
	Secret string `json:"secret,omitempty"`
}

// Duration is a time.Duration that reads and writes as "15m".
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q (want e.g. 15m)", b)
	}
	*d = Duration(v)
	return nil
}

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// SystemOwner is the owner (name and account ID) of the system rules,
// those configured by flags and those an admin stores as such: their alerts
// reach every user. Their security alerts reach admins only.
const SystemOwner = ""

// Rule is one alert rule, stored under its ID in the alert-rules bucket.
// What Threshold, Window and Count mean depends on Kind (see the kinds).
type Rule struct {
	streams.Schema
	ID string `json:"id"`
	// OwnerID is the stable ID of the owner's account: what the rule's
	// alerts are addressed to and what ownership is checked against, so
	// that an account created later under a deleted one's name inherits
	// none of its rules. Owner is the name, for people to read.
	OwnerID   string           `json:"owner_id,omitempty"`
	Owner     string           `json:"owner"`
	Name      string           `json:"name,omitempty"`
	Kind      Kind             `json:"kind"`
	Symbol    string           `json:"symbol,omitempty"`
	Interval  streams.Interval `json:"interval,omitempty"`
	Direction Direction        `json:"direction,omitempty"`
	Threshold float64          `json:"threshold"`
	Window    Duration         `json:"window,omitempty"`
	Count     int              `json:"count,omitempty"`
	// Horizon is the forecast horizon a forecast_failing rule watches
	// (zero: any).
	Horizon  Duration `json:"horizon,omitempty"`
	Per      Per      `json:"per,omitempty"`
	Trigger  Trigger  `json:"trigger,omitempty"`
	Cooldown Duration `json:"cooldown,omitempty"`
	// Hysteresis is the fraction of the threshold by which the condition
	// must clear before the rule re-arms: 0.25 on a 2% move re-arms it
	// below 1.5%.
	Hysteresis float64    `json:"hysteresis,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	Webhook    *Webhook   `json:"webhook,omitempty"`
	Disabled   bool       `json:"disabled,omitempty"`
	// FiredAt is set on a TriggerOnce rule when it has fired: it is spent.
	FiredAt   *time.Time `json:"fired_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// Bounds of what a rule may ask for: each keeps a rule's state small and
// its evaluation cheap, whatever a user sends.
const (
	MaxWindow    = 7 * 24 * time.Hour
	MaxCount     = 10_000
	MaxCooldown  = 30 * 24 * time.Hour
	MaxNameLen   = 100
	MaxURLLen    = 2048
	MaxSecretLen = 256
	// MaxHorizon is the longest horizon the predictor forecasts.
	MaxHorizon    = 24 * time.Hour
	maxWindowBars = 10_080 // a week of 1m bars
)

// ErrInvalidRule is wrapped by every validation failure.
var ErrInvalidRule = errors.New("notifier: invalid rule")

// FieldError names the field a validation failure is about, for the API's
// 400 answers.
type FieldError struct {
	Field, Code, Message string
}

func (e *FieldError) Error() string { return "notifier: " + e.Field + ": " + e.Message }

// Unwrap makes errors.Is(err, ErrInvalidRule) hold.
func (e *FieldError) Unwrap() error { return ErrInvalidRule }

func bad(field, code, format string, args ...any) error {
	return &FieldError{Field: field, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Normalize fills a rule's defaults (interval 1m, trigger once_per_close,
// direction either, generic webhook format) and spells its symbol BASE/QUOTE.
func (r *Rule) Normalize() {
	if r.Trigger == "" {
		r.Trigger = TriggerOncePerClose
	}
	if r.Kind.Security() {
		r.Symbol, r.Interval = "", 0
		return
	}
	if s, err := streams.NormalizeSymbol(r.Symbol); err == nil {
		r.Symbol = s
	}
	if r.Interval == 0 {
		r.Interval = streams.Interval1m
	}
	if r.Direction == "" && (r.Kind == KindPriceCross || r.Kind == KindPercentMove || r.Kind == KindPredictedMove) {
		r.Direction = Either
	}
	if r.Webhook != nil && r.Webhook.Format == "" {
		r.Webhook.Format = FormatGeneric
	}
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Validate checks everything about a rule that needs nothing but the rule:
// the asset being tracked, the owner's rule cap and the webhook's address
// are checked by whoever stores it. Call Normalize first.
func (r *Rule) Validate() error {
	if r.Owner != SystemOwner && r.OwnerID == "" {
		// Stored before rules named the account: the gateway adopts it
		// (AdoptOwners) at its start, and until then nobody receives it.
		return bad("owner_id", "no_owner_id", "rule of %s names no account id", r.Owner)
	}
	if r.Name != "" && (len(r.Name) > MaxNameLen || !utf8.ValidString(r.Name) || strings.ContainsFunc(r.Name, func(c rune) bool { return c < 0x20 })) {
		return bad("name", "invalid_name", "name must be at most %d printable characters", MaxNameLen)
	}
	known := false
	for _, k := range Kinds() {
		known = known || k == r.Kind
	}
	if !known {
		return bad("kind", "unknown_kind", "unknown kind %q (want one of %s)", r.Kind, kindList())
	}
	if !finite(r.Threshold) || !finite(r.Hysteresis) {
		return bad("threshold", "invalid_threshold", "threshold and hysteresis must be finite numbers")
	}
	if r.Hysteresis < 0 || r.Hysteresis >= 1 {
		return bad("hysteresis", "invalid_hysteresis", "hysteresis must be in [0, 1)")
	}
	if r.Cooldown < 0 || r.Cooldown.D() > MaxCooldown {
		return bad("cooldown", "invalid_cooldown", "cooldown must be between 0 and %s", MaxCooldown)
	}
	if r.Window < 0 || r.Window.D() > MaxWindow {
		return bad("window", "invalid_window", "window must be between 0 and %s", MaxWindow)
	}
	if r.Count < 0 || r.Count > MaxCount {
		return bad("count", "invalid_count", "count must be between 0 and %d", MaxCount)
	}
	if r.Horizon != 0 && r.Kind != KindForecastFailing {
		return bad("horizon", "invalid_horizon", "horizon is for forecast_failing rules only")
	}
	if err := r.validateKind(); err != nil {
		return err
	}
	switch r.Trigger {
	case TriggerOnce, TriggerOncePerCandle, TriggerOncePerClose:
	default:
		return bad("trigger", "invalid_trigger", "trigger must be once, once_per_candle or once_per_close")
	}
	if r.Trigger == TriggerOncePerCandle && !r.Kind.onTicks() && !r.Kind.Security() {
		return bad("trigger", "invalid_trigger", "%s is evaluated on closed candles only: use once or once_per_close", r.Kind)
	}
	if r.Webhook != nil {
		if r.Webhook.URL == "" || len(r.Webhook.URL) > MaxURLLen {
			return bad("webhook.url", "invalid_webhook", "webhook url is required and at most %d bytes", MaxURLLen)
		}
		switch r.Webhook.Format {
		case FormatGeneric, FormatSlack, FormatDiscord:
		default:
			return bad("webhook.format", "invalid_webhook", "webhook format must be generic, slack or discord")
		}
		if len(r.Webhook.Secret) > MaxSecretLen {
			return bad("webhook.secret", "invalid_webhook", "webhook secret is at most %d bytes", MaxSecretLen)
		}
	}
	return nil
}

func kindList() string {
	var s []string
	for _, k := range Kinds() {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

func (r *Rule) validateKind() error {
	if r.Kind.Security() {
		if r.Kind == KindFailedLogins {
			if r.Count < 2 {
				return bad("count", "invalid_count", "failed_logins needs count >= 2")
			}
			if r.Window <= 0 {
				return bad("window", "invalid_window", "failed_logins needs a window")
			}
			if r.Per != PerUsername && r.Per != PerIP {
				return bad("per", "invalid_per", "per must be username or ip")
			}
		}
		return nil
	}
	if err := streams.ValidateSymbol(r.Symbol); err != nil {
		return bad("symbol", "invalid_symbol", "symbol must be BASE/QUOTE, e.g. BTC/USD")
	}
	if !r.Interval.Valid() || r.Interval > streams.Interval1d {
		return bad("interval", "invalid_interval", "interval must be one of 1m 5m 15m 30m 1h 4h 1d")
	}
	switch r.Direction {
	case "", Up, Down, Either:
	default:
		return bad("direction", "invalid_direction", "direction must be up, down or either")
	}
	bars := 0
	if r.Window > 0 {
		bars = int(r.Window.D() / r.Interval.Duration())
	}
	switch r.Kind {
	case KindPriceCross:
		if r.Threshold <= 0 || r.Threshold > 1e9 {
			return bad("threshold", "threshold_out_of_range", "a price level must be in (0, 1e9]")
		}
	case KindPercentMove:
		if r.Threshold <= 0 || r.Threshold > 100 {
			return bad("threshold", "threshold_out_of_range", "a percent move must be in (0, 100]")
		}
		if bars < 1 || r.Window.D()%r.Interval.Duration() != 0 {
			return bad("window", "invalid_window", "window must be a whole number of %s candles", r.Interval)
		}
	case KindPredictedMove:
		if r.Threshold <= 0 || r.Threshold > 100 {
			return bad("threshold", "threshold_out_of_range", "a predicted move must be in (0, 100] percent")
		}
	case KindVolatilitySpike:
		if r.Threshold <= 1 || r.Threshold > 100 {
			return bad("threshold", "threshold_out_of_range", "a volatility ratio must be in (1, 100]")
		}
		if bars < 2 || r.Window.D()%r.Interval.Duration() != 0 {
			return bad("window", "invalid_window", "window must be at least two whole %s candles", r.Interval)
		}
		if r.Count < 1 || bars*(r.Count+1) > maxWindowBars {
			return bad("count", "invalid_count", "count (windows in the average) must be >= 1, with window x (count+1) at most %d candles", maxWindowBars)
		}
	case KindModelError:
		if r.Threshold < 0 || r.Threshold > 100 {
			return bad("threshold", "threshold_out_of_range", "a model error must be in [0, 100] percent (0: worse than the zero-return forecast)")
		}
		if r.Count < 5 || r.Count > 1000 {
			return bad("count", "invalid_count", "count (scored predictions) must be in [5, 1000]")
		}
	case KindForecastFailing:
		if r.Threshold != 0 {
			return bad("threshold", "threshold_out_of_range", "forecast_failing takes no threshold (the live score's failing flag is the condition)")
		}
		if r.Horizon < 0 || r.Horizon.D() > MaxHorizon || r.Horizon.D()%r.Interval.Duration() != 0 {
			return bad("horizon", "invalid_horizon", "horizon must be a whole number of %s candles, at most %s (or none: any horizon)", r.Interval, MaxHorizon)
		}
	}
	return nil
}
