package evaluation_test

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/forecast"
	"cryptostream/forecast/evaluation"
)

var (
	explore = flag.String("calibration-explore", "", "semicolon-separated settings (key=value,...) to score on every file, split into selection and held-out parts (docs/models.md)")
	perDay  = flag.String("calibration-perday", "", "one setting (key=value,...) whose 60-minute interval scores on the Kraken 1-minute file are printed day by day against the fixed spread")
)

// applySpec sets the calibration keys of a setting such as
// "floor=0.45,step=0.08" on cfg; "base" (or any text without "=") leaves
// DefaultConfig. Only 15 and 60 minutes are run: the 1-minute horizon is
// independent of them and the targets do not ask for it. The ACI
// variants of docs/models.md (relax, shadow, floor95, debt) are keys of
// this function at commit 34875dd, where their Config fields exist; those
// of 2026-12-07 b (shrink, rceil, streak, iphl) are in the session notes'
// h14-experiments.patch.
func applySpec(t *testing.T, cfg *forecast.Config, spec string) {
	k := len(cfg.Horizons) - 2
	cfg.Horizons, cfg.ACISteps, cfg.Pooled = cfg.Horizons[k:], cfg.ACISteps[k:], cfg.Pooled[k:]
	for _, kv := range strings.Split(spec, ",") {
		key, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("setting %q: %v", spec, err)
		}
		switch key {
		case "floor":
			cfg.ACIFloor = v
		case "step":
			cfg.ACISteps[1] = v
		case "step15":
			cfg.ACISteps[0] = v
		case "pcap":
			cfg.ProfileCap = v
		case "window":
			cfg.CalibrationHorizons = int(v)
		case "power":
			cfg.IntervalPower = v
		case "rfloor":
			cfg.RecentFloor = v
		default:
			t.Fatalf("setting %q: unknown key %q", spec, key)
		}
	}
}

// intervalTargets counts the interval targets of issue 14 that s meets:
// days outside 70–90% at most 10%, interval-score gain at least 8%, 80%
// coverage 78–82% overall and 74–86% in every tercile.
func intervalTargets(s evaluation.VolScore) int {
	tmin, tmax := min(s.Tercile80[0], s.Tercile80[1], s.Tercile80[2]), max(s.Tercile80[0], s.Tercile80[1], s.Tercile80[2])
	n := 0
	for _, ok := range []bool{float64(s.Outside) <= 0.1*float64(s.Days), s.ScoreGain >= 0.08, s.Cover80 >= 0.78 && s.Cover80 <= 0.82, tmin >= 0.74 && tmax <= 0.86} {
		if ok {
			n++
		}
	}
	return n
}

var exploreFiles = []string{"binance_BTCUSDT_1m_2025-05_08.csv", "binance_ETHUSDT_1m_2025-05_08.csv", datatest.KrakenBTCUSD1m, datatest.KrakenXBTUSD5m}

// TestCalibrationExplore scores settings of the calibration on every
// file at 15 and 60 minutes, on the whole file ("all") and on two parts:
// "pre", the selection part (the Binance files before 2025-07-04, as in
// TestCalibrationChoice, and the Kraken 1-minute file before 2023-03-12,
// which holds the crash of 2023-03-10), and "post", the rest (all of the
// Kraken 5-minute file). It prints one line per file, horizon and part
// and asserts nothing: it is how the grids of docs/models.md were run.
// About 12 s per setting on two cores.
func TestCalibrationExplore(t *testing.T) {
	if *explore == "" {
		t.Skip("run with -calibration-explore 'base;floor=0.45,step=0.08'")
	}
	files := make([]evaluation.File, len(exploreFiles))
	for i, name := range exploreFiles {
		f, err := evaluation.ReadFile(datatest.Path(t, name))
		if err != nil {
			t.Fatal(err)
		}
		files[i] = f
	}
	splits := []time.Time{time.Date(2025, 7, 4, 0, 0, 0, 0, time.UTC), time.Date(2025, 7, 4, 0, 0, 0, 0, time.UTC), time.Date(2023, 3, 12, 0, 0, 0, 0, time.UTC), {}}
	specs := strings.Split(*explore, ";")
	out := make([][]string, len(specs)*len(files))
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for si, spec := range specs {
		for fi, f := range files {
			cfg := forecast.DefaultConfig(f.Interval)
			applySpec(t, &cfg, spec)
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				rows, err := evaluation.RunSeries(cfg, f.Candles)
				if err != nil {
					t.Error(err)
					return
				}
				var ls []string
				for _, h := range cfg.Horizons {
					var pre, post []evaluation.VolRow
					for _, r := range rows[h] {
						if r.Start.Before(splits[fi]) {
							pre = append(pre, r)
						} else {
							post = append(post, r)
						}
					}
					for _, part := range []struct {
						name string
						rows []evaluation.VolRow
					}{{"all", rows[h]}, {"pre", pre}, {"post", post}} {
						if len(part.rows) == 0 {
							continue
						}
						s, err := evaluation.ScoreVol(h, f.Interval, part.rows)
						if err != nil {
							t.Error(err)
							return
						}
						tmin, tmax := min(s.Tercile80[0], s.Tercile80[1], s.Tercile80[2]), max(s.Tercile80[0], s.Tercile80[1], s.Tercile80[2])
						n := intervalTargets(s)
						ls = append(ls, fmt.Sprintf("%-22s %-12s %-8s %-4s met %d/4 gain %5.2f%% cov %.1f%% terc %.1f-%.1f out %d/%d cov95 %.1f%% g95 %.2f%% qlike %.1f%% dm %.1f",
							spec, exploreFiles[fi][:12], time.Duration(h)*f.Interval, part.name, n, 100*s.ScoreGain, 100*s.Cover80, 100*tmin, 100*tmax,
							s.Outside, s.Days, 100*s.Cover95, 100*(1-s.Score95/s.Fixed95), 100*s.Gain, s.DM.Stat))
					}
				}
				out[si*len(files)+fi] = ls
			}()
		}
	}
	wg.Wait()
	for _, ls := range out {
		for _, l := range ls {
			fmt.Println(l)
		}
	}
}

// TestCalibrationPerDay prints, day by day, the 60-minute 80% interval
// score of one setting on the Kraken 1-minute file against the fixed
// spread's, with both coverages and widths and the mean forecast and
// realised sigma: where the gain is lost.
func TestCalibrationPerDay(t *testing.T) {
	if *perDay == "" {
		t.Skip("run with -calibration-perday base")
	}
	f, err := evaluation.ReadFile(datatest.Path(t, datatest.KrakenBTCUSD1m))
	if err != nil {
		t.Fatal(err)
	}
	cfg := forecast.DefaultConfig(f.Interval)
	applySpec(t, &cfg, *perDay)
	rows, err := evaluation.RunSeries(cfg, f.Candles)
	if err != nil {
		t.Fatal(err)
	}
	const z80 = 1.2815515655446004
	h := cfg.Horizons[1]
	rs := rows[h]
	sg := evaluation.FixedSpread(rs, h, f.Interval)
	type acc struct{ ours, fixed, n, hit, fhit, w, fw, sig, rv float64 }
	days := map[string]*acc{}
	var order []string
	var to, tf float64
	for i, r := range rs {
		if math.IsNaN(sg[i]) {
			continue
		}
		k := r.Start.Format("2006-01-02")
		if days[k] == nil {
			days[k] = &acc{}
			order = append(order, k)
		}
		a := days[k]
		a.n++
		a.ours += forecast.IntervalScore(r.Lower80, r.Upper80, 0.8, r.Return)
		a.fixed += forecast.IntervalScore(-z80*sg[i], z80*sg[i], 0.8, r.Return)
		if r.Return >= r.Lower80 && r.Return <= r.Upper80 {
			a.hit++
		}
		if math.Abs(r.Return) <= z80*sg[i] {
			a.fhit++
		}
		a.w += r.Upper80 - r.Lower80
		a.fw += 2 * z80 * sg[i]
		a.sig += math.Sqrt(r.Variance)
		a.rv += math.Sqrt(r.Realised)
	}
	for _, k := range order {
		a := days[k]
		to, tf = to+a.ours, tf+a.fixed
		fmt.Printf("%s rows %4.0f score %.4f fixed %.4f (diff %+.4f) covers %.2f fixed %.2f width %.5f fixed %.5f sigma %.5f realised %.5f\n",
			k, a.n, a.ours/a.n, a.fixed/a.n, (a.ours-a.fixed)/a.n, a.hit/a.n, a.fhit/a.n, a.w/a.n, a.fw/a.n, a.sig/a.n, a.rv/a.n)
	}
	fmt.Printf("gain %.2f%%\n", 100*(1-to/tf))
}
