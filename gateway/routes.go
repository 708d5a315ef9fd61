package gateway

import (
	_ "embed"
	"net/http"

	"cryptostream/gateway/web"
)

type route struct {
	pattern string
	handler http.Handler
}

//go:embed openapi.json
var openapiDoc []byte

func (g *Gateway) routes() []route {
	hf := func(p string, f func(http.ResponseWriter, *http.Request)) route { return route{p, http.HandlerFunc(f)} }
	return []route{
		hf("POST /auth/signup", g.signup),
		hf("POST /auth/login", g.login),
		{"GET /auth/users/me", g.authed(g.getMe)},
		{"PUT /auth/users/me", g.authed(g.putMe)},
		{"PUT /auth/user/me", g.authed(g.putMeDeprecated)},
		{"GET /auth/users/me/preferences", g.authed(g.getPreferences)},
		{"PUT /auth/users/me/preferences", g.authed(g.putPreferences)},
		{"GET /auth/users", g.admin(g.listUsers)},
		{"DELETE /auth/users/{username}", g.admin(g.deleteUser)},
		{"PUT /auth/users/{username}/role", g.admin(g.putRole)},

		{"GET /crypto/assets", g.authed(g.listAssets)},
		{"POST /crypto/assets", g.admin(g.addAsset)},
		{"DELETE /crypto/assets/{id}", g.admin(g.deleteAsset)},
		{"GET /crypto/kraken_assets", g.authed(g.krakenAssets)},
		{"GET /crypto/asset_history/{asset}", g.authed(g.assetHistory)},
		{"GET /crypto/alert_history/{asset}", g.authed(g.alertHistory)},
		{"GET /crypto/asset_latest/{asset}", g.authed(g.assetLatest)},

		{"GET /prediction/latest-prediction", g.authed(g.latestPrediction)},
		{"GET /prediction/history", g.authed(g.predictionHistory)},
		{"GET /prediction/model-evaluation", g.authed(g.modelEvaluation)},
		{"GET /prediction/best-model", g.authed(g.bestModel)},
		{"GET /prediction/models", g.authed(g.listModels)},
		{"POST /prediction/train", g.admin(g.submitJob("train"))},
		{"POST /prediction/score", g.admin(g.submitJob("score"))},
		{"POST /prediction/predict", g.admin(g.submitJob("predict"))},
		{"GET /prediction/jobs/{id}", g.authed(g.getJob)},

		{"POST /backtests", g.admin(g.submitBacktest)},
		{"GET /backtests", g.admin(g.listBacktests)},
		{"GET /backtests/{id}", g.admin(g.getBacktest)},
		{"GET /backtests/{id}/report.html", g.admin(g.backtestHTML)},

		{"GET /alerts/rules", g.authed(g.listRules)},
		{"POST /alerts/rules", g.authed(g.createRule)},
		{"POST /alerts/rules/preview", g.authed(g.previewRule)},
		{"GET /alerts/rules/{id}", g.authed(g.getRule)},
		{"PUT /alerts/rules/{id}", g.authed(g.putRule)},
		{"DELETE /alerts/rules/{id}", g.authed(g.deleteRule)},
		{"GET /alerts/history", g.authed(g.alertsHistory)},

		{"GET /ws", g.hub},
		hf("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(openapiDoc)
		}),
		// The dashboard: its page shell and its content-hashed assets.
		hf("GET /{$}", web.Index),
		hf("GET /static/", web.Static),
		hf("OPTIONS /", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }),
		// Everything else gets the JSON error shape rather than the mux's
		// plain-text 404.
		hf("/", func(w http.ResponseWriter, r *http.Request) {
			g.fail(w, r, errorf(http.StatusNotFound, "not_found", "no route for %s %s", r.Method, r.URL.Path))
		}),
	}
}
