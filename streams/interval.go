package streams

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrUnknownInterval reports an interval Kraken does not serve.
var ErrUnknownInterval = errors.New("streams: unknown interval")

// Interval is a candle width. Only Kraken's OHLC intervals exist, so that a
// candle from the socket, from REST and from an import line up on one grid.
type Interval int

// The intervals, valued in minutes as Kraken numbers them.
const (
	Interval1m  Interval = 1
	Interval5m  Interval = 5
	Interval15m Interval = 15
	Interval30m Interval = 30
	Interval1h  Interval = 60
	Interval4h  Interval = 240
	Interval1d  Interval = 1440
	Interval1w  Interval = 10080
	Interval15d Interval = 21600
)

var intervalNames = map[Interval]string{
	Interval1m: "1m", Interval5m: "5m", Interval15m: "15m", Interval30m: "30m",
	Interval1h: "1h", Interval4h: "4h", Interval1d: "1d", Interval1w: "1w", Interval15d: "15d",
}

var intervalsByName = func() map[string]Interval {
	m := make(map[string]Interval, len(intervalNames))
	for iv, name := range intervalNames {
		m[name] = iv
	}
	return m
}()

// Intervals lists every valid interval, shortest first.
func Intervals() []Interval {
	return []Interval{Interval1m, Interval5m, Interval15m, Interval30m, Interval1h, Interval4h, Interval1d, Interval1w, Interval15d}
}

// IntervalFromMinutes maps Kraken's integer interval to an Interval.
func IntervalFromMinutes(minutes int) (Interval, error) {
	iv := Interval(minutes)
	if !iv.Valid() {
		return 0, fmt.Errorf("%w: %d minutes", ErrUnknownInterval, minutes)
	}
	return iv, nil
}

// ParseInterval accepts the subject form ("1m", "4h") and Kraken's minutes ("240").
func ParseInterval(s string) (Interval, error) {
	if iv, ok := intervalsByName[s]; ok {
		return iv, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		return IntervalFromMinutes(n)
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownInterval, s)
}

// Valid reports whether iv is one of Kraken's intervals.
func (iv Interval) Valid() bool {
	_, ok := intervalNames[iv]
	return ok
}

// Minutes is Kraken's integer form.
func (iv Interval) Minutes() int { return int(iv) }

// Duration is the candle width.
func (iv Interval) Duration() time.Duration { return time.Duration(iv) * time.Minute }

// String is the subject token form ("1m").
func (iv Interval) String() string {
	if name, ok := intervalNames[iv]; ok {
		return name
	}
	return fmt.Sprintf("invalid(%d)", int(iv))
}

// Floor returns the start of the interval containing t on the UTC epoch grid,
// which is the grid Kraken uses for every interval up to a day.
func (iv Interval) Floor(t time.Time) time.Time {
	return t.UTC().Truncate(iv.Duration())
}

// MarshalText encodes the interval as its subject token so that events read
// the same way subjects do.
func (iv Interval) MarshalText() ([]byte, error) {
	if !iv.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownInterval, int(iv))
	}
	return []byte(iv.String()), nil
}

// UnmarshalText accepts what ParseInterval accepts.
func (iv *Interval) UnmarshalText(b []byte) error {
	parsed, err := ParseInterval(string(b))
	if err != nil {
		return err
	}
	*iv = parsed
	return nil
}
