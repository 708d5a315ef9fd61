package forecast

import (
	"math"
	"slices"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
)

func pow2(x float64) float64 { return math.Exp2(x) }

// profile is the time-of-day shape of volatility: for each bucket of the
// day, an exponentially weighted mean of |r| over the trailing day's RMS
// return, so that the shape is measured apart from the level. Its square,
// normalised to a mean of one over the day, scales each interval's
// variance. Absolute rather than squared returns keep one crash minute
// from dominating a bucket for weeks, and the cap on that ratio keeps a
// crash's hour from doing so: its minutes, tens of times the trailing
// day's RMS, would otherwise make the forecast of that time of day too
// high on the days after (docs/models.md).
type profile struct {
	bucketSec int64
	minObs    int
	maxZ      float64 // the cap on |r| over the day's RMS
	m         []ewMean
	s         []float64 // the normalised variance factors, refreshed per bucket
	last      int       // bucket of the last update
	// aligned: the buckets tile the day exactly, so that for a time t at
	// or after 1970 the bucket and the offset in it come from t's second
	// of the day with one integer division instead of four (forward runs
	// per horizon per candle), the same integers as the general way.
	aligned bool
}

// newProfile caps each interval's |r| over the day's RMS at maxZ; 0 is
// no cap.
func newProfile(buckets int, iv time.Duration, halfLifeDays float64, minDays int, maxZ float64) profile {
	ivSec := int64(iv / time.Second)
	bucketSec := max(86400/int64(buckets), ivSec)
	nb := int(max(86400/bucketSec, 1))
	perDay := float64(max(bucketSec/max(ivSec, 1), 1))
	if maxZ == 0 {
		maxZ = math.Inf(1)
	}
	p := profile{bucketSec: bucketSec, minObs: minDays * int(perDay), maxZ: maxZ, m: make([]ewMean, nb), s: make([]float64, nb), last: -1,
		aligned: 86400%bucketSec == 0}
	for i := range p.m {
		p.m[i] = newEWMean(halfLifeDays * perDay)
		p.s[i] = 1
	}
	return p
}

func (p *profile) bucket(unix int64) int {
	if p.aligned && unix >= 0 {
		return int(unix % 86400 / p.bucketSec) // below len(p.m): the day is whole buckets
	}
	sec := unix % 86400
	if sec < 0 {
		sec += 86400
	}
	return int(sec/p.bucketSec) % len(p.m)
}

// observe adds an interval in bucket b with |r| relative to rms.
func (p *profile) observe(b int, z float64) {
	p.m[b].add(min(z, p.maxZ))
	if b != p.last {
		p.last = b
		p.refresh()
	}
}

// refresh recomputes the factors; buckets with too few days of data keep a
// factor of one.
func (p *profile) refresh() {
	var sum float64
	k := 0
	for i := range p.m {
		if p.m[i].n >= p.minObs {
			sum += p.m[i].v
			k++
		}
	}
	// Until every bucket is measured the shape is left flat: a partial
	// normalisation would bias the buckets it covers.
	if k < len(p.m) || sum <= 0 {
		return
	}
	mean := sum / float64(k)
	for i := range p.m {
		r := p.m[i].v / mean
		p.s[i] = r * r
	}
}

// forward is the sum of the factors of the h intervals after the one
// starting at unix: the seasonal length of a horizon, in average
// intervals.
func (p *profile) forward(unix, ivSec int64, h int) float64 {
	t := unix + ivSec
	var sum float64
	for h > 0 {
		// n, the intervals left in t's bucket, is only needed if more
		// than one interval is: min(max(n, 1), 1) is 1.
		var b int
		n := 1
		if p.aligned && t >= 0 {
			sec := t % 86400
			q := sec / p.bucketSec
			b = int(q)
			if h > 1 {
				end := t - (sec - q*p.bucketSec) + p.bucketSec // t%bucketSec, as bucketSec divides the day
				n = int((end - t + ivSec - 1) / ivSec)
			}
		} else {
			b = p.bucket(t)
			if h > 1 {
				end := t - t%p.bucketSec + p.bucketSec
				n = int((end - t + ivSec - 1) / ivSec)
			}
		}
		n = min(max(n, 1), h)
		sum += float64(n) * p.s[b]
		h -= n
		t += int64(n) * ivSec
	}
	return sum
}

// harDim is the log-HAR regressors: intercept, day, hour, recent.
const harDim = 4

// har is the log-HAR regression for one horizon and one recent-window
// length: log of the next H intervals' mean deseasonalised variance on the
// logs of the day's, the hour's and the recent window's, fitted by
// exponentially weighted ridge least squares on rows whose outcome is
// known, one ridge penalty per candidate. H is the horizon, or more for
// short horizons, whose single-interval variance is too noisy (and too
// often exactly zero) to regress on.
type har struct {
	span   int // H
	recent int // index into Series.recU
	forget float64
	a      [harDim * harDim]float64
	b      [harDim]float64
	weight float64
	rows   []float64 // ring of the last span+1 rows' regressors
	ridges []float64
	beta   [][harDim]float64
	scale  []ewMean // QLIKE-optimal scale: mean of outcome over fitted level
	fitted []bool
	// gen[k] changes whenever beta[k] does. A row's exp(beta[k]·x),
	// taken by its forecast, is kept in expf with the gen it was taken
	// at, so that learning the row span intervals later takes it again
	// only if a solve came between (always at a span of RefitEvery, a
	// quarter of the time at 15 minutes).
	gen    []uint64
	expf   []float64 // per row slot, per ridge
	expGen []uint64
	// scratch for the solve: the factor (upper triangle), the solution
	// and the condition estimate's work.
	fact  [harDim * harDim]float64
	sol   [harDim]float64
	work  [3 * harDim]float64
	iwork [harDim]int
}

func newHAR(span, recent int, ridges []float64, memory float64) *har {
	h := &har{span: span, recent: recent, forget: pow2(-1 / memory), rows: make([]float64, (span+1)*harDim),
		ridges: ridges, beta: make([][harDim]float64, len(ridges)),
		scale: make([]ewMean, len(ridges)), fitted: make([]bool, len(ridges)),
		gen: make([]uint64, len(ridges)), expf: make([]float64, (span+1)*len(ridges)), expGen: make([]uint64, (span+1)*len(ridges))}
	for i := range h.scale {
		h.scale[i] = newEWMean(memory)
		h.gen[i] = 1 // no row holds an exp yet
	}
	return h
}

// slot is the row's regressors, as an array so that the loops over them
// carry no bounds checks.
func (h *har) slot(row int) *[harDim]float64 {
	return (*[harDim]float64)(h.rows[row*harDim : (row+1)*harDim])
}

// level is the fitted (scaled) mean variance per interval for regressors
// x, the row at index row.
func (h *har) level(k, row int, x *[harDim]float64) float64 {
	e := math.Exp(dot(&h.beta[k], x))
	i := row*len(h.ridges) + k
	h.expf[i], h.expGen[i] = e, h.gen[k]
	return h.scale[k].v * e
}

// dot is b·x summed in index order, as a loop from zero would: the
// log-HAR's exponent.
func dot(b, x *[harDim]float64) float64 {
	f := b[0] * x[0]
	f += b[1] * x[1]
	f += b[2] * x[2]
	return f + b[3]*x[3]
}

// learn adds the row made span steps ago, at ring index r, now that its
// outcome (the mean deseasonalised variance since) is known; y is its
// log after the row's floor, the regressand.
func (h *har) learn(r int, outcome, y float64) {
	x := h.slot(r)
	if math.IsInf(y, 0) || math.IsNaN(y) || math.IsInf(x[1], 0) || math.IsInf(x[2], 0) || math.IsInf(x[3], 0) {
		return // a series flat for its whole history so far: nothing to learn
	}
	// Only the upper triangle: solve reads no other (a is symmetric).
	// The decay is rounded on its own, as when it was a loop of its own,
	// so that no fused multiply-add changes a bit. Written out, the loops
	// over i and j ≥ i were half of learn's instructions.
	g, a, b := h.forget, &h.a, &h.b
	x0, x1, x2, x3 := x[0], x[1], x[2], x[3]
	b[0] = g*b[0] + x0*y
	b[1] = g*b[1] + x1*y
	b[2] = g*b[2] + x2*y
	b[3] = g*b[3] + x3*y
	a[0] = float64(a[0]*g) + x0*x0
	a[1] = float64(a[1]*g) + x0*x1
	a[2] = float64(a[2]*g) + x0*x2
	a[3] = float64(a[3]*g) + x0*x3
	a[5] = float64(a[5]*g) + x1*x1
	a[6] = float64(a[6]*g) + x1*x2
	a[7] = float64(a[7]*g) + x1*x3
	a[10] = float64(a[10]*g) + x2*x2
	a[11] = float64(a[11]*g) + x2*x3
	a[15] = float64(a[15]*g) + x3*x3
	h.weight = h.forget*h.weight + 1
	row := r * len(h.ridges)
	for k := range h.ridges {
		if !h.fitted[k] {
			continue
		}
		e := h.expf[row+k]
		if h.expGen[row+k] != h.gen[k] {
			e = math.Exp(dot(&h.beta[k], x))
		}
		h.scale[k].add(outcome / e)
	}
}

// solve refits every ridge candidate on the rows learnt so far. It is
// mat.Cholesky's Factorize and SolveVecTo, the same LAPACK calls on the
// same values, so the same bits, except that the condition estimate
// (Pocon, most of a solve's cost) is taken only when a cheap bound cannot
// show it is below the tolerance SolveVecTo refuses a fit above.
func (h *har) solve() {
	for k, lambda := range h.ridges {
		f := &h.fact
		for i := range harDim {
			for j := i; j < harDim; j++ {
				v := h.a[i*harDim+j]
				if i == j && i > 0 {
					v += lambda * h.weight
				}
				f[i*harDim+j] = v
			}
		}
		sym := blas64.Symmetric{Uplo: blas.Upper, N: harDim, Stride: harDim, Data: f[:]}
		norm := lapack64.Lansy(mat.CondNorm, sym, h.work[:harDim])
		u, ok := lapack64.Potrf(sym)
		if !ok {
			continue
		}
		h.sol = h.b
		lapack64.Potrs(u, blas64.General{Rows: harDim, Cols: 1, Stride: 1, Data: h.sol[:]})
		if !h.conditioned(norm) {
			continue // ill-conditioned: keep the last good fit
		}
		h.beta[k] = h.sol
		h.gen[k]++
		if !h.fitted[k] {
			h.fitted[k] = true
			h.scale[k].v, h.scale[k].n = 1, 0
		}
	}
}

// conditioned is SolveVecTo's test on the factor U in h.fact of a matrix
// of 1-norm norm: Pocon's condition estimate at most mat.ConditionTolerance.
// That estimate is at most the true 1-norm condition, itself at most
// norm·‖U⁻¹‖₁·‖U⁻¹‖∞ (A⁻¹ = U⁻¹U⁻ᵀ); a bound a hundred times below the
// tolerance leaves room for rounding, and only above it is the estimate
// taken.
func (h *har) conditioned(norm float64) bool {
	const n = harDim
	u := &h.fact
	var inv [n * n]float64 // U⁻¹, upper triangular
	for j := range n {
		inv[j*n+j] = 1 / u[j*n+j]
		for i := j - 1; i >= 0; i-- {
			var s float64
			for m := i + 1; m <= j; m++ {
				s += u[i*n+m] * inv[m*n+j]
			}
			inv[i*n+j] = -s / u[i*n+i]
		}
	}
	var col, row [n]float64
	for i := range n {
		for j := i; j < n; j++ {
			a := math.Abs(inv[i*n+j])
			row[i] += a
			col[j] += a
		}
	}
	bound := norm * slices.Max(col[:]) * slices.Max(row[:])
	if norm > 0 && bound < mat.ConditionTolerance/100 {
		return true // NaN fails the test and takes the estimate
	}
	sym := blas64.Symmetric{Uplo: blas.Upper, N: n, Stride: n, Data: u[:]}
	return !(1/lapack64.Pocon(sym, norm, h.work[:], h.iwork[:]) > mat.ConditionTolerance)
}
