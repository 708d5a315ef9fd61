import { useEffect, useState } from "preact/hooks";
import { api, get } from "../api.js";
import { subscribe } from "../live.js";
import { time, num } from "../format.js";

// The rule routes are the notifier's (GET/POST /alerts/rules,
// GET/PUT/DELETE /alerts/rules/{id}, GET /alerts/history). A gateway
// without them answers 404 and the page says so instead of failing.
const KINDS = [
  ["price_cross", "Price crosses a level"],
  ["pct_move", "Moves by a percentage over a window"],
  ["predicted_move", "Predicted move above a threshold"],
  ["volatility_spike", "Volatility spike"],
  ["model_failing", "Model failing"],
];

function ruleBody(f) {
  const body = { kind: f.get("kind"), symbol: f.get("symbol"), threshold: Number(f.get("threshold")) };
  if (f.get("direction")) body.direction = f.get("direction");
  if (f.get("window")) body.window = f.get("window");
  if (f.get("trigger")) body.trigger = f.get("trigger");
  if (f.get("cooldown")) body.cooldown = f.get("cooldown");
  return body;
}

export function Alerts({ s }) {
  const [rules, setRules] = useState(null);
  const [missing, setMissing] = useState(false);
  const [history, setHistory] = useState([]);
  const [live, setLive] = useState([]);
  const [edit, setEdit] = useState(null);
  const [err, setErr] = useState("");
  async function load() {
    try {
      const r = await get("/alerts/rules");
      setRules(r.rules || []);
    } catch (e) {
      if (e.status === 404) setMissing(true);
      else setErr(e.message);
    }
    try {
      const h = await get("/alerts/history");
      setHistory(h.alerts || []);
    } catch (e) {
      if (e.status === 404) {
        const h = await get("/crypto/alert_history/BTC-USD").catch(() => ({ alerts: [] }));
        setHistory((h.alerts || []).slice().reverse());
      }
    }
  }
  useEffect(() => {
    load();
    return subscribe("alerts", (a, meta) => {
      if (!meta.snapshot) setLive((l) => [a, ...l].slice(0, 50));
    });
  }, []);
  async function save(e) {
    e.preventDefault();
    setErr("");
    try {
      const body = ruleBody(new FormData(e.target));
      if (edit && edit.id) await api("PUT", `/alerts/rules/${encodeURIComponent(edit.id)}`, body);
      else await api("POST", "/alerts/rules", body);
      setEdit(null);
      e.target.reset();
      load();
    } catch (ex) {
      setErr(ex.message);
    }
  }
  async function del(id) {
    setErr("");
    try {
      await api("DELETE", `/alerts/rules/${encodeURIComponent(id)}`);
      load();
    } catch (ex) {
      setErr(ex.message);
    }
  }
  const r = edit || {};
  return (
    <main>
      <h1>Alerts</h1>
      {err && <p class="error">{err}</p>}
      <section class="card">
        <h2>Live</h2>
        {live.length ? (
          <ul id="alert-feed">{live.map((a) => <li key={a.id}>{time(a.at)} · <b>{a.symbol}</b> {a.message}</li>)}</ul>
        ) : <p><small>Alerts fired while this page is open appear here and as a notification.</small></p>}
      </section>
      <section class="card">
        <h2>My rules</h2>
        {missing ? <p id="rules-missing">This gateway does not serve alert rules yet.</p> : !rules ? <p>Loading…</p> : (
          <>
            <table id="rules">
              <thead><tr><th>Rule</th><th>Asset</th><th class="num">Threshold</th><th>Owner</th><th /></tr></thead>
              <tbody>
                {rules.map((x) => (
                  <tr key={x.id} data-rule={x.id}>
                    <td>{x.kind}{x.direction ? " " + x.direction : ""}{x.window ? " over " + x.window : ""}</td>
                    <td>{x.symbol}</td>
                    <td class="num">{num(x.threshold)}</td>
                    <td>{x.owner || x.user || s.username}</td>
                    <td><button onClick={() => setEdit(x)}>Edit</button> <button class="danger" onClick={() => del(x.id)}>Delete</button></td>
                  </tr>
                ))}
              </tbody>
            </table>
            <form id="rule-form" class="inline" onSubmit={save} key={r.id || "new"}>
              <select name="kind" value={r.kind}>{KINDS.map(([k, l]) => <option value={k}>{l}</option>)}</select>
              <input name="symbol" value={r.symbol || "BTC/USD"} required />
              <input name="threshold" type="number" step="any" value={r.threshold} placeholder="threshold" required />
              <select name="direction" value={r.direction || ""}><option value="">either way</option><option value="up">up</option><option value="down">down</option></select>
              <input name="window" value={r.window || ""} placeholder="window, e.g. 15m" />
              <select name="trigger" value={r.trigger || ""}><option value="">default trigger</option><option value="once">once</option><option value="once_per_candle">once per candle</option><option value="once_per_close">once per candle close</option></select>
              <input name="cooldown" value={r.cooldown || ""} placeholder="cooldown, e.g. 5m" />
              <button type="submit">{r.id ? "Save rule" : "Add rule"}</button>
              {r.id && <button type="button" onClick={() => setEdit(null)}>Cancel</button>}
            </form>
          </>
        )}
      </section>
      <section class="card">
        <h2>History</h2>
        {history.length ? (
          <ul id="alert-history">{history.map((a) => <li key={a.id}>{time(a.at)} · {a.kind}: {a.message}</li>)}</ul>
        ) : <p>No alert has fired yet.</p>}
      </section>
    </main>
  );
}
