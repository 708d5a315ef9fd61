package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// RESTConfig is one REST scenario: Concurrency keep-alive clients asking
// for Path with Token for Duration.
//
// With Rate 0 every client sends its next request when the last one is
// answered (closed loop, as wrk does): at saturation the latency is then
// mostly the wait in the server's queue. With Rate > 0 the load is open
// loop: request k of the run is due at k/Rate, the clients take turns, and a
// request's latency runs from when it was due, not from when it was sent, so
// a client held up by a slow answer does not hide the requests it could not
// send meanwhile (coordinated omission, as wrk2 and vegeta count it).
type RESTConfig struct {
	URL, MetricsURL, Token, Path string
	Concurrency                  int
	Rate                         float64
	Warmup, Duration             time.Duration
}

// RESTResult is what it measured.
type RESTResult struct {
	Requests      int64
	PerSec        float64
	P50, P99, Max time.Duration
	// SentP99 is the 99th percentile from when a request was written, which
	// leaves out the time it waited for its client (open loop only).
	SentP99 time.Duration
	// Unsent counts open-loop requests due in the window that no client had
	// sent when the run ended: the offered rate was not kept.
	Unsent     int64
	Status     map[int]int64 // answers by status; 0 for transport errors
	ServerCPU  float64
	LoadgenCPU float64
}

func (r RESTResult) String() string {
	open := ""
	if r.SentP99 > 0 || r.Unsent > 0 {
		open = fmt.Sprintf(" (from the send: p99 %s; unsent %d)", r.SentP99.Round(time.Microsecond), r.Unsent)
	}
	return fmt.Sprintf("requests %d, %.0f req/s, p50 %s p99 %s max %s%s, status %v, server cpu %.2f cores, loadgen cpu %.2f cores",
		r.Requests, r.PerSec, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond), open, r.Status, r.ServerCPU, r.LoadgenCPU)
}

// RunREST runs one REST scenario against a running gateway. A MetricsURL of
// "none" leaves out the server's CPU, for a reference server without one.
func RunREST(ctx context.Context, cfg RESTConfig) (RESTResult, error) {
	res := RESTResult{Status: map[int]int64{}}
	if err := CheckLoopback(cfg.URL); err != nil {
		return res, err
	}
	if cfg.MetricsURL == "" {
		cfg.MetricsURL = cfg.URL + "/metrics"
	}
	if cfg.MetricsURL != "none" {
		if err := CheckLoopback(cfg.MetricsURL); err != nil {
			return res, err
		}
	}
	target, err := newRESTTarget(cfg.URL, cfg.Path, cfg.Token)
	if err != nil {
		return res, err
	}
	type worker struct {
		lat, sent []int64
		status    map[int]int64
		unsent    int64
		lastEnd   time.Time
	}
	workers := make([]*worker, cfg.Concurrency)
	var stop sync.WaitGroup
	done := make(chan struct{})
	var measure atomic.Bool
	// The open loop's schedule: one run-wide origin, the window by due time.
	origin := time.Now()
	var interval time.Duration
	windowFrom, windowTo := origin.Add(cfg.Warmup), origin.Add(cfg.Warmup+cfg.Duration)
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.Rate)
	}
	// unsentFrom counts a client's requests due in the window from due on,
	// which it will not send.
	unsentFrom := func(due time.Time) int64 {
		if due.Before(windowFrom) {
			due = windowFrom
		}
		step := interval * time.Duration(cfg.Concurrency)
		return int64((windowTo.Sub(due) + step - 1) / step)
	}
	for i := range workers {
		w := &worker{status: map[int]int64{}}
		workers[i] = w
		stop.Add(1)
		go func() {
			defer stop.Done()
			conn := target.client()
			defer conn.close()
			timer := time.NewTimer(0)
			defer timer.Stop()
			for k := int64(i); ; k += int64(cfg.Concurrency) {
				var due time.Time
				if interval > 0 {
					due = origin.Add(time.Duration(k) * interval)
					if !due.Before(windowTo) {
						return
					}
					if wait := time.Until(due); wait > 0 {
						timer.Reset(wait)
						select {
						case <-done:
							w.unsent += unsentFrom(due)
							return
						case <-timer.C:
						}
					}
				}
				select {
				case <-done:
					if interval > 0 {
						w.unsent += unsentFrom(due)
					}
					return
				default:
				}
				t0 := time.Now()
				code := conn.get()
				end := time.Now()
				if interval == 0 {
					if measure.Load() {
						w.lat = append(w.lat, int64(end.Sub(t0)))
						w.status[code]++
					}
					continue
				}
				if !due.Before(windowFrom) {
					w.lat = append(w.lat, int64(end.Sub(due)))
					w.sent = append(w.sent, int64(end.Sub(t0)))
					w.status[code]++
					w.lastEnd = end
				}
			}
		}()
	}
	sleepUntil(ctx, windowFrom)
	var m0, m1 map[string]float64
	if cfg.MetricsURL != "none" {
		if m0, err = scrape(ctx, cfg.MetricsURL); err != nil {
			close(done)
			stop.Wait()
			return res, err
		}
	}
	cpu0 := loadgenCPU()
	t0 := time.Now()
	measure.Store(true)
	sleepUntil(ctx, windowTo)
	measure.Store(false)
	secs := time.Since(t0).Seconds()
	cpu1 := loadgenCPU()
	if cfg.MetricsURL != "none" {
		m1, err = scrape(ctx, cfg.MetricsURL)
	}
	if interval > 0 {
		// Clients behind the schedule finish what was due in the window,
		// for a bounded time; what is left is counted as unsent.
		finished := make(chan struct{})
		go func() { stop.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
		case <-ctx.Done():
		}
	}
	close(done)
	stop.Wait()
	if err != nil {
		return res, err
	}
	var all, sent []int64
	lastEnd := windowTo
	for _, w := range workers {
		if w.lastEnd.After(lastEnd) {
			lastEnd = w.lastEnd
		}
		all = append(all, w.lat...)
		sent = append(sent, w.sent...)
		res.Unsent += w.unsent
		for c, n := range w.status {
			res.Status[c] += n
		}
	}
	res.Requests = int64(len(all))
	res.PerSec = float64(len(all)) / secs
	if interval > 0 {
		// What the server kept up with: the window's requests over the
		// time until the last of them was answered.
		res.PerSec = float64(len(all)) / lastEnd.Sub(windowFrom).Seconds()
	}
	res.P50, res.P99, res.Max = quantile(all, 0.5), quantile(all, 0.99), quantile(all, 1)
	res.SentP99 = quantile(sent, 0.99)
	if m0 != nil {
		res.ServerCPU = (m1["process_cpu_seconds_total"] - m0["process_cpu_seconds_total"]) / secs
	}
	res.LoadgenCPU = (cpu1 - cpu0) / secs
	return res, nil
}

// quantile sorts xs and returns its p-quantile as a duration.
func quantile(xs []int64, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return time.Duration(xs[min(len(xs)-1, int(p*float64(len(xs))))])
}

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

// loadgenCPU is this process's CPU time so far, in seconds.
func loadgenCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// AssetsKV is the part of the assets bucket Track uses.
type AssetsKV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
}

// Track adds the symbols the scenario uses to the assets bucket when they
// are missing: the gateway refuses channels of untracked assets.
func Track(ctx context.Context, kv AssetsKV, symbols []string) error {
	for _, sym := range symbols {
		key := streams.AssetKey(sym)
		if _, err := kv.Get(ctx, key); err == nil {
			continue
		}
		b, err := json.Marshal(streams.Asset{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: sym, AddedBy: "loadtest", AddedAt: time.Now().UTC()})
		if err != nil {
			return err
		}
		if _, err := kv.Create(ctx, key, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("loadtest: track %s: %w", sym, err)
		}
	}
	return nil
}
