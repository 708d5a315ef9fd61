package notifier

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"cryptostream/streams"
)

// The headers of a webhook request. The signature is over
// "<timestamp>.<body>", so a receiver that checks the timestamp is recent
// can refuse a replayed request; the delivery id is the same on every
// retry of one alert, so a receiver can also drop a repeat.
const (
	HeaderSignature = "X-Cryptostream-Signature"
	HeaderDelivery  = "X-Cryptostream-Delivery"
)

// Sign returns the signature header value for body sent at ts:
// "t=<unix seconds>,v1=<hex HMAC-SHA256>".
func Sign(secret string, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	return "t=" + t + ",v1=" + mac(secret, t, body)
}

func mac(secret, t string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(t))
	m.Write([]byte("."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// ErrBadSignature is what Verify returns for a request to refuse.
var ErrBadSignature = errors.New("notifier: bad webhook signature")

// Verify checks a signature header as a receiver should: the MAC matches
// and the timestamp is within tolerance of now.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var t, v1 string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			t = v
		case "v1":
			v1 = v
		}
	}
	sec, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v1 == "" {
		return fmt.Errorf("%w: malformed header", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp %s is outside the tolerance", ErrBadSignature, time.Unix(sec, 0).UTC())
	}
	if !hmac.Equal([]byte(v1), []byte(mac(secret, t, body))) {
		return fmt.Errorf("%w: mismatch", ErrBadSignature)
	}
	return nil
}

// Payload is the body POSTed for an alert in a format: generic is the
// alert itself; slack and discord are what their incoming webhooks take.
func Payload(f Format, a streams.Alert) ([]byte, error) {
	a.Trace = nil
	var v any
	switch f {
	case FormatSlack:
		v = map[string]any{"text": ":rotating_light: " + a.Message}
	case FormatDiscord:
		fields := []map[string]any{{"name": "value", "value": strconv.FormatFloat(a.Value, 'g', 6, 64), "inline": true},
			{"name": "threshold", "value": strconv.FormatFloat(a.Threshold, 'g', 6, 64), "inline": true}}
		title := a.Symbol
		if title == "" {
			title = "security: " + a.Key
		}
		v = map[string]any{"content": a.Message, "embeds": []map[string]any{{
			"title": title + " " + a.Kind, "description": a.Message, "timestamp": a.At.UTC().Format(time.RFC3339), "fields": fields}}}
	default:
		v = map[string]any{"type": "alert", "alert": a}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("notifier: webhook payload: %w", err)
	}
	return b, nil
}

// Sender POSTs webhooks through a client that refuses internal addresses
// at connect time (unless AllowPrivate), follows no redirect and uses no
// proxy from the environment (a proxy would dial for it, past the check).
type Sender struct {
	client *http.Client
	now    func() time.Time
}

// NewSender returns a sender with a per-request timeout.
func NewSender(timeout time.Duration, allowPrivate bool, now func() time.Time) *Sender {
	if now == nil {
		now = time.Now
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           SafeDialer(allowPrivate).DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       time.Minute,
	}
	return &Sender{now: now, client: &http.Client{
		Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// ErrGiveUp marks a delivery failure that retrying cannot fix: a refused
// target, a redirect, a 4xx other than 408 and 429.
var ErrGiveUp = errors.New("notifier: webhook refused")

// Send POSTs one alert to a rule's webhook.
func (s *Sender) Send(ctx context.Context, wh Webhook, a streams.Alert) error {
	body, err := Payload(wh.Format, a)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrGiveUp, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, wh.URL, strings.NewReader(string(body)))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrGiveUp, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cryptostream-notifier")
	req.Header.Set(HeaderDelivery, a.ID)
	if wh.Secret != "" {
		req.Header.Set(HeaderSignature, Sign(wh.Secret, s.now(), body))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrForbiddenTarget) {
			return fmt.Errorf("%w: %w", ErrGiveUp, err)
		}
		return fmt.Errorf("notifier: webhook: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return fmt.Errorf("notifier: webhook answered %d", c)
	default:
		return fmt.Errorf("%w: answered %d", ErrGiveUp, c)
	}
}

// Backoff is the wait before retry n (1-based): base doubling up to max,
// with full jitter in its upper half, so that receivers that failed
// together are not retried together.
func Backoff(n int, base, maxWait time.Duration, rnd *rand.Rand) time.Duration {
	d := base
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	half := d / 2
	return half + time.Duration(rnd.Int64N(int64(half)+1))
}
