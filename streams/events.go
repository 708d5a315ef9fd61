package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	// A drop-in for encoding/json that writes the same bytes in a third
	// of the time and decodes in a fifth (BENCHMARKS.md, internal hops);
	// TestJSONMatchesStdlib and FuzzJSONDecodeMatchesStdlib hold it to the
	// standard library.
	fastjson "github.com/segmentio/encoding/json"
)

// SchemaVersion is the version every event is written with. A reader that
// meets another version rejects the event as permanent rather than guess.
const SchemaVersion = 1

// ErrInvalidEvent is wrapped by every Validate failure. It is permanent:
// redelivering an invalid event cannot make it valid.
var ErrInvalidEvent = fmt.Errorf("streams: invalid event: %w", ErrPermanent)

// Event is what travels on the bus: validated, versioned, with a subject and
// a deterministic message id so that a retry is deduplicated by the server.
type Event interface {
	Validate() error
	Subject() string
	MsgID() string
	schema() *Schema
}

// Schema carries the version field every event shares.
type Schema struct {
	V int `json:"v"`
}

func (s *Schema) schema() *Schema { return s }

// Quality says where a candle came from, so that everything downstream can
// tell repaired data from live data.
type Quality string

const (
	// QualityLive came from the exchange's socket as it happened.
	QualityLive Quality = "live"
	// QualityBackfilled came from the exchange's REST history after a gap.
	QualityBackfilled Quality = "backfilled"
	// QualityFilled is a synthetic flat candle for an interval with no trades.
	QualityFilled Quality = "filled"
	// QualityImported came from a history file.
	QualityImported Quality = "imported"
)

// Valid reports whether q is one of the known qualities.
func (q Quality) Valid() bool {
	switch q {
	case QualityLive, QualityBackfilled, QualityFilled, QualityImported:
		return true
	}
	return false
}

// Hop records when one stage of the pipeline handled an event; events carry
// the hops of everything they were derived from, so latency per stage can be
// measured at the end of the chain.
type Hop struct {
	Stage string    `json:"stage"`
	At    time.Time `json:"at"`
}

// Trace is the ordered list of hops.
type Trace []Hop

// Stamp returns a copy of the trace with one more hop; the copy keeps an
// event derived from another from sharing its backing array.
func (t Trace) Stamp(stage string, at time.Time) Trace {
	out := make(Trace, len(t), len(t)+1)
	copy(out, t)
	return append(out, Hop{Stage: stage, At: at.UTC()})
}

// StampIn is Stamp made in buf when buf has room for it, so that an event
// and its trace can be one allocation; the result's capacity is its
// length, so an append to it never runs into what follows in buf.
func (t Trace) StampIn(buf []Hop, stage string, at time.Time) Trace {
	if len(t) >= len(buf) {
		return t.Stamp(stage, at)
	}
	out := buf[: len(t)+1 : len(t)+1]
	copy(out, t)
	out[len(t)] = Hop{Stage: stage, At: at.UTC()}
	return out
}

// At returns when stage handled the event, if it did.
func (t Trace) At(stage string) (time.Time, bool) {
	for _, h := range t {
		if h.Stage == stage {
			return h.At, true
		}
	}
	return time.Time{}, false
}

// Candle is one OHLC bar. Start is the open time on the interval's grid.
type Candle struct {
	Schema
	Symbol   string    `json:"symbol"`
	Interval Interval  `json:"interval"`
	Start    time.Time `json:"start"`
	Open     float64   `json:"open"`
	High     float64   `json:"high"`
	Low      float64   `json:"low"`
	Close    float64   `json:"close"`
	VWAP     float64   `json:"vwap"`
	Volume   float64   `json:"volume"`
	Trades   int64     `json:"trades"`
	Quality  Quality   `json:"quality"`
	Trace    Trace     `json:"trace,omitempty"`
}

// End is the instant the candle closes.
func (c Candle) End() time.Time { return c.Start.Add(c.Interval.Duration()) }

// Subject implements Event.
func (c *Candle) Subject() string { return CandleSubject(c.Interval, c.Symbol) }

// MsgID is candle:<interval>:<SYMBOL-TOKEN>:<open unix>: one id per bar, so a
// bar published live, backfilled and imported is still stored once.
func (c *Candle) MsgID() string { return CandleMsgID(c.Interval, c.Symbol, c.Start) }

// CandleMsgID builds a candle's message id without a Candle at hand.
func CandleMsgID(iv Interval, symbol string, start time.Time) string {
	return seriesString("candle", ':', iv, symbol, start.Unix(), true)
}

// MaxClockSkew is how far past this machine's clock a candle may start:
// the exchange's clock and ours differ by seconds, never by minutes.
const MaxClockSkew = 2 * time.Minute

// ErrFutureCandle is wrapped (with ErrInvalidEvent) by the validation of a
// candle that starts after the clock plus MaxClockSkew. One such candle
// stored would sort after every real one and stop the series.
var ErrFutureCandle = errors.New("streams: candle from the future")

// Validate rejects what no exchange can have produced, on the wall clock.
func (c *Candle) Validate() error { return c.ValidateAt(time.Now()) }

// ValidateAt is Validate on the clock reading now.
func (c *Candle) ValidateAt(now time.Time) error {
	if err := validateSeries(c.Symbol, c.Interval, c.Start); err != nil {
		return err
	}
	if bound := now.Add(MaxClockSkew); c.Start.After(bound) {
		return fmt.Errorf("%w: %w: starts %s, after %s", ErrInvalidEvent, ErrFutureCandle,
			c.Start.UTC().Format(time.RFC3339), bound.UTC().Format(time.RFC3339))
	}
	if !c.Quality.Valid() {
		return invalid("candle: unknown quality %q", c.Quality)
	}
	return validateOHLC(c.Open, c.High, c.Low, c.Close, c.VWAP, c.Volume, c.Trades)
}

func validateOHLC(open, high, low, close, vwap, volume float64, trades int64) error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"open", open}, {"high", high}, {"low", low}, {"close", close}, {"vwap", vwap}, {"volume", volume}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return invalid("candle: %s is %v", f.name, f.v)
		}
		if f.v < 0 {
			return invalid("candle: %s is negative (%v)", f.name, f.v)
		}
	}
	if open == 0 || high == 0 || low == 0 || close == 0 {
		return invalid("candle: zero price")
	}
	if trades < 0 {
		return invalid("candle: negative trade count %d", trades)
	}
	if high < low {
		return invalid("candle: high %v below low %v", high, low)
	}
	if open < low || open > high {
		return invalid("candle: open %v outside [%v, %v]", open, low, high)
	}
	if close < low || close > high {
		return invalid("candle: close %v outside [%v, %v]", close, low, high)
	}
	return nil
}

func validateSeries(symbol string, iv Interval, start time.Time) error {
	if symbol == "" {
		return invalid("empty symbol")
	}
	if err := ValidateSymbol(symbol); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if !iv.Valid() {
		return invalid("unknown interval %d", int(iv))
	}
	if start.IsZero() {
		return invalid("zero start time")
	}
	// Weekly and longer bars are aligned by Kraken on a grid it does not
	// document, so only the day-or-shorter grid is checked.
	if iv <= Interval1d && !iv.Floor(start).Equal(start) {
		return invalid("start %s is not on the %s grid", start.Format(time.RFC3339), iv)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidEvent}, args...)...)
}

// Tick is an update of the candle still in progress. Kraken re-sends the
// whole running candle on every trade, so a tick replaces, never adds.
type Tick struct {
	Schema
	Candle     Candle    `json:"candle"`
	ReceivedAt time.Time `json:"received_at"`
}

// Subject implements Event.
func (t *Tick) Subject() string { return TickSubject(t.Candle.Interval, t.Candle.Symbol) }

// MsgID is the candle's id plus its cumulative trade count and volume, which
// only grow while the candle is open, so distinct updates get distinct ids
// and a re-sent update does not.
func (t *Tick) MsgID() string {
	return "tick" + t.Candle.MsgID()[len("candle"):] + ":" + strconv.FormatInt(t.Candle.Trades, 10) +
		":" + strconv.FormatFloat(t.Candle.Volume, 'g', -1, 64)
}

// Validate implements Event.
func (t *Tick) Validate() error {
	if err := t.Candle.Validate(); err != nil {
		return fmt.Errorf("tick: %w", err)
	}
	return nil
}

// FeatureVector is the model input computed from candles up to and including
// the one starting at Start; Names and Values are parallel. Names and Window
// may be shared with other vectors of the series (and Window with the
// predictions made from it): read them, do not modify them.
type FeatureVector struct {
	Schema
	Symbol    string          `json:"symbol"`
	Interval  Interval        `json:"interval"`
	Start     time.Time       `json:"start"`
	Close     float64         `json:"close"`
	Names     []string        `json:"names"`
	Values    []float64       `json:"values"`
	CandleSeq uint64          `json:"candle_seq"`
	Window    map[Quality]int `json:"window_quality,omitempty"`
	Trace     Trace           `json:"trace,omitempty"`
}

// Subject implements Event.
func (f *FeatureVector) Subject() string { return FeaturesSubject(f.Interval, f.Symbol) }

// MsgID is one vector per candle.
func (f *FeatureVector) MsgID() string {
	return seriesString("features", ':', f.Interval, f.Symbol, f.Start.Unix(), true)
}

// Validate implements Event.
func (f *FeatureVector) Validate() error {
	if err := validateSeries(f.Symbol, f.Interval, f.Start); err != nil {
		return err
	}
	if !positiveFinite(f.Close) {
		return invalid("features: close %v", f.Close)
	}
	if len(f.Names) != len(f.Values) {
		return invalid("features: %d names for %d values", len(f.Names), len(f.Values))
	}
	for i, v := range f.Values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return invalid("features: %s is %v", f.Names[i], v)
		}
	}
	return nil
}

// ModelNoChange is the Model (and ModelID) of a forecast made without a
// point model: the next closes are forecast equal to this one.
const ModelNoChange = "no-change"

// ModelLinear is the Model of a champion's forecast (ModelID names it).
const ModelLinear = "linear"

// Prediction is the forecast made at the close of the candle starting at
// Start: one per closed candle, whether a champion exists or not. The
// top-level fields are its primary horizon (the champion's when one is
// promoted, else the first configured horizon); Forecasts holds every
// horizon with its intervals. Lower and Upper are the widest interval of
// the primary horizon, or equal to PredictedClose while the volatility
// model warms up (no honest interval yet). Model, Sigma and Forecasts
// were added after the first version: a prediction stored before them
// has none.
type Prediction struct {
	Schema
	Symbol         string          `json:"symbol"`
	Interval       Interval        `json:"interval"`
	Start          time.Time       `json:"start"`
	Target         time.Time       `json:"target"`
	Horizon        int             `json:"horizon"`
	ModelID        string          `json:"model_id"`
	Close          float64         `json:"close"`
	LogReturn      float64         `json:"log_return"`
	PredictedClose float64         `json:"predicted_close"`
	Lower          float64         `json:"lower"`
	Upper          float64         `json:"upper"`
	CandleSeq      uint64          `json:"candle_seq"`
	Window         map[Quality]int `json:"window_quality,omitempty"`
	Trace          Trace           `json:"trace,omitempty"`
	// Model is ModelNoChange or ModelLinear; Sigma the forecast standard
	// deviation of the log return to Target (0 while warming up).
	Model     string            `json:"model,omitempty"`
	Sigma     float64           `json:"sigma,omitempty"`
	Forecasts []HorizonForecast `json:"forecasts,omitempty"`
}

// HorizonForecast is one horizon's forecast in a Prediction.
type HorizonForecast struct {
	Horizon        int       `json:"horizon"` // intervals
	Target         time.Time `json:"target"`
	Model          string    `json:"model"`
	ModelID        string    `json:"model_id"`
	LogReturn      float64   `json:"log_return"`
	PredictedClose float64   `json:"predicted_close"`
	// Sigma is the volatility model's forecast standard deviation of the
	// log return to Target, VolatilityModel the candidate that made it.
	Sigma           float64 `json:"sigma"`
	VolatilityModel string  `json:"volatility_model,omitempty"`
	// Ready is false while the volatility model warms up: no intervals.
	Ready     bool               `json:"ready"`
	Intervals []ForecastInterval `json:"intervals,omitempty"`
	// Failing is the horizon's live score as this prediction was made
	// (HorizonScore.Failing, which the registry keeps a copy of every few
	// candles): carried on every prediction so that a rule on it is
	// evaluated, replayed and previewed from PREDICTIONS alone.
	Failing       bool   `json:"failing,omitempty"`
	FailingReason string `json:"failing_reason,omitempty"`
}

// ForecastInterval is a price interval with its nominal level and the
// coverage measured over its last Covered outcomes (absent before any).
type ForecastInterval struct {
	Level    float64  `json:"level"`
	Lower    float64  `json:"lower"`
	Upper    float64  `json:"upper"`
	Coverage *float64 `json:"coverage,omitempty"`
	Covered  int      `json:"covered"`
}

// Subject implements Event.
func (p *Prediction) Subject() string { return PredictionSubject(p.Interval, p.Symbol) }

// MsgID is one prediction per candle, whichever model made it, so a
// redelivery after a champion swap cannot publish a second one.
func (p *Prediction) MsgID() string {
	return seriesString("prediction", ':', p.Interval, p.Symbol, p.Start.Unix(), true)
}

// Validate implements Event.
func (p *Prediction) Validate() error {
	if err := validateSeries(p.Symbol, p.Interval, p.Start); err != nil {
		return err
	}
	switch {
	case p.ModelID == "":
		return invalid("prediction: empty model id")
	case p.Horizon < 1:
		return invalid("prediction: horizon %d", p.Horizon)
	case !p.Target.After(p.Start):
		return invalid("prediction: target %s not after start %s", p.Target, p.Start)
	case !positiveFinite(p.Close) || !positiveFinite(p.PredictedClose):
		return invalid("prediction: close %v, predicted %v", p.Close, p.PredictedClose)
	case math.IsNaN(p.LogReturn) || math.IsInf(p.LogReturn, 0):
		return invalid("prediction: log return %v", p.LogReturn)
	case !(p.Lower <= p.PredictedClose && p.PredictedClose <= p.Upper) || !positiveFinite(p.Lower) || math.IsInf(p.Upper, 0):
		return invalid("prediction: interval [%v, %v] around %v", p.Lower, p.Upper, p.PredictedClose)
	case p.Sigma < 0 || math.IsNaN(p.Sigma) || math.IsInf(p.Sigma, 0):
		return invalid("prediction: sigma %v", p.Sigma)
	}
	for _, f := range p.Forecasts {
		if err := f.validate(p.Start); err != nil {
			return err
		}
	}
	return nil
}

func (f *HorizonForecast) validate(start time.Time) error {
	switch {
	case f.Horizon < 1 || !f.Target.After(start):
		return invalid("prediction: forecast horizon %d, target %s", f.Horizon, f.Target)
	case f.Model == "" || f.ModelID == "":
		return invalid("prediction: forecast at horizon %d names no model", f.Horizon)
	case !positiveFinite(f.PredictedClose) || math.IsNaN(f.LogReturn) || math.IsInf(f.LogReturn, 0):
		return invalid("prediction: forecast at horizon %d: %v (log return %v)", f.Horizon, f.PredictedClose, f.LogReturn)
	case f.Sigma < 0 || math.IsNaN(f.Sigma) || math.IsInf(f.Sigma, 0):
		return invalid("prediction: forecast at horizon %d: sigma %v", f.Horizon, f.Sigma)
	}
	for _, iv := range f.Intervals {
		if !(iv.Level > 0 && iv.Level < 1) || !positiveFinite(iv.Lower) || math.IsInf(iv.Upper, 0) ||
			!(iv.Lower <= f.PredictedClose && f.PredictedClose <= iv.Upper) || iv.Covered < 0 ||
			(iv.Coverage != nil && !(*iv.Coverage >= 0 && *iv.Coverage <= 1)) {
			return invalid("prediction: forecast at horizon %d: interval %+v around %v", f.Horizon, iv, f.PredictedClose)
		}
	}
	return nil
}

// Alert is a fired alert rule. Owner says who may see it: the account ID
// (streams.User.ID, not the name, which a later account may reuse) of the
// rule's owner, "" for a system rule every user sees, or
// AlertAudienceAdmins for the system's security alerts. A security alert has no symbol or interval; Key names what
// it is about (a username, a client address). Stream and Seq are the
// provenance: the stored event that made the rule fire.
type Alert struct {
	Schema
	ID        string             `json:"id"`
	RuleID    string             `json:"rule_id"`
	Owner     string             `json:"owner,omitempty"`
	Symbol    string             `json:"symbol,omitempty"`
	Interval  Interval           `json:"interval,omitempty"`
	Key       string             `json:"key,omitempty"`
	Kind      string             `json:"kind"`
	Message   string             `json:"message"`
	Value     float64            `json:"value"`
	Threshold float64            `json:"threshold"`
	Values    map[string]float64 `json:"values,omitempty"`
	At        time.Time          `json:"at"`
	Stream    string             `json:"stream,omitempty"`
	Seq       uint64             `json:"seq,omitempty"`
	Trace     Trace              `json:"trace,omitempty"`
}

// AlertAudienceAdmins is the Owner of alerts that only admins receive.
const AlertAudienceAdmins = "@admins"

// AlertVisible reports whether an alert of owner may reach the account
// whose ID is account: its own, the system's (no owner), and for an admin
// the admins'. The one rule for the websocket and the history alike.
func AlertVisible(owner, account string, admin bool) bool {
	return owner == "" || (owner == account && account != "") || (admin && owner == AlertAudienceAdmins)
}

// AlertOwner reads only the owner of an encoded alert: what a fan-out
// needs to route it, without decoding the rest.
func AlertOwner(data []byte) (string, error) {
	var v struct {
		Owner string `json:"owner"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return "", fmt.Errorf("%w: alert owner: %w", ErrInvalidEvent, err)
	}
	return v.Owner, nil
}

// Subject implements Event: alerts.<SYMBOL-TOKEN>, or alerts.security for
// a security alert.
func (a *Alert) Subject() string {
	if a.Symbol == "" {
		return AlertSecuritySubject
	}
	return AlertSubject(a.Symbol)
}

// MsgID is one firing per rule, symbol (or key) and trigger time.
func (a *Alert) MsgID() string { return "alert:" + a.ID }

// AlertID is the deterministic id of a firing: rule, symbol or key, and
// trigger time in unix seconds.
func AlertID(ruleID, symbolOrKey string, at time.Time) string {
	return ruleID + ":" + token(symbolOrKey) + ":" + strconv.FormatInt(at.Unix(), 10)
}

// Validate implements Event.
func (a *Alert) Validate() error {
	if a.Symbol != "" || a.Interval != 0 {
		if err := validateSeries(a.Symbol, a.Interval, a.Interval.Floor(a.At)); err != nil {
			return err
		}
	} else if a.At.IsZero() {
		return invalid("alert: zero time")
	}
	switch {
	case a.ID == "" || a.RuleID == "" || a.Kind == "":
		return invalid("alert: id, rule id and kind are required")
	case math.IsNaN(a.Value) || math.IsInf(a.Value, 0) || math.IsNaN(a.Threshold) || math.IsInf(a.Threshold, 0):
		return invalid("alert: value %v, threshold %v", a.Value, a.Threshold)
	}
	for k, v := range a.Values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return invalid("alert: %s is %v", k, v)
		}
	}
	return nil
}

// JobKind names what a job asks for.
type JobKind string

// The job kinds; each has its own subject so each can have its own consumer
// on the work-queue stream.
const (
	JobTrain    JobKind = "train"
	JobScore    JobKind = "score"
	JobPredict  JobKind = "predict"
	JobBacktest JobKind = "backtest"
)

// Valid reports whether k is a known job kind.
func (k JobKind) Valid() bool {
	switch k {
	case JobTrain, JobScore, JobPredict, JobBacktest:
		return true
	}
	return false
}

// Job is a request for work, queued on JOBS.
type Job struct {
	Schema
	ID          string            `json:"id"`
	Kind        JobKind           `json:"kind"`
	Symbol      string            `json:"symbol"`
	Interval    Interval          `json:"interval"`
	Params      map[string]string `json:"params,omitempty"`
	RequestedBy string            `json:"requested_by,omitempty"`
	RequestedAt time.Time         `json:"requested_at"`
}

// Subject implements Event.
func (j *Job) Subject() string { return JobSubject(j.Kind) }

// MsgID makes a resubmitted job id a no-op.
func (j *Job) MsgID() string { return "job:" + j.ID }

// Validate implements Event.
func (j *Job) Validate() error {
	switch {
	case j.ID == "":
		return invalid("job: empty id")
	case !j.Kind.Valid():
		return invalid("job: unknown kind %q", j.Kind)
	case j.RequestedAt.IsZero():
		return invalid("job: zero request time")
	}
	if err := ValidateSymbol(j.Symbol); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if !j.Interval.Valid() {
		return invalid("job: unknown interval %d", int(j.Interval))
	}
	return nil
}

// AuditEvent records an authentication or administrative action.
type AuditEvent struct {
	Schema
	ID      string    `json:"id"`
	Action  string    `json:"action"`
	Actor   string    `json:"actor"`
	Target  string    `json:"target,omitempty"`
	Outcome string    `json:"outcome"`
	Remote  string    `json:"remote,omitempty"`
	Detail  string    `json:"detail,omitempty"`
	At      time.Time `json:"at"`
	// Count is how many like attempts the event stands for when the
	// gateway aggregates them (rate-limited logins), from At to Until;
	// zero means one.
	Count int       `json:"count,omitempty"`
	Until time.Time `json:"until,omitzero"`
}

// Subject implements Event.
func (a *AuditEvent) Subject() string { return AuditSubject(a.Action) }

// MsgID implements Event.
func (a *AuditEvent) MsgID() string { return "audit:" + a.ID }

// Validate implements Event.
func (a *AuditEvent) Validate() error {
	switch {
	case a.ID == "" || a.Action == "" || a.Outcome == "":
		return invalid("audit: id, action and outcome are required")
	case a.At.IsZero():
		return invalid("audit: zero time")
	}
	for _, tok := range []byte(a.Action) {
		if tok == ' ' || tok == '*' || tok == '>' {
			return invalid("audit: action %q is not a subject token", a.Action)
		}
	}
	// AUDIT keeps everything it is given, so nothing a client chose may
	// reach it unbounded.
	if len(a.Action) > maxAuditName || len(a.Actor) > maxAuditName || len(a.Target) > maxAuditName || len(a.Remote) > maxAuditName || len(a.Detail) > maxAuditDetail {
		return invalid("audit: a field is longer than its bound (%d, detail %d)", maxAuditName, maxAuditDetail)
	}
	if a.Count < 0 {
		return invalid("audit: negative count")
	}
	return nil
}

// Bounds of an audit event's fields.
const (
	maxAuditName   = 256
	maxAuditDetail = 2048
)

func positiveFinite(v float64) bool { return v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) }

// Encode validates e, stamps the schema version and encodes it as JSON.
func Encode(e Event) ([]byte, error) { return appendJSON(nil, e) }

// appendJSON is Encode writing into buf's room when it can (a prediction:
// the one event with a writer of its own), so that a caller that encodes
// many can reuse one buffer.
func appendJSON(buf []byte, e Event) ([]byte, error) {
	e.schema().V = SchemaVersion
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var b []byte
	var err error
	if p, ok := e.(*Prediction); ok {
		if cap(buf) < predictionJSONSize {
			buf = make([]byte, 0, predictionJSONSize)
		}
		if b, ok := appendPredictionJSON(buf[:0], p); ok {
			return b, nil
		}
	}
	switch e.(type) {
	case *Candle, *Tick, *FeatureVector, *Prediction:
		// The events of the pipeline's hops, the ones a candle's cost is
		// made of. The rest use omitzero, which the faster codec ignores.
		b, err = fastjson.Marshal(e)
	default:
		b, err = json.Marshal(e)
	}
	if err != nil {
		return nil, fmt.Errorf("streams: encode %T: %w", e, err)
	}
	return b, nil
}

// predictionJSONSize holds a prediction of three horizons with their
// intervals and a trace of four hops in one allocation.
const predictionJSONSize = 2048

// Decode parses and validates an event, JSON or, for the events that have
// one, binary (EncodeBinary). Every failure is permanent.
func Decode[T any, PT interface {
	*T
	Event
}](data []byte) (T, error) {
	var v T
	e := PT(&v)
	if be, ok := any(e).(binaryEvent); ok && isBinary(data) {
		if err := be.decodeBinary(data); err != nil {
			return v, fmt.Errorf("%w: decode binary %T: %w", ErrInvalidEvent, v, err)
		}
	} else if err := fastjson.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("%w: decode %T: %w", ErrInvalidEvent, v, err)
	}
	if got := e.schema().V; got != SchemaVersion {
		return v, fmt.Errorf("%w: %T schema version %d, want %d", ErrInvalidEvent, v, got, SchemaVersion)
	}
	if err := e.Validate(); err != nil {
		return v, err
	}
	return v, nil
}

// NewMsg encodes e into a message on its subject carrying its Nats-Msg-Id,
// ready for PublishMsg or PublishMsgAsync: in binary for the events internal
// to the pipeline, with a Content-Type header saying so, in JSON for the
// others.
func NewMsg(e Event) (*nats.Msg, error) {
	// The message, its header and the header's values in one allocation
	// each at most: a stage makes one of these per output.
	out := &struct {
		msg  nats.Msg
		vals [2]string
	}{}
	be, binary := e.(binaryEvent)
	data, err := encodeInto(nil, e, be, binary)
	if err != nil {
		return nil, err
	}
	out.vals[0] = e.MsgID()
	h := make(nats.Header, 2)
	h[jetstream.MsgIDHeader] = out.vals[0:1:1]
	if binary {
		out.vals[1] = be.contentType()
		h[HeaderContentType] = out.vals[1:2:2]
	}
	out.msg = nats.Msg{Subject: e.Subject(), Header: h, Data: data}
	return &out.msg, nil
}

// encodeInto encodes e as NewMsg does, into buf's room when it can.
func encodeInto(buf []byte, e Event, be binaryEvent, binary bool) ([]byte, error) {
	if binary {
		return appendBinaryEvent(buf, be)
	}
	return appendJSON(buf, e)
}

// RenewMsg makes m the message NewMsg would make of e, reusing m's header
// and the room of its data: a runner that has landed a batch of outputs
// (nothing holds them any more) fills them again with the next batch's,
// where NewMsg cost each output about 2.5 KB and four allocations
// (BenchmarkPipelineThroughput). Whatever else m carried is dropped. On an
// error m is left as it was.
func RenewMsg(m *nats.Msg, e Event) error {
	be, binary := e.(binaryEvent)
	data, err := encodeInto(m.Data[:0:cap(m.Data)], e, be, binary)
	if err != nil {
		return err
	}
	h := m.Header
	if h == nil {
		h = make(nats.Header, 2)
	}
	for k := range h {
		if k != jetstream.MsgIDHeader && (k != HeaderContentType || !binary) {
			delete(h, k)
		}
	}
	h[jetstream.MsgIDHeader] = one(h[jetstream.MsgIDHeader], e.MsgID())
	if binary {
		h[HeaderContentType] = one(h[HeaderContentType], be.contentType())
	}
	*m = nats.Msg{Subject: e.Subject(), Header: h, Data: data}
	return nil
}

// one is vals holding s alone, in vals' room when it has some.
func one(vals []string, s string) []string {
	if cap(vals) == 0 {
		return []string{s}
	}
	return append(vals[:0], s)
}

// Publisher is the part of jetstream.JetStream that publishing needs.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Publish stores e and waits for the ack. A duplicate (the server had the
// id already) is success: it is what makes retries safe.
func Publish(ctx context.Context, js Publisher, e Event) (*jetstream.PubAck, error) {
	msg, err := NewMsg(e)
	if err != nil {
		return nil, err
	}
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("streams: publish %s: %w", msg.Subject, err)
	}
	return ack, nil
}
