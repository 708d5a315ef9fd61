// Package evaluation owns the offline evaluation of forecasts on a candle
// file: the trainer's point model walk-forward against the naive
// forecasts, the volatility model of package forecast against the naive
// variance forecasts, and its intervals against today's fixed-spread rule,
// per horizon, with the Done-when targets of issue 14 checked. It replays
// the same code the live stages call, past only, and renders the Markdown
// that README "Models" holds.
package evaluation

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"cryptostream/forecast"
	"cryptostream/streams"
)

// HorizonReport is one horizon of a file.
type HorizonReport struct {
	Horizon  int // intervals
	Minutes  int
	Point    *PointScore // nil when the interval has no features
	PointErr string
	Vol      VolScore
}

// Report is the evaluation of one file.
type Report struct {
	File     File
	From, To time.Time
	Horizons []HorizonReport
}

// Options select what Evaluate runs.
type Options struct {
	// Point runs the point model too (a fit per day of data: the slow part).
	Point bool
	Rule  forecast.Rule
}

// Evaluate runs the evaluation of f with the default forecast
// configuration for its interval.
func Evaluate(f File, opt Options) (Report, error) {
	rep := Report{File: f, From: f.Candles[0].Start, To: f.Candles[len(f.Candles)-1].Start}
	cfg := forecast.DefaultConfig(f.Interval)
	rows, err := RunSeries(cfg, f.Candles)
	if err != nil {
		return rep, err
	}
	var vectors []streams.FeatureVector
	siv := streams.Interval(f.Interval / time.Minute)
	pointOK := opt.Point && f.Interval%time.Minute == 0 && siv.Valid()
	if pointOK {
		if vectors, err = Vectors(f.Candles, siv); err != nil {
			return rep, err
		}
	}
	for _, h := range cfg.Horizons {
		hr := HorizonReport{Horizon: h, Minutes: int(time.Duration(h) * f.Interval / time.Minute)}
		if hr.Vol, err = ScoreVol(h, f.Interval, rows[h]); err != nil {
			return rep, err
		}
		if pointOK {
			ps, err := ScorePoint(vectors, h, f.Interval, opt.Rule)
			if err != nil {
				hr.PointErr = err.Error()
			} else {
				hr.Point = &ps
			}
		}
		rep.Horizons = append(rep.Horizons, hr)
	}
	return rep, nil
}

// Target is one Done-when target at one horizon of one file.
type Target struct {
	What string
	Want string
	Got  string
	Met  bool
}

// Targets checks the Done-when targets at 15 and 60 minutes.
func (r Report) Targets() []Target {
	var out []Target
	for _, h := range r.Horizons {
		if h.Minutes != 15 && h.Minutes != 60 {
			continue
		}
		v := h.Vol
		gain := 0.10
		if h.Minutes == 60 {
			gain = 0.08
		}
		tmin, tmax := 1.0, 0.0
		for _, c := range v.Tercile80 {
			tmin, tmax = min(tmin, c), max(tmax, c)
		}
		outside := float64(v.Outside) / float64(max(v.Days, 1))
		at := fmt.Sprintf("%d min: ", h.Minutes)
		out = append(out,
			Target{at + "QLIKE gain on the better naive", fmt.Sprintf("≥ %.0f%%, DM t ≤ −2", 100*gain), fmt.Sprintf("%.1f%% (%s), t %.2f", 100*v.Gain, v.Better, v.DM.Stat), v.Gain >= gain && v.DM.Stat <= -2},
			Target{at + "80% coverage overall", "78–82%", pct(v.Cover80), v.Cover80 >= 0.78 && v.Cover80 <= 0.82},
			Target{at + "80% coverage per volatility tercile", "74–86%", pct(tmin) + " to " + pct(tmax), tmin >= 0.74 && tmax <= 0.86},
			Target{at + "days with 80% coverage outside 70–90%", "≤ 10%", fmt.Sprintf("%d of %d (%.0f%%)", v.Outside, v.Days, 100*outside), outside <= 0.10},
			Target{at + "interval score gain on the fixed spread", "≥ 8%", fmt.Sprintf("%.1f%%", 100*v.ScoreGain), v.ScoreGain >= 0.08},
		)
	}
	return out
}

func pct(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }

// Markdown renders the report: the file, then point, volatility and
// interval tables, then the targets.
func (r Report) Markdown() string {
	var b strings.Builder
	f := r.File
	fmt.Fprintf(&b, "### %s\n\n", filepath.Base(f.Name))
	fmt.Fprintf(&b, "%d candles of %s, %s to %s UTC", len(f.Candles), f.Interval, r.From.UTC().Format("2006-01-02 15:04"), r.To.UTC().Format("2006-01-02 15:04"))
	if f.Bad+f.Duplicates > 0 {
		fmt.Fprintf(&b, " (%d unreadable and %d duplicate rows left out)", f.Bad, f.Duplicates)
	}
	b.WriteString(".\n\n")

	if hasPoint(r) {
		b.WriteString("| point forecast, horizon | rows | MSE model | MSE no-change | MSE last | R² vs no-change | DM vs no-change (p) | DM vs last (p) | folds won | Brier direction / climatology | promoted |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, h := range r.Horizons {
			p := h.Point
			if p == nil {
				fmt.Fprintf(&b, "| %d min | %s |\n", h.Minutes, h.PointErr)
				continue
			}
			fmt.Fprintf(&b, "| %d min | %d | %.4e | %.4e | %.4e | %+.5f | %.2f (%.3g) | %.2f (%.3g) | %d of %d | %.4f / %.4f | %d of %d |\n",
				h.Minutes, p.Rows, p.MSE, p.MSEZero, p.MSELast, p.R2, p.VsZero.Stat, p.VsZero.P, p.VsLast.Stat, p.VsLast.P, p.FoldsWon, p.Folds, p.Brier, p.BrierClimate, p.Promoted, p.Decisions)
		}
		b.WriteString("\n")
	}

	b.WriteString("| volatility, horizon | rows | QLIKE model | QLIKE last window | QLIKE 24 h | gain on better naive | DM t (p) | gain, squared-return proxy | MSE var model / better naive |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, h := range r.Horizons {
		v := h.Vol
		ref := v.MSEVarDay
		if v.Better == "last" {
			ref = v.MSEVarLast
		}
		fmt.Fprintf(&b, "| %d min | %d | %.4f | %s | %.4f | %.1f%% (%s) | %.2f (%.2g) | %.1f%% | %.3f |\n",
			h.Minutes, v.Rows-v.Excluded, v.QLIKE, finite(v.QLIKELast), v.QLIKEDay, 100*v.Gain, v.Better, v.DM.Stat, v.DM.P, 100*v.GainSq, v.MSEVar/ref)
	}
	b.WriteString("\n| intervals, horizon | 80% covers | by tercile (calm, mid, agitated) | worst day | days outside 70–90% | 95% covers | interval score 80% / fixed | gain | fixed rule's 80% covers |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, h := range r.Horizons {
		v := h.Vol
		fmt.Fprintf(&b, "| %d min | %s | %s, %s, %s | %s (%s) | %d of %d | %s | %.4g / %.4g | %.1f%% | %s |\n",
			h.Minutes, pct(v.Cover80), pct(v.Tercile80[0]), pct(v.Tercile80[1]), pct(v.Tercile80[2]), pct(v.Worst), v.WorstDay, v.Outside, v.Days,
			pct(v.Cover95), v.Score80, v.Fixed80, 100*v.ScoreGain, pct(v.FixedCover80))
	}
	b.WriteString("\n")
	return b.String()
}

func hasPoint(r Report) bool {
	for _, h := range r.Horizons {
		if h.Point != nil || h.PointErr != "" {
			return true
		}
	}
	return false
}

func finite(x float64) string {
	if math.IsInf(x, 0) || x > 1e6 {
		return fmt.Sprintf("%.3g", x)
	}
	return fmt.Sprintf("%.4f", x)
}

// TargetsMarkdown renders the targets of several reports as one table.
func TargetsMarkdown(reps []Report) string {
	var b strings.Builder
	b.WriteString("| file | target | wanted | measured | met |\n|---|---|---|---|---|\n")
	for _, r := range reps {
		for _, t := range r.Targets() {
			met := "yes"
			if !t.Met {
				met = "**no**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", filepath.Base(r.File.Name), t.What, t.Want, t.Got, met)
		}
	}
	return b.String()
}

// The markers around the generated part of a Markdown file.
const (
	BeginMarker = "<!-- cryptostream evaluate: begin (generated, do not edit) -->"
	EndMarker   = "<!-- cryptostream evaluate: end -->"
)

// ErrNoMarkers is a document without the generated section's markers.
var ErrNoMarkers = errors.New("evaluation: document has no " + BeginMarker + " ... " + EndMarker + " section")

// ReplaceSection puts content between the markers of doc.
func ReplaceSection(doc, content string) (string, error) {
	i := strings.Index(doc, BeginMarker)
	j := strings.Index(doc, EndMarker)
	if i < 0 || j < i {
		return "", ErrNoMarkers
	}
	return doc[:i+len(BeginMarker)] + "\n" + content + doc[j:], nil
}
