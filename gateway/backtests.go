package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/backtest"
	"cryptostream/gateway/auth"
	"cryptostream/streams"
)

// ReportStore reads the backtests' HTML reports (the models object store
// is one).
type ReportStore interface {
	GetBytes(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) ([]byte, error)
}

// reportCSP lets the report's inline style run and nothing be fetched.
const reportCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// backtestBody is POST /backtests: the command's flags as JSON.
type backtestBody struct {
	Asset        string   `json:"asset"`
	Interval     string   `json:"interval"`
	From         string   `json:"from"`
	To           string   `json:"to"`
	Model        string   `json:"model"`
	Train        string   `json:"train"`
	RetrainEvery int      `json:"retrain_every"`
	Horizon      int      `json:"horizon"`
	Fees         *float64 `json:"fees"`
	Slippage     *float64 `json:"slippage"`
	Threshold    float64  `json:"threshold"`
	Sweep        []string `json:"sweep"`
}

func (b backtestBody) request() (backtest.Request, error) {
	bad := func(format string, args ...any) error {
		return errorf(http.StatusBadRequest, "invalid_backtest", format, args...)
	}
	if b.Asset == "" {
		b.Asset = defaultAsset
	}
	sym, err := assetParam(b.Asset)
	if err != nil {
		return backtest.Request{}, err
	}
	iv, err := intervalParam(b.Interval)
	if err != nil {
		return backtest.Request{}, err
	}
	q := backtest.Request{Symbol: sym, Interval: iv, Model: b.Model, Train: b.Train, RetrainEvery: b.RetrainEvery, Horizon: b.Horizon,
		Strategy: backtest.Strategy{Fees: 0.001, Slippage: 0.0005, Threshold: b.Threshold}, Sweep: b.Sweep}
	if b.Fees != nil {
		q.Strategy.Fees = *b.Fees
	}
	if b.Slippage != nil {
		q.Strategy.Slippage = *b.Slippage
	}
	if q.From, err = time.Parse(time.RFC3339, b.From); err != nil {
		return q, bad("from must be an RFC 3339 time")
	}
	if q.To, err = time.Parse(time.RFC3339, b.To); err != nil {
		return q, bad("to must be an RFC 3339 time")
	}
	if len(b.Model) > 128 || len(b.Sweep) > 3 {
		return q, bad("model id of at most 128 bytes, at most 3 sweep dimensions")
	}
	if err := q.Validate(); err != nil {
		return q, bad("%s", strings.TrimPrefix(err.Error(), "backtest: "))
	}
	return q, nil
}

// submitBacktest queues a backtest as a job on JOBS.
func (g *Gateway) submitBacktest(w http.ResponseWriter, r *http.Request) {
	var body backtestBody
	if err := g.decodeJSON(w, r, &body); err != nil {
		g.fail(w, r, err)
		return
	}
	q, err := body.request()
	if err != nil {
		g.fail(w, r, err)
		return
	}
	req, err := json.Marshal(q)
	if err != nil {
		g.fail(w, r, fmt.Errorf("gateway: encode backtest: %w", err))
		return
	}
	actor := claimsOf(r).Subject
	job := streams.Job{ID: auth.NewID(), Kind: streams.JobBacktest, Symbol: q.Symbol, Interval: q.Interval,
		Params: map[string]string{backtest.ParamRequest: string(req)}, RequestedBy: actor, RequestedAt: g.now().UTC()}
	ctx, cancel := g.io(r)
	defer cancel()
	if err := g.jobs.Submit(ctx, &job); err != nil {
		g.fail(w, r, fmt.Errorf("gateway: queue backtest: %w", err))
		return
	}
	g.audit(ctx, "backtest.submit", actor, job.ID, "ok", remoteIP(r), q.Symbol+" "+q.Interval.String())
	w.Header().Set("Location", "/backtests/"+job.ID)
	writeJSON(w, http.StatusAccepted, map[string]any{"id": job.ID, "state": streams.JobQueued,
		"status_url": "/backtests/" + job.ID, "report_url": "/backtests/" + job.ID + "/report.html"})
}

// backtestSummary is one backtest as GET /backtests lists it.
func backtestSummary(st streams.JobStatus) map[string]any {
	out := map[string]any{"id": st.Job.ID, "asset": st.Job.Symbol, "interval": st.Job.Interval.String(), "state": st.State,
		"requested_by": st.Job.RequestedBy, "requested_at": st.Job.RequestedAt, "updated_at": st.UpdatedAt}
	if st.Error != "" {
		out["error"] = st.Error
	}
	if st.Result["total"] != "" {
		out["progress"] = map[string]string{"read": st.Result["read"], "total": st.Result["total"]}
	}
	var q backtest.Request
	if json.Unmarshal([]byte(st.Job.Params[backtest.ParamRequest]), &q) == nil {
		out["request"] = q
	}
	return out
}

// listBacktests lists the week's backtests, newest first.
func (g *Gateway) listBacktests(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := g.io(r)
	defer cancel()
	sts, err := g.jobs.List(ctx, streams.JobBacktest, 100)
	if err != nil {
		g.fail(w, r, fmt.Errorf("gateway: list backtests: %w", err))
		return
	}
	out := make([]map[string]any, len(sts))
	for i, st := range sts {
		out[i] = backtestSummary(st)
	}
	writeJSON(w, http.StatusOK, out)
}

// backtestJob reads the status of the backtest named by the path.
func (g *Gateway) backtestJob(r *http.Request) (streams.JobStatus, error) {
	id := r.PathValue("id")
	notFound := errorf(http.StatusNotFound, "backtest_not_found", "no such backtest")
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return streams.JobStatus{}, notFound
	}
	ctx, cancel := g.io(r)
	defer cancel()
	st, err := g.jobs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || (err == nil && st.Job.Kind != streams.JobBacktest) {
		return st, notFound
	}
	if err != nil {
		return st, fmt.Errorf("gateway: get backtest: %w", err)
	}
	return st, nil
}

// getBacktest is a backtest's status, progress and, once done, its
// report.
func (g *Gateway) getBacktest(w http.ResponseWriter, r *http.Request) {
	st, err := g.backtestJob(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	out := backtestSummary(st)
	if rep := st.Result["report"]; st.State == streams.JobDone && json.Valid([]byte(rep)) {
		out["report"] = json.RawMessage(rep)
		out["report_url"] = "/backtests/" + st.Job.ID + "/report.html"
		delete(out, "progress")
	}
	writeJSON(w, http.StatusOK, out)
}

// backtestHTML serves a finished backtest's self-contained page.
func (g *Gateway) backtestHTML(w http.ResponseWriter, r *http.Request) {
	st, err := g.backtestJob(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if st.State != streams.JobDone {
		g.fail(w, r, errorf(http.StatusConflict, "backtest_not_done", "the backtest is %s", st.State))
		return
	}
	if g.d.Reports == nil {
		g.fail(w, r, errorf(http.StatusServiceUnavailable, "reports_unavailable", "this gateway has no report store"))
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	page, err := g.d.Reports.GetBytes(ctx, backtest.ReportObject(st.Job.ID))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		g.fail(w, r, errorf(http.StatusNotFound, "backtest_not_found", "the report of this backtest is gone"))
		return
	}
	if err != nil {
		g.fail(w, r, fmt.Errorf("gateway: read backtest report: %w", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", reportCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(page)
}
