package evaluation

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"cryptostream/forecast"
)

func TestDev(t *testing.T) {
	dir := os.Getenv("DEV_DATA")
	if dir == "" {
		t.Skip()
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.csv"))
	for _, p := range files {
		f, err := ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		cfg := forecast.DefaultConfig(f.Interval)
		if v := os.Getenv("ACI"); v != "" {
			cfg.ACIStep, _ = strconv.ParseFloat(v, 64)
		}
		res, err := RunSeries(cfg, f.Candles)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range cfg.Horizons {
			v, err := ScoreVol(h, f.Interval, res[h])
			if err != nil {
				t.Fatal(err)
			}
			models := map[string]int{}
			for _, r := range res[h] {
				models[r.Model]++
			}
			t.Logf("%s h=%d rows=%d excl=%d QL %.4f last %.4f day %.4f better=%s gain %.1f%% (sq %.1f%%) DM %.2f | cov80 %.3f terc %.3f %.3f %.3f days %d out %d worst %.2f | cov95 %.3f | IS80 %.4g fixed %.4g gain %.1f%% fixedcov %.3f | %v",
				filepath.Base(p), h, v.Rows, v.Excluded, v.QLIKE, v.QLIKELast, v.QLIKEDay, v.Better, 100*v.Gain, 100*v.GainSq, v.DM.Stat,
				v.Cover80, v.Tercile80[0], v.Tercile80[1], v.Tercile80[2], v.Days, v.Outside, v.Worst, v.Cover95, v.Score80, v.Fixed80, 100*v.ScoreGain, v.FixedCover80, models)
		}
	}
}
