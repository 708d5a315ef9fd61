package forecast

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// solveCholesky is har.solve as it was, through mat.Cholesky: the
// reference the direct LAPACK calls must match bit for bit, refusals
// included.
func solveCholesky(h *har) (beta [][harDim]float64, solved []bool) {
	sym, rhs, sol := mat.NewSymDense(harDim, nil), mat.NewVecDense(harDim, nil), mat.NewVecDense(harDim, nil)
	var chol mat.Cholesky
	beta, solved = make([][harDim]float64, len(h.ridges)), make([]bool, len(h.ridges))
	for k, lambda := range h.ridges {
		for i := range harDim {
			for j := i; j < harDim; j++ {
				v := h.a[i*harDim+j]
				if i == j && i > 0 {
					v += lambda * h.weight
				}
				sym.SetSym(i, j, v)
			}
			rhs.SetVec(i, h.b[i])
		}
		if !chol.Factorize(sym) || chol.SolveVecTo(sol, rhs) != nil {
			continue
		}
		for j := range harDim {
			beta[k][j] = sol.AtVec(j)
		}
		solved[k] = true
	}
	return beta, solved
}

// TestHARSolveIsCholesky: on well-conditioned, nearly singular and
// singular normal equations the log-HAR's solve gives mat.Cholesky's
// fits and refuses what it refuses.
func TestHARSolveIsCholesky(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	refused, fitted := 0, 0
	for trial := range 3000 {
		h := newHAR(15, 0, []float64{0, 1e-4, 0.1}, 100)
		// Rows x = (1, d, c·d + e, r): e shrinks to make the hour's
		// regressor collinear with the day's, down to exactly so.
		e := math.Pow(10, -float64(trial%20))
		if trial%20 == 19 {
			e = 0
		}
		c := rng.NormFloat64()
		for range 5 + rng.IntN(200) {
			d := rng.NormFloat64()*2 - 10
			x := [harDim]float64{1, d, c*d + e*rng.NormFloat64(), rng.NormFloat64()*3 - 9}
			y := rng.NormFloat64() - 10
			for i := range harDim {
				h.b[i] += x[i] * y
				for j := range harDim {
					h.a[i*harDim+j] += x[i] * x[j]
				}
			}
			h.weight++
		}
		want, ok := solveCholesky(h)
		h.solve()
		for k := range h.ridges {
			if h.fitted[k] != ok[k] {
				t.Fatalf("trial %d (e %g), ridge %v: fitted %v, mat.Cholesky %v", trial, e, h.ridges[k], h.fitted[k], ok[k])
			}
			if !ok[k] {
				refused++
				continue
			}
			fitted++
			for j := range harDim {
				if math.Float64bits(h.beta[k][j]) != math.Float64bits(want[k][j]) {
					t.Fatalf("trial %d (e %g), ridge %v: beta %v, mat.Cholesky %v", trial, e, h.ridges[k], h.beta[k], want[k])
				}
			}
		}
	}
	if refused == 0 || fitted == 0 {
		t.Fatalf("%d fits refused, %d made: the test did not test both", refused, fitted)
	}
	t.Logf("%d fits, %d refused", fitted, refused)
}
