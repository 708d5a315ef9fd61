import { useEffect, useRef, useState } from "preact/hooks";
import { api, get } from "../api.js";
import { subscribe, channelName } from "../live.js";
import { num, pct, share, time } from "../format.js";
import { IntervalOptions } from "../intervals.jsx";
import { follow as followJob } from "../jobs.js";
import { levelName } from "../forecast.js";

const SPLITS = ["train", "test", "live", "baseline_zero", "baseline_last"];

function Job({ job }) {
  return (
    <li data-job={job.job_id}>
      {job.kind} {job.asset} {job.interval}: <b class={"state " + job.state}>{job.state}</b>
      {job.error && <span class="error"> {job.error}</span>}
    </li>
  );
}

// ratio says how a score compares with its naive reference: below 1 the
// forecast does better.
function ratio(a, b) {
  if (!(b > 0) || !Number.isFinite(a)) return "—";
  return (a / b).toFixed(3) + "×";
}

// Evaluation is one series' forecast as it stands: who makes it (the
// champion, or no-change and why), and every horizon's live scores over
// the trailing day and week beside the naive references.
function Evaluation({ ev }) {
  const hs = (ev.forecast && ev.forecast.horizons) || [];
  return (
    <section class="card evaluation" data-series={`${ev.asset} ${ev.interval}`}>
      <h2>{ev.asset} {ev.interval}: {ev.promoted ? <>champion <b>{ev.model_id}</b></> : <>no-change forecast</>}</h2>
      {ev.promoted ? <p>{ev.decision}</p> : <p class="why">{ev.why}</p>}
      {hs.length === 0 ? <p><small>No forecast scored yet: each is scored when its target candle closes.</small></p> : (
        <div class="scroll">
          <table class="scores">
            <thead>
              <tr><th>Ahead</th><th>Window</th><th class="num">n</th><th>Interval coverage (nominal)</th><th class="num">MSE / no-change</th><th class="num" title="QLIKE can be negative: the difference is shown, below 0 the volatility forecast does better">QLIKE − naive last</th><th class="num">Brier / climatology</th><th /></tr>
            </thead>
            <tbody>
              {hs.flatMap((h) => ["day", "week"].map((w, i) => {
                const x = h[w] || {};
                return (
                  <tr key={h.horizon + w} data-horizon={h.horizon} class={h.failing ? "failing" : ""}>
                    <td>{i === 0 ? h.horizon + " bar" + (h.horizon > 1 ? "s" : "") : ""}</td>
                    <td>{w}</td>
                    <td class="num">{x.n ?? 0}</td>
                    <td>{(x.coverage || []).map((c) => <span class="cov">{share(c.coverage)} ({levelName(c.level)}) </span>)}</td>
                    <td class="num">{ratio(x.mse, x.mse_no_change)}</td>
                    <td class="num">{x.qlike_n ? num(x.qlike - x.qlike_naive_last, 3) : "—"}</td>
                    <td class="num">{ratio(x.brier, x.brier_climatology)}</td>
                    <td>{i === 0 && h.failing ? <b class="error" title={h.failing_reason}>failing: {h.failing_reason}</b> : ""}</td>
                  </tr>
                );
              }))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

// Models shows each model's figures beside the naive baselines, the
// champion and the promotion log; an admin can start jobs and follow them.
export function Models({ admin }) {
  const [models, setModels] = useState(null);
  const [err, setErr] = useState("");
  const [jobs, setJobs] = useState([]);
  const [asset, setAsset] = useState("BTC/USD");
  const [evals, setEvals] = useState(null);
  const [assets, setAssets] = useState([]);
  const [interval, setInterval_] = useState("1m");
  const alive = useRef(true);
  useEffect(() => () => { alive.current = false; }, []);
  async function load() {
    try {
      const [m, a] = await Promise.all([get("/prediction/models"), get("/crypto/assets")]);
      setModels(m.models);
      const syms = a.assets.map((x) => x.symbol);
      setAssets(syms);
      if (syms.length && !syms.includes(asset)) setAsset(syms[0]);
      const q = (s) => new URLSearchParams({ asset: s, interval }).toString();
      setEvals(await Promise.all(syms.map((s) => get(`/prediction/model-evaluation?${q(s)}`))));
    } catch (e) {
      setErr(e.message);
    }
  }
  useEffect(() => {
    load();
  }, [interval]);
  // The live scores move as forecasts meet their targets: a series'
  // evaluation is read again when its predictions come, at most every
  // 15 s, rather than on a timer.
  useEffect(() => {
    const offs = assets.map((sym) => {
      let at = Date.now();
      return subscribe(channelName("predictions", sym, interval), (p, meta) => {
        if (meta.snapshot || Date.now() - at < 15_000) return;
        at = Date.now();
        get(`/prediction/model-evaluation?${new URLSearchParams({ asset: sym, interval })}`)
          .then((ev) => alive.current && setEvals((list) => (list || []).map((x) => (x.asset === ev.asset ? ev : x))))
          .catch(() => {});
      });
    });
    return () => offs.forEach((off) => off());
  }, [assets.join(","), interval]);
  async function submit(kind) {
    setErr("");
    try {
      const j = await api("POST", `/prediction/${kind}`, { asset, interval });
      follow(j.job_id);
    } catch (e) {
      setErr(e.message);
    }
  }
  async function follow(id) {
    try {
      const st = await followJob(`/prediction/jobs/${id}`, (st) => setJobs((js) => [st, ...js.filter((j) => j.job_id !== id)].slice(0, 10)), () => alive.current);
      if (st) load();
    } catch (e) {
      setErr(e.message);
    }
  }
  const log = (models || []).filter((m) => m.decision).sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  return (
    <main>
      <header class="row">
        <h1>Models</h1>
        <label>Interval <select value={interval} onChange={(e) => setInterval_(e.target.value)} id="models-interval"><IntervalOptions current={interval} /></select></label>
      </header>
      {err && <p class="error">{err}</p>}
      <div id="evaluations">{!evals ? <p>Loading…</p> : evals.length === 0 ? <p>No asset is tracked yet.</p> : evals.map((ev) => <Evaluation key={ev.asset} ev={ev} />)}</div>
      {admin && (
        <section class="card" id="jobs">
          <label>Asset <select value={asset} onChange={(e) => setAsset(e.target.value)} id="job-asset">{assets.map((a) => <option value={a}>{a}</option>)}</select></label>{" "}
          <button onClick={() => submit("train")} id="job-train">Train</button>{" "}
          <button onClick={() => submit("score")} id="job-score">Score</button>{" "}
          <button onClick={() => submit("predict")} id="job-predict">Predict</button>
          <ul>{jobs.map((j) => <Job key={j.job_id} job={j} />)}</ul>
        </section>
      )}
      <h2>Trained models</h2>
      {!models ? <p>Loading…</p> : models.length === 0 ? <p id="no-models">No model is trained yet: predictions are the no-change forecast until one is promoted.</p> : (
        <div class="scroll">
          <table id="models">
            <thead>
              <tr><th>Model</th><th>Series</th><th>Split</th><th class="num">n</th><th class="num">MSE</th><th class="num">MAE</th><th class="num">R²</th><th class="num">Direction</th></tr>
            </thead>
            <tbody>
              {models.flatMap((m) => SPLITS.filter((k) => m.metrics && m.metrics[k]).map((k, i) => (
                <tr class={m.champion ? "champion" : ""} key={m.id + k}>
                  <td>{i === 0 ? <>{m.id}{m.champion && <b> ★ champion</b>}</> : ""}</td>
                  <td>{i === 0 ? `${m.symbol} ${m.interval}` : ""}</td>
                  <td>{k.replace("_", " ")}</td>
                  <td class="num">{m.metrics[k].n}</td>
                  <td class="num">{num(m.metrics[k].mse, 6)}</td>
                  <td class="num">{num(m.metrics[k].mae, 4)}</td>
                  <td class="num">{num(m.metrics[k].r2, 3)}</td>
                  <td class="num">{pct(m.metrics[k].direction_accuracy, 1)}</td>
                </tr>
              )))}
            </tbody>
          </table>
        </div>
      )}
      <h2>Promotion log</h2>
      {log.length ? <ul id="promotions">{log.map((m) => <li key={m.id}>{time(m.created_at)} · {m.id} ({m.symbol} {m.interval}): {m.decision}</li>)}</ul> : <p>Nothing decided yet.</p>}
    </main>
  );
}
