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
}

func (g *Gateway) latestPrediction(w http.ResponseWriter, r *http.Request) {
	sym, iv, err := seriesParams(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	p, err := g.d.Reader.LatestPrediction(ctx, sym, iv)
	if errors.Is(err, readmodel.ErrNotFound) {
		g.fail(w, r, errorf(http.StatusNotFound, "no_prediction", "no %s prediction for %s yet", iv, sym))
		return
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, predictionView{sym, iv.String(), p.Start.UTC(), p.Target.UTC(), p.Horizon, p.ModelID, p.Close, p.PredictedClose, p.Lower, p.Upper, p.LogReturn})
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

func (g *Gateway) modelEvaluation(w http.ResponseWriter, r *http.Request) {
	sym, iv, err := seriesParams(r)
	if err == nil {
		var m streams.ModelRecord
		if m, err = g.champion(r, sym, iv); err == nil {
			writeJSON(w, http.StatusOK, map[string]any{"asset": sym, "interval": iv.String(), "model_id": m.ID, "metrics": m.Metrics, "decision": m.Decision, "created_at": m.CreatedAt})
			return
		}
	}
	g.fail(w, r, err)
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
	ctx, cancel := g.io(r)
	defer cancel()
	lister, err := g.d.Registry.ListKeys(ctx)
	if err != nil {
		g.fail(w, r, fmt.Errorf("gateway: list models: %w", err))
		return
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
			g.fail(w, r, err)
			return
		}
		if sym == "" || m.Symbol == sym {
			out = append(out, m)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
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
