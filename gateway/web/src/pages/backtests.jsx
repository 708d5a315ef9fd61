import { useEffect, useRef, useState } from "preact/hooks";
import { api, get, assetToken } from "../api.js";
import { num, pct, share, time, seconds, unix } from "../format.js";
import { IntervalOptions, useIntervals } from "../intervals.jsx";
import { follow, ended } from "../jobs.js";
import { go } from "../router.js";
import { session } from "../session.js";

const iso = (t) => new Date(t * 1000).toISOString().replace(/\.000Z$/, "Z");

// Backtests (admin) starts a backtest of a range of MARKET through the
// live stages, follows the job's progress to its end and shows the
// report's figures; the HTML report is there to download and share. The
// page decides no access: the API refuses a user's calls anyway.
export function Backtests({ s, query }) {
  if (s.role !== "admin") {
    return <main><h1>Backtests</h1><p class="error" id="forbidden">This page is for administrators.</p></main>;
  }
  const id = query.get("id") || "";
  const [list, setList] = useState(null);
  const [err, setErr] = useState("");
  const loadList = () => get("/backtests").then(setList, (e) => setErr(e.message));
  useEffect(() => { loadList(); }, [id]);
  return (
    <main>
      <h1>Backtests</h1>
      {err && <p class="error">{err}</p>}
      <BacktestForm onStarted={(bid) => go(`#/backtests?id=${bid}`)} />
      {id && <Backtest key={id} id={id} onEnded={loadList} />}
      <section class="card">
        <h2>Recent</h2>
        {!list ? <p>Loading…</p> : list.length === 0 ? <p>No backtest has run this week.</p> : (
          <div class="scroll">
            <table id="backtests">
              <thead><tr><th>Requested</th><th>Series</th><th>Range</th><th>By</th><th>State</th></tr></thead>
              <tbody>
                {list.map((b) => (
                  <tr key={b.id} data-backtest={b.id} class={b.id === id ? "active" : ""}>
                    <td><a href={`#/backtests?id=${b.id}`}>{time(b.requested_at)}</a></td>
                    <td>{b.asset} {b.interval}</td>
                    <td>{b.request ? `${time(b.request.from)} – ${time(b.request.to)}` : "—"}</td>
                    <td>{b.requested_by}</td>
                    <td><b class={"state " + b.state}>{b.state}</b></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </main>
  );
}

// BacktestForm asks for what POST /backtests takes. The range defaults to
// the six hours up to the series' latest candle, which exists whatever
// the clock of recorded (demo) data says.
function BacktestForm({ onStarted }) {
  const ivs = useIntervals("1m");
  const [assets, setAssets] = useState([]);
  const [models, setModels] = useState([]);
  const [f, setF] = useState({ asset: "", interval: "", from: "", to: "", forecast: "", retrain: "500", fees: "0.001", slippage: "0.0005", threshold: "0" });
  const [err, setErr] = useState("");
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setF((x) => ({ ...x, [k]: e.target.value }));
  const asset = f.asset || assets[0] || "";
  const interval = f.interval || ivs[0] || "1m";
  useEffect(() => {
    get("/crypto/assets").then((a) => setAssets(a.assets.map((x) => x.symbol)), (e) => setErr(e.message));
  }, []);
  useEffect(() => {
    if (!asset) return;
    let dead = false;
    get(`/prediction/models?asset=${assetToken(asset)}`).then((m) => !dead && setModels(m.models.filter((x) => x.interval === interval)), () => {});
    get(`/crypto/asset_latest/${assetToken(asset)}?interval=${interval}`).then((l) => {
      if (dead) return;
      const end = unix(l.candle.time) + seconds(interval);
      setF((x) => ({ ...x, from: iso(end - 6 * 3600), to: iso(end) }));
    }, () => {});
    return () => { dead = true; };
  }, [asset, interval]);
  async function submit(e) {
    e.preventDefault();
    setErr("");
    setBusy(true);
    const body = { asset, interval, from: f.from.trim(), to: f.to.trim(), fees: Number(f.fees), slippage: Number(f.slippage), threshold: Number(f.threshold) };
    if (f.forecast === "walk-forward") {
      body.train = "walk-forward";
      body.retrain_every = parseInt(f.retrain, 10);
    } else if (f.forecast) body.model = f.forecast;
    try {
      onStarted((await api("POST", "/backtests", body)).id);
    } catch (ex) {
      setErr(ex.message);
    } finally {
      setBusy(false);
    }
  }
  return (
    <section class="card">
      <h2>New backtest</h2>
      <form id="backtest-form" class="inline" onSubmit={submit}>
        <label>Asset <select name="asset" value={asset} onChange={set("asset")}>{assets.map((a) => <option value={a}>{a}</option>)}</select></label>
        <label>Interval <select name="interval" value={interval} onChange={set("interval")}><IntervalOptions current={interval} /></select></label>
        <label>From <input name="from" value={f.from} onInput={set("from")} placeholder="2024-01-01T00:00:00Z" size={21} required /></label>
        <label>To <input name="to" value={f.to} onInput={set("to")} placeholder="2024-01-02T00:00:00Z" size={21} required /></label>
        <label>Forecast <select name="forecast" value={f.forecast} onChange={set("forecast")}>
          <option value="">no-change (no model)</option>
          <option value="walk-forward">walk-forward retraining</option>
          {models.map((m) => <option value={m.id}>model {m.id}{m.champion ? " (champion)" : ""}</option>)}
        </select></label>
        {f.forecast === "walk-forward" && <label>every <input name="retrain" type="number" min="1" value={f.retrain} onInput={set("retrain")} size={6} /> candles</label>}
        <label>Fees <input name="fees" type="number" step="any" min="0" value={f.fees} onInput={set("fees")} size={7} /></label>
        <label>Slippage <input name="slippage" type="number" step="any" min="0" value={f.slippage} onInput={set("slippage")} size={7} /></label>
        <label>Threshold <input name="threshold" type="number" step="any" value={f.threshold} onInput={set("threshold")} size={7} /></label>
        <button type="submit" id="start-backtest" disabled={busy || !asset}>Start</button>
      </form>
      {err && <p class="error" role="alert">{err}</p>}
    </section>
  );
}

// Backtest follows one backtest to its end, then shows its report.
function Backtest({ id, onEnded }) {
  const [st, setSt] = useState(null);
  const [err, setErr] = useState("");
  const alive = useRef(true);
  useEffect(() => {
    alive.current = true;
    follow(`/backtests/${id}`, setSt, () => alive.current).then((last) => last && onEnded(), (e) => setErr(e.message));
    return () => { alive.current = false; };
  }, [id]);
  if (err) return <section class="card"><p class="error">{err}</p></section>;
  if (!st) return <section class="card"><p>Loading…</p></section>;
  const pr = st.progress;
  const read = pr ? parseInt(pr.read, 10) : 0, total = pr ? parseInt(pr.total, 10) : 0;
  return (
    <section class="card" id="backtest" data-id={id} data-state={st.state}>
      <h2>{st.asset} {st.interval} · <b class={"state " + st.state}>{st.state}</b></h2>
      {st.request && <p><small>{time(st.request.from)} – {time(st.request.to)} · requested by {st.requested_by} at {time(st.requested_at)}</small></p>}
      {!ended(st) && (
        <p id="backtest-progress">
          {total ? <><progress max={total} value={read} /> {read} of at most {total} candles read</> : "queued: waiting for the backtest worker"}
        </p>
      )}
      {st.state === "failed" && <p class="error" id="backtest-error">{st.error || "the backtest failed"}</p>}
      {st.report && <Report r={st.report} id={id} />}
    </section>
  );
}

const m = (v) => (v === null || v === undefined ? "—" : num(v, 6));

// Report is the report's figures: what was read, the point errors beside
// the naive forecasts on the same rows, the coverage of each interval
// level and the strategy beside buy-and-hold.
function Report({ r, id }) {
  const p = r.point, t = r.trading;
  const [err, setErr] = useState("");
  async function download() {
    setErr("");
    // The report is served to a bearer token, which a plain link does not
    // carry: read it and hand the browser the bytes.
    try {
      const s = session.value;
      const resp = await fetch(`/backtests/${id}/report.html`, { headers: { Authorization: "Bearer " + (s ? s.token : "") } });
      if (!resp.ok) throw new Error(`the report cannot be read (${resp.status})`);
      const url = URL.createObjectURL(await resp.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = `backtest-${id}.html`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setErr(e.message);
    }
  }
  const perf = (name, x, key) => (
    <tr data-row={key}>
      <td>{name}</td>
      <td class="num" data-total-return={x.total_return}>{pct(x.total_return)}</td>
      <td class="num">{x.sharpe === null || x.sharpe === undefined ? "—" : num(x.sharpe, 2)}</td>
      <td class="num">{x.sortino === null || x.sortino === undefined ? "—" : num(x.sortino, 2)}</td>
      <td class="num">{pct(-x.max_drawdown)}</td>
      <td class="num">{x.trades}</td>
      <td class="num">{share(x.exposure)}</td>
    </tr>
  );
  const err3 = (name, x, key) => (
    <tr data-row={key}>
      <td>{name}</td><td class="num">{x.n}</td><td class="num" data-mae={x.mae}>{m(x.mae)}</td><td class="num">{x.mse.toExponential(3)}</td>
      <td class="num">{num(x.r2, 4)}</td><td class="num">{share(x.direction_accuracy, 1)}</td>
    </tr>
  );
  return (
    <div id="backtest-report" data-id={id}>
      <p>
        Model <b>{r.model}</b>{r.retrain_every ? ` (retrained every ${r.retrain_every} candles)` : ""} · {r.counts.candles} candles
        ({r.counts.filled} filled, {r.counts.gaps} gaps, {r.counts.skipped} skipped, {r.counts.rejected} rejected) ·
        fees {share(r.strategy.fees, 2)}, slippage {share(r.strategy.slippage, 2)}, threshold {r.strategy.threshold}
      </p>
      <h3>Point forecast, {p.horizon} interval{p.horizon === 1 ? "" : "s"} ahead: {p.scored} scored, {p.unscored} not</h3>
      <div class="scroll">
        <table id="backtest-point">
          <thead><tr><th>Forecast</th><th class="num">n</th><th class="num">MAE (log return)</th><th class="num">MSE</th><th class="num">R²</th><th class="num">Direction</th></tr></thead>
          <tbody>{err3(r.model === "no-change" ? "backtested (no-change)" : `backtested: ${r.model}`, p.model, "model")}{err3("no change", p.no_change, "no_change")}{err3("last return", p.last_return, "last_return")}</tbody>
        </table>
      </div>
      <h3>Interval coverage</h3>
      {r.coverage && r.coverage.length ? (
        <ul id="backtest-coverage">{r.coverage.map((c) => <li data-level={c.level}>{share(c.level)} interval: {share(c.coverage, 1)} of {c.n} actual closes inside</li>)}</ul>
      ) : <p><small>no interval was ready in the range</small></p>}
      <h3>Long/flat strategy beside buy-and-hold ({t.strategy.periods} intervals)</h3>
      <div class="scroll">
        <table id="backtest-trading">
          <thead><tr><th /><th class="num">Return</th><th class="num">Sharpe</th><th class="num">Sortino</th><th class="num">Max drawdown</th><th class="num">Trades</th><th class="num">Exposure</th></tr></thead>
          <tbody>{perf("strategy", t.strategy, "strategy")}{perf("buy and hold", t.buy_and_hold, "buy_and_hold")}</tbody>
        </table>
      </div>
      <p><button id="download-report" onClick={download}>Download the HTML report</button> {err && <span class="error">{err}</span>}</p>
    </div>
  );
}
