import { useEffect, useState } from "preact/hooks";
import { api, get } from "../api.js";
import { num, pct, time } from "../format.js";

const SPLITS = ["train", "test", "live", "baseline_zero", "baseline_last"];

function Job({ job }) {
  return (
    <li data-job={job.job_id}>
      {job.kind} {job.asset} {job.interval}: <b class={"state " + job.state}>{job.state}</b>
      {job.error && <span class="error"> {job.error}</span>}
    </li>
  );
}

// Models shows each model's figures beside the naive baselines, the
// champion and the promotion log; an admin can start jobs and follow them.
export function Models({ admin }) {
  const [models, setModels] = useState(null);
  const [err, setErr] = useState("");
  const [jobs, setJobs] = useState([]);
  const [asset, setAsset] = useState("BTC/USD");
  async function load() {
    try {
      setModels((await get("/prediction/models")).models);
    } catch (e) {
      setErr(e.message);
    }
  }
  useEffect(() => {
    load();
  }, []);
  async function submit(kind) {
    setErr("");
    try {
      const j = await api("POST", `/prediction/${kind}`, { asset, interval: "1m" });
      follow(j.job_id);
    } catch (e) {
      setErr(e.message);
    }
  }
  // A job has no channel on the hub: its status is read until it ends,
  // backing off, and never after.
  async function follow(id) {
    let delay = 500;
    for (;;) {
      let st;
      try {
        st = await get(`/prediction/jobs/${id}`);
      } catch (e) {
        setErr(e.message);
        return;
      }
      setJobs((js) => [st, ...js.filter((j) => j.job_id !== id)].slice(0, 10));
      if (st.state === "succeeded" || st.state === "failed" || st.state === "done") {
        load();
        return;
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 1.5, 5000);
    }
  }
  const log = (models || []).filter((m) => m.decision).sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  return (
    <main>
      <h1>Models</h1>
      {err && <p class="error">{err}</p>}
      {admin && (
        <section class="card" id="jobs">
          <label>Asset <input value={asset} onInput={(e) => setAsset(e.target.value)} /></label>{" "}
          <button onClick={() => submit("train")} id="job-train">Train</button>{" "}
          <button onClick={() => submit("score")} id="job-score">Score</button>{" "}
          <button onClick={() => submit("predict")} id="job-predict">Predict</button>
          <ul>{jobs.map((j) => <Job key={j.job_id} job={j} />)}</ul>
        </section>
      )}
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
