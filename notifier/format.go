package notifier

import (
	"math"
	"strconv"
	"strings"
	"time"
)

func itoa(n int) string { return strconv.Itoa(n) }

// fmtPrice writes a price as a trader reads it: thousands grouped, and as
// many decimals as a price of that size needs (63,120; 2,531.4; 0.5312).
func fmtPrice(v float64) string {
	dec := 2
	switch a := math.Abs(v); {
	case a >= 10_000:
		dec = 0
	case a >= 1_000:
		dec = 1
	case a < 1:
		dec = 4
	}
	s := strconv.FormatFloat(v, 'f', dec, 64)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if frac != "" {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	return b.String()
}

func fmtPercent(v float64) string {
	dec := 1
	if math.Abs(v) < 0.1 {
		dec = 3
	}
	return strconv.FormatFloat(v, 'f', dec, 64) + "%"
}

func fmtRatio(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// fmtWindow writes "15 min", "4 h", "1 h 30 min", "2 days".
func fmtWindow(d time.Duration) string {
	switch {
	case d >= 24*time.Hour && d%(24*time.Hour) == 0:
		if n := int(d / (24 * time.Hour)); n > 1 {
			return itoa(n) + " days"
		}
		return "1 day"
	case d >= time.Hour:
		s := itoa(int(d/time.Hour)) + " h"
		if m := int(d % time.Hour / time.Minute); m > 0 {
			s += " " + itoa(m) + " min"
		}
		return s
	case d >= time.Minute:
		return itoa(int(d/time.Minute)) + " min"
	}
	return d.String()
}
