package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/gateway/auth"
	"cryptostream/readmodel"
	"cryptostream/streams"
)

// seriesParams reads ?asset= (default BTC/USD) and ?interval= (default 1m).
func seriesParams(r *http.Request) (string, streams.Interval, error) {
	q := r.URL.Query()
	a := q.Get("asset")
	if a == "" {
		a = defaultAsset
	}
	sym, err := assetParam(a)
	if err != nil {
		return "", 0, err
	}
	iv, err := intervalParam(q.Get("interval"))
	return sym, iv, err
}

type predictionView struct {
	Asset          string    `json:"asset"`
	Interval       string    `json:"interval"`
	Time           time.Time `json:"time"`
	Target         time.Time `json:"target"`
	Horizon        int       `json:"horizon"`
	ModelID        string    `json:"model_id"`
	Close          float64   `json:"close"`
	PredictedClose float64   `json:"predicted_close"`
	Lower          float64   `json:"lower"`
	Upper          float64   `json:"upper"`
	LogReturn      float64   `json:"log_return"`
	// Model is "linear" (a champion's) or "no-change"; Sigma and
	// Forecasts (every horizon with its intervals) are absent on
	// predictions stored before they existed.
	Model     string                    `json:"model,omitempty"`
	Sigma     float64                   `json:"sigma,omitempty"`
	Forecasts []streams.HorizonForecast `json:"forecasts,omitempty"`
}

func (g *Gateway) latestPrediction(w http.ResponseWriter, r *http.Request) {
	sym, iv, err := seriesParams(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	p, err := newest(g, r, sym, iv, latestAnswers.CachedPrediction, readmodel.Reader.LatestPrediction)
	if errors.Is(err, readmodel.ErrNotFound) {
		g.fail(w, r, errorf(http.StatusNotFound, "no_prediction", "no %s prediction for %s yet", iv, sym))
		return
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	v := viewPrediction(p)
	v.Asset, v.Interval = sym, iv.String()
	writeJSON(w, http.StatusOK, v)
}

func viewPrediction(p streams.Prediction) predictionView {
	return predictionView{p.Symbol, p.Interval.String(), p.Start.UTC(), p.Target.UTC(), p.Horizon, p.ModelID, p.Close, p.PredictedClose, p.Lower, p.Upper, p.LogReturn,
		p.Model, p.Sigma, p.Forecasts}
}

// Bounds of a prediction-history query. A page is at most
// readmodel.MaxLimit predictions (as candles); the range a client may page
// through is bounded too, so that one query cannot walk the whole stream.
const (
	// MaxPredictionSpan is the widest [from, to) a query may ask for.
	MaxPredictionSpan = 31 * 24 * time.Hour
	// defaultPredictionSpan is the range when no from is given: the day
	// before to (or now).
	defaultPredictionSpan = 24 * time.Hour
)

// predictionHistory pages through a series' past predictions, by the start
// of the candle each was made on, from the read model (SQL when
// configured, the PREDICTIONS stream otherwise). With horizons=primary
// (the default) each keeps only its primary horizon's forecast, which is
// what is scored against the actual close; horizons=all keeps every one.
func (g *Gateway) predictionHistory(w http.ResponseWriter, r *http.Request) {
	sym, iv, err := seriesParams(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	from, to, limit, err := rangeParams(q)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	all := false
	switch q.Get("horizons") {
	case "", "primary":
	case "all":
		all = true
	default:
		g.fail(w, r, errorf(http.StatusBadRequest, "invalid_horizons", "horizons must be primary or all"))
		return
	}
	end := to
	if end.IsZero() {
		end = g.now().UTC()
	}
	if from.IsZero() {
		from = end.Add(-defaultPredictionSpan)
	}
	if end.Sub(from) > MaxPredictionSpan {
		g.fail(w, r, errorf(http.StatusBadRequest, "invalid_range", "a prediction history spans at most %d days; page through a longer one range by range", int(MaxPredictionSpan.Hours()/24)))
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	page, err := g.d.Reader.Predictions(ctx, readmodel.PredictionQuery{Symbol: sym, Interval: iv, From: from, To: to, Limit: limit, After: q.Get("cursor")})
	if g.pageFailed(w, r, sym, len(page.Predictions), err) {
		return
	}
	out := make([]predictionView, len(page.Predictions))
	for i, p := range page.Predictions {
		out[i] = viewPrediction(p)
		if !all {
			out[i].Forecasts = primaryOnly(p)
		}
	}
	var until *time.Time // open: up to the newest
	if !to.IsZero() {
		until = &to
	}
	writeJSON(w, http.StatusOK, map[string]any{"asset": sym, "interval": iv.String(), "from": from, "to": until, "predictions": out, "next": cursorView(page.Next)})
}

// primaryOnly is the forecast of the prediction's own horizon, nil for a
// prediction stored before forecasts existed.
func primaryOnly(p streams.Prediction) []streams.HorizonForecast {
	for _, f := range p.Forecasts {
		if f.Horizon == p.Horizon {
			return []streams.HorizonForecast{f}
		}
	}
	return nil
}

func (g *Gateway) model(r *http.Request, id string) (streams.ModelRecord, error) {
	ctx, cancel := g.io(r)
	defer cancel()
	e, err := g.d.Registry.Get(ctx, streams.ModelKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return streams.ModelRecord{}, errorf(http.StatusNotFound, "model_not_found", "model %q not found", id)
	}
	if err != nil {
		return streams.ModelRecord{}, fmt.Errorf("gateway: get model: %w", err)
	}
	var m streams.ModelRecord
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return m, fmt.Errorf("gateway: decode model %s: %w", id, err)
	}
	return m, nil
}

// champion reads the champion of a series. The entry holds the model id,
// either bare or as a JSON string.
// champion reads the series' champion through the read model, so that with
// a database the evaluation comes from SQL like the rest of history.
func (g *Gateway) champion(r *http.Request, sym string, iv streams.Interval) (streams.ModelRecord, error) {
	ctx, cancel := g.io(r)
	defer cancel()
	m, err := g.d.Reader.Champion(ctx, sym, iv)
	if errors.Is(err, readmodel.ErrNotFound) {
		return m, errorf(http.StatusNotFound, "no_champion", "no champion model for %s %s yet", sym, iv)
	}
	if err != nil {
		return m, fmt.Errorf("gateway: champion: %w", err)
	}
	return m, nil
}

func (g *Gateway) bestModel(w http.ResponseWriter, r *http.Request) {
	sym, iv, err := seriesParams(r)
	if err == nil {
		var m streams.ModelRecord
		if m, err = g.champion(r, sym, iv); err == nil {
			writeJSON(w, http.StatusOK, m)
			return
		}
	}
	g.fail(w, r, err)
}

// modelEvaluation is the champion's evaluation, or why there is none (the
// latest model's decision, or that none was trained), with the series'
// live forecast scores either way: a forecast is published on every
// candle, champion or not.
func (g *Gateway) modelEvaluation(w http.ResponseWriter, r *http.Request) {
	sym, iv, err := seriesParams(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	scores, err := g.forecastScore(r, sym, iv)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	m, err := g.champion(r, sym, iv)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		out := map[string]any{"asset": sym, "interval": iv.String(), "model": streams.ModelNoChange, "model_id": streams.ModelNoChange, "promoted": false}
		if scores != nil {
			out["forecast"] = scores
		}
		latest, n, err := g.latestModel(r, sym, iv)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		if n == 0 {
			out["why"] = "no point model trained for " + sym + " " + iv.String() + " yet: the trainer trains a series after --train-every vectors or on POST /prediction/train; until one beats no-change significantly, the no-change forecast is published with the volatility model's intervals"
		} else {
			out["why"] = fmt.Sprintf("none of the %d models trained beat no-change significantly; the latest, %s, %s", n, latest.ID, latest.Decision)
			out["latest_model"] = map[string]any{"model_id": latest.ID, "decision": latest.Decision, "metrics": latest.Metrics, "created_at": latest.CreatedAt}
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	out := map[string]any{"asset": sym, "interval": iv.String(), "model": streams.ModelLinear, "model_id": m.ID, "promoted": true,
		"metrics": m.Metrics, "decision": m.Decision, "created_at": m.CreatedAt}
	if scores != nil {
		out["forecast"] = scores
	}
	writeJSON(w, http.StatusOK, out)
}

// forecastScore is the series' live forecast scores from the registry,
// nil when none is stored yet.
func (g *Gateway) forecastScore(r *http.Request, sym string, iv streams.Interval) (*streams.ForecastScore, error) {
	ctx, cancel := g.io(r)
	defer cancel()
	e, err := g.d.Registry.Get(ctx, streams.ForecastKey(iv, sym))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: forecast scores: %w", err)
	}
	var s streams.ForecastScore
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return nil, fmt.Errorf("gateway: decode forecast scores %s %s: %w", sym, iv, err)
	}
	return &s, nil
}

// latestModel is the newest model trained for the series and how many
// were.
func (g *Gateway) latestModel(r *http.Request, sym string, iv streams.Interval) (streams.ModelRecord, int, error) {
	models, err := g.models(r, sym)
	if err != nil {
		return streams.ModelRecord{}, 0, err
	}
	var latest streams.ModelRecord
	n := 0
	for _, m := range models {
		if m.Interval != iv {
			continue
		}
		n++
		if n == 1 || m.CreatedAt.After(latest.CreatedAt) {
			latest = m
		}
	}
	return latest, n, nil
}

func (g *Gateway) listModels(w http.ResponseWriter, r *http.Request) {
	var sym string
	if a := r.URL.Query().Get("asset"); a != "" {
		var err error
		if sym, err = assetParam(a); err != nil {
			g.fail(w, r, err)
			return
		}
	}
	out, err := g.models(r, sym)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

// models lists the registry's models of sym (every symbol when empty), by
// id.
func (g *Gateway) models(r *http.Request, sym string) ([]streams.ModelRecord, error) {
	ctx, cancel := g.io(r)
	defer cancel()
	lister, err := g.d.Registry.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("gateway: list models: %w", err)
	}
	var ids []string
	for k := range lister.Keys() {
		if id, ok := strings.CutPrefix(k, streams.ModelKey("")); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := []streams.ModelRecord{}
	for _, id := range ids {
		m, err := g.model(r, id)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		if sym == "" || m.Symbol == sym {
			out = append(out, m)
		}
	}
	return out, nil
}

func (g *Gateway) submitJob(kind streams.JobKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Asset    string            `json:"asset"`
			Interval string            `json:"interval"`
			Params   map[string]string `json:"params"`
		}
		if r.ContentLength != 0 {
			if err := g.decodeJSON(w, r, &body); err != nil {
				g.fail(w, r, err)
				return
			}
		}
		if body.Asset == "" {
			body.Asset = defaultAsset
		}
		sym, err := assetParam(body.Asset)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		iv, err := intervalParam(body.Interval)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		if len(body.Params) > 32 {
			g.fail(w, r, errorf(http.StatusBadRequest, "invalid_params", "at most 32 params"))
			return
		}
		actor := claimsOf(r).Subject
		job := streams.Job{ID: auth.NewID(), Kind: kind, Symbol: sym, Interval: iv, Params: body.Params, RequestedBy: actor, RequestedAt: g.now().UTC()}
		ctx, cancel := g.io(r)
		defer cancel()
		if err := g.jobs.Submit(ctx, &job); err != nil {
			g.fail(w, r, fmt.Errorf("gateway: queue job: %w", err))
			return
		}
		g.audit(ctx, "job.submit", actor, job.ID, "ok", remoteIP(r), string(kind)+" "+sym+" "+iv.String())
		w.Header().Set("Location", "/prediction/jobs/"+job.ID)
		writeJSON(w, http.StatusAccepted, map[string]any{"job_id": job.ID, "kind": kind, "state": streams.JobQueued, "status_url": "/prediction/jobs/" + job.ID})
	}
}

func (g *Gateway) getJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		g.fail(w, r, errorf(http.StatusNotFound, "job_not_found", "no such job"))
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	st, err := g.jobs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		g.fail(w, r, errorf(http.StatusNotFound, "job_not_found", "no such job"))
		return
	}
	if err != nil {
		g.fail(w, r, fmt.Errorf("gateway: get job: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"job_id": id, "kind": st.Job.Kind, "asset": st.Job.Symbol, "interval": st.Job.Interval.String(),
		"state": st.State, "error": st.Error, "result": st.Result, "requested_by": st.Job.RequestedBy, "requested_at": st.Job.RequestedAt, "updated_at": st.UpdatedAt})
}
