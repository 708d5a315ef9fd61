package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"cryptostream/datatest"
	"cryptostream/gateway"
	"cryptostream/natstest"
	"cryptostream/readmodel"
	"cryptostream/streams"
)

// TestMain turns the test binary into the websocket load generator when the
// fan-out benchmark starts it as a child process, so that the server's
// memory per connection is measured without the clients' in it.
func TestMain(m *testing.M) {
	if os.Getenv("CS_WSBENCH_URL") != "" {
		os.Exit(wsBenchClient())
	}
	os.Exit(m.Run())
}

func raiseFDLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = max(lim.Cur, 65536)
		lim.Max = max(lim.Max, lim.Cur)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// BenchmarkAssetLatest measures GET /crypto/asset_latest/BTC-USD over
// loopback through the whole stack (token check, metrics, access log, the
// reader), with 32 concurrent keep-alive clients: with the JetStream
// readmodel, with readmodel.Latest in front of it (as the gateway role runs
// it), and with a reader that answers from memory, which isolates the
// gateway's own cost. BenchmarkRawGetLastMsg, in the same run, is the
// JetStream read the answer rests on.
func BenchmarkAssetLatest(b *testing.B) {
	candles := datatest.KrakenCandles(b, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 500)
	for _, c := range []struct {
		name   string
		reader func(*stack) readmodel.Reader
		latest bool
	}{
		{"reader=jetstream", nil, false},
		{"reader=latest", nil, true},
		{"reader=memory", func(*stack) readmodel.Reader { return fixedReader{candles[len(candles)-1]} }, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			var l *readmodel.Latest
			opts := []option{func(_ *gateway.Config, d *gateway.Deps) {
				if c.reader != nil {
					d.Reader = c.reader(nil)
				}
			}}
			if c.latest {
				opts = append(opts, withLatest(b, &l))
			}
			s := newStack(b, opts...)
			publishCandles(b, s, candles)
			if l != nil {
				natstest.WaitFor(b, time.Minute, "the latest cache", func() bool {
					seq, _ := l.Delivered()
					return l.Synced() && seq >= uint64(len(candles))
				})
			}
			benchGet(b, s, "/crypto/asset_latest/BTC-USD")
		})
	}
}

type fixedReader struct{ c streams.Candle }

func (f fixedReader) Candles(context.Context, readmodel.CandleQuery) (readmodel.CandlePage, error) {
	return readmodel.CandlePage{Candles: []streams.Candle{f.c}}, nil
}

func (f fixedReader) LatestCandle(context.Context, string, streams.Interval) (streams.Candle, error) {
	return f.c, nil
}

func (f fixedReader) LatestPrediction(context.Context, string, streams.Interval) (streams.Prediction, error) {
	return streams.Prediction{}, readmodel.ErrNotFound
}

func (f fixedReader) Predictions(context.Context, readmodel.PredictionQuery) (readmodel.PredictionPage, error) {
	return readmodel.PredictionPage{}, nil
}

func (f fixedReader) Alerts(context.Context, readmodel.AlertQuery) ([]streams.Alert, error) {
	return nil, nil
}

func (f fixedReader) Champion(context.Context, string, streams.Interval) (streams.ModelRecord, error) {
	return streams.ModelRecord{}, readmodel.ErrNotFound
}

func benchGet(b *testing.B, s *stack, path string) {
	tok := s.issue(s.tokens, adminName)
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	cl := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	url := s.url + path
	get := func() error {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16) // 16 x GOMAXPROCS(2) = 32 client goroutines
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

func BenchmarkRawGetLastMsg(b *testing.B) {
	s := newStack(b)
	publishCandles(b, s, datatest.KrakenCandles(b, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 500))
	st, err := s.js.Stream(b.Context(), streams.StreamMarket)
	if err != nil {
		b.Fatal(err)
	}
	subj := streams.CandleSubject(streams.Interval1m, "BTC/USD")
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := st.GetLastMsgForSubject(context.Background(), subj); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

type wsBenchResult struct {
	Connected  int     `json:"connected"`
	Done       int     `json:"done"`
	Deliveries int64   `json:"deliveries"`
	Closed     int64   `json:"closed"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	MaxUs      float64 `json:"max_us"`
	LastRecvNs int64   `json:"last_recv_ns"`
}

// BenchmarkWebsocketFanout connects N clients (in a child process) to one
// channel and publishes ticks at a fixed rate; it reports events delivered
// per second, the p99 publish-to-client latency, and the server's memory
// per connection. Run it with -benchtime=1x: one iteration is one scenario.
func BenchmarkWebsocketFanout(b *testing.B) {
	raiseFDLimit()
	for _, c := range []struct{ clients, rate, events int }{{1000, 50, 500}, {1000, 200, 1000}, {5000, 10, 200}, {5000, 40, 400}} {
		b.Run(fmt.Sprintf("clients=%d/rate=%d", c.clients, c.rate), func(b *testing.B) {
			for b.Loop() {
				wsFanout(b, c.clients, c.rate, c.events)
			}
		})
	}
}

// memInUse is the heap and stack in use after a collection.
func memInUse() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse
}

func wsFanout(b *testing.B, clients, rate, events int) {
	s := newStack(b, func(c *gateway.Config, _ *gateway.Deps) { c.Hub.QueueSize = 256; c.Hub.MaxPending = 1024 })
	tok := s.issue(s.tokens, adminName)
	s.track("BTC/USD")
	heap0, stack0 := memInUse()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CS_WSBENCH_URL="+s.wsURL(), "CS_WSBENCH_TOKEN="+tok,
		"CS_WSBENCH_N="+strconv.Itoa(clients), "CS_WSBENCH_EVENTS="+strconv.Itoa(events))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	rd := bufio.NewReader(out)
	line, err := rd.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		b.Fatalf("client process: %q %v", line, err)
	}
	if n := s.gw.Clients(); n != clients {
		b.Fatalf("%d clients connected, want %d", n, clients)
	}
	heap1, stack1 := memInUse()
	heapPer := (float64(heap1) - float64(heap0)) / float64(clients)
	stackPer := (float64(stack1) - float64(stack0)) / float64(clients)
	perConn := heapPer + stackPer

	tick := time.NewTicker(time.Second / time.Duration(rate))
	start := time.Now()
	for i := range events {
		<-tick.C
		tk := &streams.Tick{Candle: streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: tickStart,
			Open: 23500, High: 23550, Low: 23500, Close: 23510, Volume: float64(i + 1), Trades: int64(i + 1), Quality: streams.QualityLive},
			ReceivedAt: time.Now().UTC()}
		if _, err := streams.Publish(b.Context(), s.js, tk); err != nil {
			b.Fatal(err)
		}
	}
	tick.Stop()
	var res wsBenchResult
	if err := json.NewDecoder(rd).Decode(&res); err != nil {
		b.Fatalf("client result: %v", err)
	}
	elapsed := time.Unix(0, res.LastRecvNs).Sub(start).Seconds()
	b.ReportMetric(float64(res.Deliveries)/elapsed, "events/s")
	b.ReportMetric(res.P50us/1000, "p50-ms")
	b.ReportMetric(res.P99us/1000, "p99-ms")
	b.ReportMetric(perConn/1024, "KiB/conn")
	b.ReportMetric(float64(res.Closed), "dropped")
	b.Logf("clients=%d done=%d deliveries=%d/%d p50=%.2fms p99=%.2fms max=%.2fms server mem/conn=%.1f KiB (heap %.1f, stacks %.1f) closed=%d",
		clients, res.Done, res.Deliveries, int64(clients)*int64(events), res.P50us/1000, res.P99us/1000, res.MaxUs/1000, perConn/1024, heapPer/1024, stackPer/1024, res.Closed)
}

// wsBenchClient is the child process: it connects the clients, says
// "ready", reads until each has every event, and prints a wsBenchResult.
func wsBenchClient() int {
	raiseFDLimit()
	url, tok := os.Getenv("CS_WSBENCH_URL"), os.Getenv("CS_WSBENCH_TOKEN")
	n, _ := strconv.Atoi(os.Getenv("CS_WSBENCH_N"))
	events, _ := strconv.Atoi(os.Getenv("CS_WSBENCH_EVENTS"))
	d := websocket.Dialer{Subprotocols: []string{"bearer", tok}, HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 512}
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var failed atomic.Int64
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := d.Dial(url, nil)
			if err != nil {
				failed.Add(1)
				fmt.Fprintln(os.Stderr, "dial:", err)
				return
			}
			if err := c.WriteJSON(map[string]string{"op": "subscribe", "channel": "ticks:BTC-USD"}); err != nil {
				failed.Add(1)
				return
			}
			if _, _, err := c.ReadMessage(); err != nil { // "subscribed"
				failed.Add(1)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		fmt.Fprintf(os.Stderr, "%d clients failed to connect\n", failed.Load())
		return 1
	}
	fmt.Println("ready")
	lat := make([][]int32, n)
	var deliveries, closed, lastRecv atomic.Int64
	var done atomic.Int64
	key := []byte(`"received_at":"`)
	// Ticks conflate: a client that is behind gets the newest, not every
	// one, so a client is done when it has the last tick.
	last := []byte(`"trades":` + strconv.Itoa(events) + `,`)
	for i, c := range conns {
		lat[i] = make([]int32, 0, events)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for gotLast := false; !gotLast; {
				_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
				_, msg, err := c.ReadMessage()
				if err != nil {
					closed.Add(1)
					return
				}
				now := time.Now()
				j := bytes.Index(msg, key)
				if j < 0 {
					continue
				}
				rest := msg[j+len(key):]
				k := bytes.IndexByte(rest, '"')
				at, err := time.Parse(time.RFC3339Nano, string(rest[:k]))
				if err != nil {
					continue
				}
				lat[i] = append(lat[i], int32(now.Sub(at).Microseconds()))
				gotLast = bytes.Contains(msg, last)
				deliveries.Add(1)
				for {
					old := lastRecv.Load()
					if now.UnixNano() <= old || lastRecv.CompareAndSwap(old, now.UnixNano()) {
						break
					}
				}
			}
			done.Add(1)
		}()
	}
	wg.Wait()
	var all []int32
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	q := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))])
	}
	res := wsBenchResult{Connected: n, Done: int(done.Load()), Deliveries: deliveries.Load(), Closed: closed.Load(),
		P50us: q(0.50), P99us: q(0.99), MaxUs: q(1), LastRecvNs: lastRecv.Load()}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}
