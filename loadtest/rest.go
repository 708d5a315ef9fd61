package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
type RESTConfig struct {
	URL, MetricsURL, Token, Path string
	Concurrency                  int
	Warmup, Duration             time.Duration
}

// RESTResult is what it measured.
type RESTResult struct {
	Requests      int64
	PerSec        float64
	P50, P99, Max time.Duration
	Status        map[int]int64 // answers by status; 0 for transport errors
	ServerCPU     float64
	LoadgenCPU    float64
}

func (r RESTResult) String() string {
	return fmt.Sprintf("requests %d, %.0f req/s, p50 %s p99 %s max %s, status %v, server cpu %.2f cores, loadgen cpu %.2f cores",
		r.Requests, r.PerSec, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond), r.Status, r.ServerCPU, r.LoadgenCPU)
}

// RunREST runs one REST scenario against a running gateway.
func RunREST(ctx context.Context, cfg RESTConfig) (RESTResult, error) {
	res := RESTResult{Status: map[int]int64{}}
	if err := CheckLoopback(cfg.URL); err != nil {
		return res, err
	}
	if cfg.MetricsURL == "" {
		cfg.MetricsURL = cfg.URL + "/metrics"
	}
	if err := CheckLoopback(cfg.MetricsURL); err != nil {
		return res, err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency, MaxConnsPerHost: cfg.Concurrency, DialContext: (&net.Dialer{}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	type worker struct {
		lat    []int64
		status map[int]int64
	}
	workers := make([]*worker, cfg.Concurrency)
	var stop sync.WaitGroup
	start := make(chan struct{})
	done := make(chan struct{})
	var measure atomic.Bool
	for i := range workers {
		w := &worker{status: map[int]int64{}}
		workers[i] = w
		stop.Add(1)
		go func() {
			defer stop.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL+cfg.Path, nil)
			req.Header.Set("Authorization", "Bearer "+cfg.Token)
			<-start
			for {
				select {
				case <-done:
					return
				default:
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				code := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				d := time.Since(t0)
				if measure.Load() {
					w.lat = append(w.lat, int64(d))
					w.status[code]++
				}
			}
		}()
	}
	close(start)
	time.Sleep(cfg.Warmup)
	m0, err := scrape(ctx, cfg.MetricsURL)
	if err != nil {
		close(done)
		stop.Wait()
		return res, err
	}
	cpu0 := loadgenCPU()
	t0 := time.Now()
	measure.Store(true)
	time.Sleep(cfg.Duration)
	measure.Store(false)
	secs := time.Since(t0).Seconds()
	cpu1 := loadgenCPU()
	m1, err := scrape(ctx, cfg.MetricsURL)
	close(done)
	stop.Wait()
	if err != nil {
		return res, err
	}
	var all []int64
	for _, w := range workers {
		all = append(all, w.lat...)
		for c, n := range w.status {
			res.Status[c] += n
		}
	}
	slices.Sort(all)
	q := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return time.Duration(all[min(len(all)-1, int(p*float64(len(all))))])
	}
	res.Requests = int64(len(all))
	res.PerSec = float64(len(all)) / secs
	res.P50, res.P99, res.Max = q(0.5), q(0.99), q(1)
	res.ServerCPU = (m1["process_cpu_seconds_total"] - m0["process_cpu_seconds_total"]) / secs
	res.LoadgenCPU = (cpu1 - cpu0) / secs
	return res, nil
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
