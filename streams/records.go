package streams

import (
	"time"
)

// The values kept in KV buckets. They are state, not events: each has one
// key and is changed with compare-and-swap on the entry's revision.

// Asset is a tracked pair in the assets bucket, keyed by AssetKey. The
// ingester subscribes to every asset in the bucket.
type Asset struct {
	Schema
	Symbol    string    `json:"symbol"`
	AddedBy   string    `json:"added_by,omitempty"`
	AddedAt   time.Time `json:"added_at"`
	KrakenKey string    `json:"kraken_key,omitempty"` // REST pair name, e.g. XXBTZUSD
}

// AssetKey is the assets bucket key of a symbol: its subject token, which is
// also the asset's id in the REST API.
func AssetKey(symbol string) string { return token(symbol) }

// Role is what a user may do.
type Role string

// The roles.
const (
	RoleUser  Role = "user"
	RoleAdmin Role = "admin"
)

// User is an account in the users bucket, keyed by UserKey. PasswordHash
// never leaves the bucket: the read model and the API drop it.
type User struct {
	Schema
	// ID is the account's stable identity: a token names it, so that a
	// token of a deleted account never opens one created later under the
	// same name.
	ID       string `json:"id,omitempty"`
	Username string `json:"username"`
	// TokenGen is bumped whenever the password, the role or the disabled
	// flag changes; a token carries the generation it was issued at and
	// is refused once it is behind.
	TokenGen     uint64    `json:"token_gen,omitempty"`
	Email        string    `json:"email,omitempty"`
	FullName     string    `json:"full_name,omitempty"`
	Role         Role      `json:"role"`
	PasswordHash string    `json:"password_hash"`
	Disabled     bool      `json:"disabled,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// UserKey is the users bucket key of a username (already validated to be
// a KV-safe token by whoever creates the user).
func UserKey(username string) string { return username }

// Metrics are the evaluation figures of a model or a baseline on one split.
type Metrics struct {
	N                 int     `json:"n"`
	MSE               float64 `json:"mse"`
	R2                float64 `json:"r2"`
	MAE               float64 `json:"mae"`
	DirectionAccuracy float64 `json:"direction_accuracy"`
}

// ModelRecord is a trained model in the model-registry bucket, keyed by
// ModelKey. Coefficients[0] is the intercept, the rest follow Features.
type ModelRecord struct {
	Schema
	ID           string             `json:"id"`
	Symbol       string             `json:"symbol"`
	Interval     Interval           `json:"interval"`
	Horizon      int                `json:"horizon"`
	Features     []string           `json:"features"`
	Coefficients []float64          `json:"coefficients"`
	ResidualStd  float64            `json:"residual_std"`
	TrainFrom    time.Time          `json:"train_from"`
	TrainTo      time.Time          `json:"train_to"`
	TestFrom     time.Time          `json:"test_from"`
	TestTo       time.Time          `json:"test_to"`
	Metrics      map[string]Metrics `json:"metrics"` // train, test, baseline_zero, baseline_last, live
	Champion     bool               `json:"champion"`
	Decision     string             `json:"decision,omitempty"` // why it was or was not promoted
	Artifact     string             `json:"artifact,omitempty"` // object name in the models store
	CreatedAt    time.Time          `json:"created_at"`
}

// ModelKey is the registry key of a model.
func ModelKey(id string) string { return "model." + id }

// ChampionKey is the registry key holding the champion model id of a series.
func ChampionKey(iv Interval, symbol string) string {
	return "champion." + iv.String() + "." + token(symbol)
}

// ForecastKey is the registry key of a series' live forecast scores.
func ForecastKey(iv Interval, symbol string) string {
	return "forecast." + iv.String() + "." + token(symbol)
}

// ForecastScore is the live scoring of a series' forecasts (every
// horizon, champion or no-change), kept under ForecastKey by the
// predictor: each forecast is scored when its target candle closes.
type ForecastScore struct {
	Schema
	Symbol    string         `json:"symbol"`
	Interval  Interval       `json:"interval"`
	Horizons  []HorizonScore `json:"horizons"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// HorizonScore is one horizon's live scores over the trailing day and
// week of targets. Failing is the "model failing" condition: over the
// week, the 80% interval covered outside 75–85% of at least a day of
// outcomes; FailingReason says by how much.
type HorizonScore struct {
	Horizon       int         `json:"horizon"`
	Day           ScoreWindow `json:"day"`
	Week          ScoreWindow `json:"week"`
	Failing       bool        `json:"failing"`
	FailingReason string      `json:"failing_reason,omitempty"`
}

// ScoreWindow is the live scores of the outcomes of one window. MSE is
// the published point forecast's (the champion's or no-change's) and
// MSENoChange no-change's on the same outcomes; QLIKE is the volatility
// forecast's and QLIKENaiveLast/Day the naive ones' (last horizon's
// realised variance, trailing day's), over the QLIKEN outcomes that moved
// at all (QLIKE is undefined for a realised variance of zero); Brier
// scores the probability of an up move the forecast implies, against
// climatology (the window's share of up moves so far).
type ScoreWindow struct {
	N                int             `json:"n"`
	Coverage         []LevelCoverage `json:"coverage"`
	MSE              float64         `json:"mse"`
	MSENoChange      float64         `json:"mse_no_change"`
	QLIKEN           int             `json:"qlike_n"`
	QLIKE            float64         `json:"qlike"`
	QLIKENaiveLast   float64         `json:"qlike_naive_last"`
	QLIKENaiveDay    float64         `json:"qlike_naive_day"`
	Brier            float64         `json:"brier"`
	BrierClimatology float64         `json:"brier_climatology"`
}

// LevelCoverage is the measured coverage of the interval of a nominal
// level.
type LevelCoverage struct {
	Level    float64 `json:"level"`
	Coverage float64 `json:"coverage"`
}

// JobState is where a job is in its life.
type JobState string

// The job states.
const (
	JobQueued  JobState = "queued"
	JobRunning JobState = "running"
	JobDone    JobState = "done"
	JobFailed  JobState = "failed"
)

// JobStatus is a job's state in the jobs bucket, keyed by the job id.
type JobStatus struct {
	Schema
	Job       Job               `json:"job"`
	State     JobState          `json:"state"`
	Error     string            `json:"error,omitempty"`
	Result    map[string]string `json:"result,omitempty"`
	UpdatedAt time.Time         `json:"updated_at"`
}
