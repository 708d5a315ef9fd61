import { useEffect, useState } from "preact/hooks";
import { api, get } from "../api.js";
import { subscribe } from "../live.js";
import { time, dur } from "../format.js";
import { useIntervals } from "../intervals.jsx";

// The rules are the notifier's (GET/POST /alerts/rules, GET/PUT/DELETE
// /alerts/rules/{id}, POST /alerts/rules/preview, GET /alerts/history).
const KINDS = [
  ["price_cross", "Price crosses a level", false],
  ["percent_move", "Moves by a percentage over a window", false],
  ["predicted_move", "Predicted move above a percentage", false],
  ["volatility_spike", "Volatility spike (times its average)", false],
  ["model_error", "Model failing (error above a percentage)", false],
  ["forecast_failing", "Forecast failing its live score (a horizon, or any)", false],
  ["failed_logins", "Failed logins (security)", true],
  ["role_granted", "Role granted (security)", true],
  ["user_deleted", "User deleted (security)", true],
];

// ruleBody reads the form into the rule body, leaving out what is empty so
// that the server's defaults apply.
function ruleBody(f) {
  const body = { kind: f.get("kind") };
  for (const k of ["name", "symbol", "interval", "direction", "window", "horizon", "trigger", "cooldown", "per"]) {
    const v = (f.get(k) || "").trim();
    if (v) body[k] = v;
  }
  for (const k of ["threshold", "hysteresis"]) if ((f.get(k) || "") !== "") body[k] = Number(f.get(k));
  if ((f.get("count") || "") !== "") body.count = parseInt(f.get("count"), 10);
  if (f.get("system") === "on") body.system = true;
  const hook = (f.get("webhook") || "").trim();
  if (hook) body.webhook = { url: hook };
  return body;
}

// Choice is a select whose first choice is set once: the rule form is
// uncontrolled (defaultValue, selected) because a controlled value is put
// back on every render, and a live alert re-renders the page while the
// user types.
function Choice({ name, cur, options }) {
  return <select name={name}>{options.map(([v, label]) => <option value={v} selected={v === cur}>{label}</option>)}</select>;
}

function describe(r) {
  const parts = [r.kind.replace(/_/g, " ")];
  if (r.direction && r.direction !== "either") parts.push(r.direction);
  // A kind with no threshold (forecast_failing) is stored with 0.
  if (r.threshold !== undefined && r.kind !== "forecast_failing") parts.push(String(r.threshold)); // as typed: 0.0001 is not 0.00
  if (r.window) parts.push("over " + dur(r.window));
  if (r.kind === "forecast_failing") parts.push(r.horizon ? dur(r.horizon) + " ahead" : "any horizon");
  return parts.join(" ");
}

// lastFired is when a rule last fired: its newest alert (any trigger
// mode), or for a spent once-rule the time it was marked.
const lastFired = (r) => r.last_fired_at || r.fired_at || "";

export function Alerts({ s }) {
  const admin = s.role === "admin";
  const runIvs = useIntervals("1m");
  const [rules, setRules] = useState(null);
  const [history, setHistory] = useState([]);
  const [next, setNext] = useState(null);
  const [live, setLive] = useState([]);
  const [edit, setEdit] = useState(null);
  const [preview, setPreview] = useState(null);
  const [err, setErr] = useState("");
  async function load() {
    try {
      setRules((await get("/alerts/rules")).rules);
      const h = await get("/alerts/history?limit=100");
      setHistory(h.alerts);
      setNext(h.next);
    } catch (e) {
      setErr(e.message);
    }
  }
  async function more() {
    try {
      const h = await get(`/alerts/history?limit=100&after=${next}`);
      setHistory((old) => [...old, ...h.alerts]);
      setNext(h.next);
    } catch (e) {
      setErr(e.message);
    }
  }
  useEffect(() => {
    load();
    return subscribe("alerts", (a, meta) => {
      if (!meta.snapshot) setLive((l) => [a, ...l.filter((x) => x.id !== a.id)].slice(0, 50));
      // An alert is its rule's newest firing, as the server's
      // last_fired_at will say: the table moves without a reload.
      setRules((rs) => rs && rs.map((x) => x.id === a.rule_id && !(Date.parse(lastFired(x)) >= Date.parse(a.at)) ? { ...x, last_fired_at: a.at } : x));
    });
  }, []);
  const act = (f) => async (e) => {
    if (e && e.preventDefault) e.preventDefault();
    setErr("");
    try {
      await f(e);
    } catch (ex) {
      setErr(ex.message);
    }
  };
  const save = act(async (e) => {
    const body = ruleBody(new FormData(e.target));
    if (edit && edit.id) await api("PUT", `/alerts/rules/${encodeURIComponent(edit.id)}`, body);
    else await api("POST", "/alerts/rules", body);
    setEdit(null);
    setPreview(null);
    e.target.reset();
    await load();
  });
  const tryIt = act(async () => {
    const form = document.getElementById("rule-form");
    const to = Math.floor(Date.now() / 1000) + 86400, from = to - 8 * 86400;
    setPreview(await api("POST", "/alerts/rules/preview", { rule: ruleBody(new FormData(form)), from: String(from), to: String(to) }));
  });
  const del = (id) => act(async () => {
    await api("DELETE", `/alerts/rules/${encodeURIComponent(id)}`);
    await load();
  })();
  const r = edit || {};
  return (
    <main>
      <h1>Alerts</h1>
      {err && <p class="error" role="alert">{err}</p>}
      <section class="card">
        <h2>Live</h2>
        {live.length ? (
          <ul id="alert-feed">{live.map((a) => <li key={a.id}>{time(a.at)} · <b>{a.symbol || a.key}</b> {a.message}</li>)}</ul>
        ) : <p><small>Alerts fired while the page is open appear here and as a notification.</small></p>}
      </section>
      <section class="card">
        <h2>Rules</h2>
        {!rules ? <p>Loading…</p> : (
          <div class="scroll">
            <table id="rules">
              <thead><tr><th>Name</th><th>Rule</th><th>Asset</th><th>Trigger</th><th>Owner</th><th>Last fired</th><th /></tr></thead>
              <tbody>
                {rules.map((x) => (
                  <tr key={x.id} data-rule={x.id}>
                    <td>{x.name}{x.disabled && " (off)"}</td>
                    <td>{describe(x)}</td>
                    <td>{x.symbol} {x.interval}</td>
                    <td>{x.trigger.replace(/_/g, " ")}{x.cooldown ? ", cooldown " + dur(x.cooldown) : ""}</td>
                    <td>{x.system ? "system" : x.owner}</td>
                    <td class="last-fired" data-at={lastFired(x)}>{lastFired(x) ? time(lastFired(x)) : "never"}</td>
                    <td>{(!x.system || admin) && <><button onClick={() => { setEdit(x); setPreview(null); }}>Edit</button> <button class="danger" onClick={() => del(x.id)}>Delete</button></>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <form id="rule-form" class="inline" onSubmit={save} key={r.id || "new"}>
          <input name="name" defaultValue={r.name || ""} placeholder="name" maxLength={100} />
          <Choice name="kind" cur={r.kind || "price_cross"} options={KINDS.filter((k) => admin || !k[2])} />
          <input name="symbol" defaultValue={r.symbol ?? "BTC/USD"} placeholder="BTC/USD" />
          <Choice name="interval" cur={r.interval || runIvs[0]} options={[...new Set([r.interval, ...runIvs].filter(Boolean))].map((i) => [i, i])} />
          <Choice name="direction" cur={r.direction || "either"} options={[["either", "either way"], ["up", "up"], ["down", "down"]]} />
          <input name="threshold" type="number" step="any" defaultValue={r.threshold ?? ""} placeholder="threshold" />
          <input name="window" defaultValue={dur(r.window)} placeholder="window, e.g. 15m" />
          <input name="horizon" defaultValue={dur(r.horizon)} placeholder="horizon, e.g. 15m (forecast failing)" />
          <input name="count" type="number" min="0" defaultValue={r.count ?? ""} placeholder="count" />
          <Choice name="trigger" cur={r.trigger || "once_per_close"} options={[["once_per_close", "once per candle close"], ["once_per_candle", "once per candle (ticks)"], ["once", "once"]]} />
          <input name="cooldown" defaultValue={dur(r.cooldown)} placeholder="cooldown, e.g. 5m" />
          <input name="hysteresis" type="number" step="any" min="0" max="1" defaultValue={r.hysteresis || ""} placeholder="hysteresis 0..1" />
          <input name="webhook" type="url" defaultValue={(r.webhook && r.webhook.url) || ""} placeholder="webhook https://…" />
          {admin && <label><input name="system" type="checkbox" defaultChecked={!!r.system} /> system rule</label>}
          <button type="submit" id="save-rule">{r.id ? "Save rule" : "Add rule"}</button>
          <button type="button" onClick={tryIt} id="preview-rule">Try on the last week</button>
          {r.id && <button type="button" onClick={() => setEdit(null)}>Cancel</button>}
        </form>
        {preview && (
          <p id="preview">Over {preview.candles} candles this rule would have fired {preview.firings.length} times{preview.firings.length ? ": " : "."}
            {preview.firings.slice(0, 10).map((f) => <span key={f.id}>{time(f.at)} ({f.message}); </span>)}</p>
        )}
      </section>
      <section class="card">
        <h2>History</h2>
        {history.length ? (
          <ul id="alert-history">{history.map((a) => <li key={a.id}>{time(a.at)} · {a.kind}: {a.message}</li>)}</ul>
        ) : <p>No alert has fired yet.</p>}
        {next !== null && next !== undefined && <button onClick={more}>More</button>}
      </section>
    </main>
  );
}
