package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"cryptostream/gateway"
	"cryptostream/gateway/auth"
	"cryptostream/gateway/hub"
	"cryptostream/natstest"
	"cryptostream/readmodel"
	"cryptostream/streams"
)

// noPairs is a Kraken that lists nothing: these tests track assets by
// writing the bucket, not through the admin's search.
type noPairs struct{}

func (noPairs) AssetPairs(context.Context) ([]gateway.KrakenPair, error) { return nil, nil }

// inProcess is a gateway over an embedded JetStream, serving the embedded
// dashboard, with the assets given tracked and the intervals given run:
// what the preference and interval tests need and `run --demo` (one
// asset, one interval) cannot give.
type inProcess struct {
	url string
}

func startGateway(t *testing.T, assets []string, intervals []streams.Interval) *inProcess {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(bytes.Repeat([]byte("k"), 48), 30*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := gateway.Deps{Publisher: js, Reader: readmodel.NewJetStream(js), Pairs: noPairs{}, Streams: js, Tokens: tokens,
		Metrics: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := gateway.OpenBuckets(t.Context(), js, &d); err != nil {
		t.Fatal(err)
	}
	for _, sym := range assets {
		b, _ := json.Marshal(streams.Asset{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: sym, AddedBy: "test", AddedAt: time.Now()})
		if _, err := d.Assets.Create(t.Context(), streams.AssetKey(sym), b); err != nil {
			t.Fatal(err)
		}
	}
	gw, err := gateway.New(gateway.Config{BcryptCost: bcrypt.MinCost, LoginUserBurst: 50, LoginIPBurst: 1000, LoginIPEvery: time.Millisecond,
		LoginUserEvery: time.Millisecond, Hub: hub.Config{Intervals: intervals}}, d)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	gw.Register(mux)
	hs := httptest.NewUnstartedServer(mux)
	hs.Config.RegisterOnShutdown(gw.Shutdown)
	hs.Start()
	ctx, stop := context.WithCancel(context.WithoutCancel(t.Context()))
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		if err := gw.Run(ctx); err != nil {
			t.Errorf("gateway run: %v", err)
		}
	}()
	t.Cleanup(func() { stop(); <-ran; gw.Shutdown(); hs.Close() })
	return &inProcess{url: hs.URL}
}

func (g *inProcess) call(t *testing.T, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	s := &system{direct: g.url}
	return s.api(t, method, path, token, body)
}

func (g *inProcess) signup(t *testing.T, user, pass string) string {
	t.Helper()
	if code, m := g.call(t, "POST", "/auth/signup", "", map[string]string{"username": user, "password": pass}); code != http.StatusCreated {
		t.Fatalf("signup %s: %d %v", user, code, m)
	}
	s := &system{direct: g.url}
	return s.token(t, user, pass)
}

func (tb *tab) watchlist() (rows []string, interval string) {
	tb.t.Helper()
	var v struct {
		Rows     []string `json:"rows"`
		Interval string   `json:"interval"`
	}
	tb.eval(`({rows: [...document.querySelectorAll("#watchlist tbody tr")].map(r => r.dataset.symbol), interval: document.querySelector("#watchlist").dataset.interval})`, &v)
	return v.Rows, v.Interval
}

func (tb *tab) options(sel string) []string {
	tb.t.Helper()
	var out []string
	tb.eval(`[...document.querySelectorAll(`+jsString(sel)+` + " option:not([disabled])")].map(o => o.value)`, &out)
	return out
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestWatchlistPreferences drives Chromium against a gateway with three
// tracked assets and three intervals run: a user chooses and orders the
// watchlist and the default interval, and finds them after a reload and
// in a fresh browser profile, as the server keeps them; another user's
// stay the defaults. Every interval menu offers the intervals run and no
// other, and the asset page says so when a link asks for one that is not
// run, or for an asset that is not tracked, instead of waiting for a
// candle that never comes.
func TestWatchlistPreferences(t *testing.T) {
	const alice, alicePass, bob, bobPass = "alice", "alice-password-1", "bob", "bob-password-1"
	run := []streams.Interval{streams.Interval1m, streams.Interval5m, streams.Interval15m}
	gw := startGateway(t, []string{"BTC/USD", "ETH/USD", "SOL/USD"}, run)
	aliceTok := gw.signup(t, alice, alicePass)
	bobTok := gw.signup(t, bob, bobPass)
	all := []string{"BTC/USD", "ETH/USD", "SOL/USD"}
	runNames := []string{"1m", "5m", "15m"}

	browser := newBrowser(t)
	a := newTab(t, browser, alice)
	a.run(chromedp.Navigate(gw.url + "/#/"))
	a.login(gw.url, alice, alicePass)
	a.waitJS("the watchlist", `document.querySelectorAll("#watchlist tbody tr").length === 3`)
	if rows, iv := a.watchlist(); !slices.Equal(rows, all) || iv != "1m" {
		t.Fatalf("before any choice: %v at %s, want every tracked asset at 1m", rows, iv)
	}
	// SOL/USD out, ETH/USD above BTC/USD, 15m.
	a.run(chromedp.Click("#edit-watchlist", chromedp.ByQuery))
	a.waitJS("the editor", `document.querySelector("#watchlist-editor")`)
	if got := a.options("#pref-interval"); !slices.Equal(got, runNames) {
		t.Fatalf("the default-interval menu offers %v, want the intervals run %v", got, runNames)
	}
	a.run(chromedp.Click(`#watchlist-editor button[data-remove="SOL/USD"]`, chromedp.ByQuery),
		chromedp.Click(`#watchlist-editor button[data-up="ETH/USD"]`, chromedp.ByQuery),
		chromedp.SetValue("#pref-interval", "15m", chromedp.ByQuery))
	// SetValue sets the property; the page listens for change.
	a.eval(`document.querySelector("#pref-interval").dispatchEvent(new Event("change", {bubbles: true}))`, nil)
	a.run(chromedp.Click("#save-watchlist", chromedp.ByQuery))
	want := []string{"ETH/USD", "BTC/USD"}
	a.waitJS("the saved watchlist", `!document.querySelector("#watchlist-editor") && document.querySelector("#watchlist").dataset.interval === "15m"`)
	if rows, _ := a.watchlist(); !slices.Equal(rows, want) {
		t.Fatalf("after saving: %v, want %v", rows, want)
	}
	if code, p := gw.call(t, "GET", "/auth/users/me/preferences", aliceTok, nil); code != http.StatusOK || p["interval"] != "15m" || !slices.Equal(strs(p["watchlist"]), want) {
		t.Fatalf("the server keeps %d %v", code, p)
	}

	// A reload (the token lives in the page only: log in again), then a
	// browser with a profile of its own.
	a.run(chromedp.Reload())
	a.login(gw.url, alice, alicePass)
	a.hash("#/")
	a.waitJS("the watchlist after the reload", `document.querySelectorAll("#watchlist tbody tr").length === 2`)
	if rows, iv := a.watchlist(); !slices.Equal(rows, want) || iv != "15m" {
		t.Fatalf("after a reload: %v at %s", rows, iv)
	}
	fresh := newTab(t, newBrowser(t), alice+" elsewhere")
	fresh.run(chromedp.Navigate(gw.url + "/#/"))
	fresh.login(gw.url, alice, alicePass)
	fresh.waitJS("the watchlist in a fresh profile", `document.querySelectorAll("#watchlist tbody tr").length === 2`)
	if rows, iv := fresh.watchlist(); !slices.Equal(rows, want) || iv != "15m" {
		t.Fatalf("in a fresh profile: %v at %s", rows, iv)
	}

	// Bob's are untouched: the defaults, on the server and in his page.
	if code, p := gw.call(t, "GET", "/auth/users/me/preferences", bobTok, nil); code != http.StatusOK || p["interval"] != "1m" || len(strs(p["watchlist"])) != 0 {
		t.Fatalf("bob's preferences: %d %v", code, p)
	}
	b := newTab(t, browser, bob)
	b.run(chromedp.Navigate(gw.url + "/#/"))
	b.login(gw.url, bob, bobPass)
	b.waitJS("bob's watchlist", `document.querySelectorAll("#watchlist tbody tr").length === 3`)
	if rows, iv := b.watchlist(); !slices.Equal(rows, all) || iv != "1m" {
		t.Fatalf("bob sees %v at %s", rows, iv)
	}

	// Every interval menu: the intervals run, no other.
	a.hash("#/asset/ETH-USD?iv=5m")
	a.waitJS("the asset page", `document.querySelector("#interval option")`)
	for _, c := range []struct{ page, sel string }{
		{"#/asset/ETH-USD?iv=5m", "#interval"},
		{"#/models", "#models-interval"},
		{"#/alerts", `#rule-form select[name=interval]`},
	} {
		a.hash(c.page)
		a.waitJS(c.sel, `document.querySelector(`+jsString(c.sel)+`) && document.querySelectorAll(`+jsString(c.sel+" option")+`).length >= 3`)
		if got := a.options(c.sel); !slices.Equal(got, runNames) {
			t.Errorf("%s %s offers %v, want %v", c.page, c.sel, got, runNames)
		}
	}

	// A link to an interval not run, or to an asset not tracked: the hub
	// refuses the channel (not_tracked) and the page says so.
	for _, c := range []struct{ hash, says string }{
		{"#/asset/ETH-USD?iv=1h", "interval 1h is not tracked"},
		{"#/asset/XRP-USD?iv=1m", "asset XRP/USD is not tracked"},
	} {
		a.hash("#/")
		a.waitJS("home", `document.querySelector("#watchlist")`)
		a.hash(c.hash)
		a.waitJS("the page's answer to "+c.hash, `document.querySelector("#not-tracked, #chart[data-loading='0']")`)
		var got struct {
			Text    string `json:"text"`
			Waiting bool   `json:"waiting"`
			Chart   bool   `json:"chart"`
		}
		a.eval(`(() => { const n = document.querySelector("#not-tracked"); return {text: n ? n.textContent : "", waiting: !!document.querySelector("#waiting"), chart: !document.querySelector("#chart").hidden}; })()`, &got)
		if !bytes.Contains([]byte(got.Text), []byte(c.says)) || got.Waiting || got.Chart {
			t.Fatalf("%s: the page says %q (waiting %v, chart shown %v), want %q and no empty chart", c.hash, got.Text, got.Waiting, got.Chart, c.says)
		}
	}
	for _, tb := range []*tab{a, fresh, b} {
		if errs := tb.consoleErrors(); len(errs) > 0 {
			t.Errorf("tab %s: console errors: %v", tb.name, errs)
		}
	}
}

func strs(v any) []string {
	out := []string{}
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestForecastFailingRuleForm makes a forecast_failing rule (no threshold,
// a horizon) through the alerts page and finds it stored as asked, then
// edits and deletes it there.
func TestForecastFailingRuleForm(t *testing.T) {
	const user, pass = "carol", "carol-password-1"
	gw := startGateway(t, []string{"BTC/USD"}, []streams.Interval{streams.Interval1m})
	tok := gw.signup(t, user, pass)
	tb := newTab(t, newBrowser(t), user)
	tb.run(chromedp.Navigate(gw.url + "/#/alerts"))
	tb.login(gw.url, user, pass)
	tb.run(chromedp.WaitVisible("#rule-form", chromedp.ByQuery),
		chromedp.SendKeys(`#rule-form input[name=name]`, "fan failing", chromedp.ByQuery),
		chromedp.SetValue(`#rule-form select[name=kind]`, "forecast_failing", chromedp.ByQuery),
		chromedp.SendKeys(`#rule-form input[name=horizon]`, "15m", chromedp.ByQuery),
		chromedp.Click("#save-rule", chromedp.ByQuery))
	tb.waitJS("the rule in the table", `[...document.querySelectorAll("#rules td")].some(td => td.textContent === "fan failing")`)
	code, m := gw.call(t, "GET", "/alerts/rules", tok, nil)
	rules, _ := m["rules"].([]any)
	if code != http.StatusOK || len(rules) != 1 {
		t.Fatalf("stored rules: %d %v", code, m)
	}
	r := rules[0].(map[string]any)
	if h, _ := time.ParseDuration(r["horizon"].(string)); r["kind"] != "forecast_failing" || h != 15*time.Minute {
		t.Fatalf("stored rule: %v", r)
	}
	var text string
	tb.eval(`document.querySelector("#rules tbody tr").textContent`, &text)
	if !bytes.Contains([]byte(text), []byte("15m ahead")) {
		t.Fatalf("the rules table says %q", text)
	}
	// Edited to one hour ahead in the form, then deleted.
	id := r["id"].(string)
	tb.run(chromedp.Click(fmt.Sprintf(`#rules tr[data-rule=%q] button`, id), chromedp.ByQuery))
	tb.waitJS("the rule in the form", `document.querySelector("#save-rule").textContent === "Save rule" && document.querySelector("#rule-form [name=horizon]").value === "15m"`)
	tb.run(chromedp.SetValue(`#rule-form input[name=horizon]`, "1h", chromedp.ByQuery), chromedp.Click("#save-rule", chromedp.ByQuery))
	tb.waitJS("the edited rule in the table", `document.querySelector("#rules tbody tr") && document.querySelector("#rules tbody tr").textContent.includes("1h ahead")`)
	if code, m := gw.call(t, "GET", "/alerts/rules/"+id, tok, nil); code != http.StatusOK || m["horizon"] != "1h0m0s" || m["kind"] != "forecast_failing" {
		t.Fatalf("after the edit: %d %v", code, m)
	}
	tb.run(chromedp.Click(fmt.Sprintf(`#rules tr[data-rule=%q] button.danger`, id), chromedp.ByQuery))
	tb.waitJS("the rule gone from the table", `document.querySelector("#rules") && !document.querySelector("#rules tbody tr")`)
	if code, m := gw.call(t, "GET", "/alerts/rules", tok, nil); code != http.StatusOK || len(m["rules"].([]any)) != 0 {
		t.Fatalf("after the delete: %d %v", code, m)
	}
	if errs := tb.consoleErrors(); len(errs) > 0 {
		t.Fatalf("console errors: %v", errs)
	}
}
