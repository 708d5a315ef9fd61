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
func fmtPrice(v float64) string { return fmtPriceDec(v, priceDecimals(v)) }

func priceDecimals(v float64) int {
	switch a := math.Abs(v); {
	case a >= 10_000:
		return 0
	case a >= 1_000:
		return 1
	case a < 1:
		return 4
	}
	return 2
}

// maxDecimals bounds the precision a message shows: past it two figures
// are the same price for anyone reading.
const maxDecimals = 8

// fmtPrices writes two prices a message sets side by side (a level and the
// price that crossed it) with as many decimals as it takes for them to read
// differently: "rose above 63,120 to 63,120" says nothing.
// The first is shown to the decimals it was given with (a level of
// 63,120.4 is not "63,120").
func fmtPrices(a, b float64) (string, string) {
	dec := max(priceDecimals(a), priceDecimals(b))
	if _, frac, ok := strings.Cut(strconv.FormatFloat(a, 'f', -1, 64), "."); ok {
		dec = max(dec, min(len(frac), maxDecimals))
	}
	for dec < maxDecimals && strconv.FormatFloat(a, 'f', dec, 64) == strconv.FormatFloat(b, 'f', dec, 64) {
		dec++
	}
	return fmtPriceDec(a, dec), fmtPriceDec(b, dec)
}

func fmtPriceDec(v float64, dec int) string {
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

// fmtPercent writes a percentage with one decimal from 1% up and two
// significant figures below, so that a small move reads as what it is
// (0.00042%) and never as "0.000%".
func fmtPercent(v float64) string {
	a := math.Abs(v)
	dec := 1
	if a > 0 && a < 1 {
		dec = min(1-int(math.Floor(math.Log10(a))), maxDecimals+2)
	}
	if a == 0 {
		dec = 0
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
