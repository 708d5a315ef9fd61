import { useEffect, useRef, useState } from "preact/hooks";
import { get, history, predictionHistory, assetToken } from "../api.js";
import { subscribe, channelName } from "../live.js";
import { CandleChart } from "../chart.js";
import { num, pct, share, time, INTERVALS, seconds, unix } from "../format.js";
import { IntervalOptions } from "../intervals.jsx";
import { go } from "../router.js";
import { horizons, fan, modelLabel, isNoChange, levelName } from "../forecast.js";

const RANGES = [["1h", 3600], ["6h", 6 * 3600], ["1d", 86400], ["3d", 3 * 86400], ["7d", 7 * 86400], ["30d", 30 * 86400]];
const MAX_BARS = 3000;

const bar = (c) => ({ time: unix(c.time ?? c.start), open: c.open, high: c.high, low: c.low, close: c.close, volume: c.volume });
// predPoint is a prediction's primary horizon, as past predictions are
// scored against the actual closes; level is its widest interval's. The
// channel sends the event (start), the history route its view (time).
function predPoint(p) {
  const h = horizons(p).find((x) => x.horizon === (p.horizon || 1));
  const level = h && h.bands.length ? h.bands[0].level : 0;
  return { start: unix(p.start ?? p.time), target: unix(p.target), close: p.close, predicted_close: p.predicted_close, lower: p.lower, upper: p.upper, level };
}
const MAX_PREDS = MAX_BARS + 100;
// The widest range GET /prediction/history serves (gateway.MaxPredictionSpan).
const MAX_PRED_SPAN = 31 * 86400;

function ingestAt(c) {
  const h = (c.trace || []).find((x) => x.stage === "ingest");
  return h ? Date.parse(h.at) : NaN;
}

// Asset is the live chart of one series. On load it subscribes to the
// closed candles first and holds their events, then reads the range over
// REST and merges by candle time: whatever closed while the history was in
// flight arrives on the channel, and a candle in both is drawn once. After
// a reconnect the channel resumes from its last seq.
export function Asset({ sym, query }) {
  const iv = INTERVALS.includes(query.get("iv")) ? query.get("iv") : "1m";
  const rangeName = query.get("range") || "6h";
  const range = (RANGES.find((r) => r[0] === rangeName) || RANGES[1])[1];
  const el = useRef(null);
  const [state, setState] = useState({ loading: true, err: "", refused: "" });
  const [last, setLast] = useState(null);
  const [pred, setPred] = useState(null); // the latest prediction event, as sent
  const [pastErr, setPastErr] = useState(""); // why past predictions could not be read
  // The fan reaches the horizon chosen (?fh=, in bars), else the farthest
  // that leaves the candles at least three quarters of the chart.
  const hs = horizons(pred);
  const fhAsked = parseInt(query.get("fh") || "", 10);
  const auto = hs.filter((h) => h.horizon <= range / seconds(iv) / 4).at(-1) || hs[0];
  const fh = hs.some((h) => h.horizon === fhAsked) ? fhAsked : auto ? auto.horizon : 1;
  const fhRef = useRef(fh);
  fhRef.current = fh;
  const [score, setScore] = useState({ n: 0, mae: null, banded: 0, covered: null, level: 0 });

  useEffect(() => {
    const chart = new CandleChart(el.current);
    window.cryptostream.chart = chart;
    const marks = (window.cryptostream.marks = { navigation: performance.now(), firstCandle: null, drawn: [] });
    let dead = false;
    let held = []; // closed candles that arrived before the history
    let ready = false;
    const preds = new Map(); // target -> prediction
    let alerts = [];

    function rescore() {
      let n = 0, abs = 0, banded = 0, inside = 0, level = 0;
      const list = [...preds.values()].sort((a, b) => a.target - b.target);
      const scored = [];
      for (const p of list) {
        const actual = chart.closed.has(p.target) ? chart.bars.get(p.target).close : null;
        if (actual === null) continue;
        n++;
        scored.push([p.target, p.predicted_close, actual]);
        abs += Math.abs(actual - p.predicted_close);
        // A prediction made while the intervals warmed up has none to be
        // inside of.
        if (!(p.lower < p.upper)) continue;
        banded++;
        level = p.level || level;
        if (actual >= p.lower && actual <= p.upper) inside++;
      }
      setScore({ n, mae: n ? abs / n : null, banded, covered: banded ? inside / banded : null, level, since: scored.length ? scored[0][0] : null });
      window.cryptostream.realised = { n, mae: n ? abs / n : null, scored };
      chart.setPast(list.filter((p) => p.target <= (chart.lastClosed() || { time: 0 }).time + seconds(iv)));
    }

    function closedCandle(c, live) {
      const b = bar(c);
      chart.upsert(b, true);
      setLast(b);
      if (live) {
        const published = ingestAt(c);
        requestAnimationFrame(() => {
          marks.drawn.push({ time: b.time, publishedAt: published, drawnAt: Date.now() });
          if (marks.drawn.length > 1000) marks.drawn.shift();
        });
      }
      rescore();
    }

    // The channel's first event (the latest closed candle, as a snapshot)
    // dates the range; a series with no candle yet waits for its first.
    let started = false;
    const offC = subscribe(channelName("candles", sym, iv), (c, meta) => {
      if (dead) return;
      if (ready) return closedCandle(c, !meta.snapshot);
      held.push([c, meta]);
      if (!started) {
        started = true;
        reload(unix(c.start));
      }
    }, {
      onGap: () => { if (!dead) reload((chart.lastClosed() || { time: 0 }).time); },
      // An asset or interval the system does not run: say so, rather than
      // wait for a first candle that never comes.
      onRefused: (e) => { if (!dead) setState({ loading: false, err: "", refused: e.code === "not_tracked" ? e.message : "" , failed: e.code !== "not_tracked" ? e.message : "" }); },
    });
    const offT = subscribe(channelName("ticks", sym, iv), (t) => {
      if (dead || !ready) return;
      const b = bar(t.candle);
      chart.upsert(b, false);
      setLast(b);
    }, { resume: false });
    const addPred = (p) => {
      const q = predPoint(p);
      preds.set(q.target, q);
      if (preds.size > MAX_PREDS) preds.delete(preds.keys().next().value);
    };
    const offP = subscribe(channelName("predictions", sym, iv), (p) => {
      if (dead) return;
      addPred(p);
      setPred(p);
      chart.setForecast(fan(p, fhRef.current));
      if (ready) rescore();
    });
    const offA = subscribe(channelName("alerts", sym), (a) => {
      if (dead) return;
      alerts.push({ time: Math.floor(unix(a.at) / seconds(iv)) * seconds(iv), kind: a.kind });
      chart.setMarkers(alerts.filter((m) => chart.bars.has(m.time)));
    });

    async function reload(lastT) {
      ready = false;
      try {
        let candles = [];
        if (lastT) {
          const from = Math.max(lastT - range, lastT - (MAX_BARS - 1) * seconds(iv));
          // The candles, the alerts fired and the predictions whose targets
          // are in the range, read at once: the predictions made before
          // the page opened are drawn against the closes and scored from
          // the start, not only from when the page opened.
          let past, fired, pastErr = "";
          [candles, past, fired] = await Promise.all([
            history(sym, iv, from, MAX_BARS),
            predictionHistory(sym, iv, Math.max(from - seconds(iv), lastT + seconds(iv) - MAX_PRED_SPAN), lastT + seconds(iv), MAX_PREDS).catch((e) => { pastErr = e.message; return []; }),
            get(`/crypto/alert_history/${assetToken(sym)}?from=${from}`).catch(() => ({ alerts: [] })),
          ]);
          if (dead) return;
          // Oldest first, and a live one (already in preds) is the same
          // prediction: the history goes in before it.
          const live = [...preds.entries()];
          preds.clear();
          for (const p of past) addPred(p);
          for (const [t, q] of live) preds.set(t, q);
          alerts = fired.alerts.map((a) => ({ time: Math.floor(unix(a.at) / seconds(iv)) * seconds(iv), kind: a.kind }));
          setPastErr(pastErr);
        }
        if (dead) return;
        chart.setHistory(candles.map(bar));
        chart.setMarkers(alerts.filter((a) => chart.bars.has(a.time)));
        ready = true;
        for (const [c, meta] of held) closedCandle(c, !meta.snapshot);
        held = [];
        if (candles.length) setLast(bar(candles[candles.length - 1]));
        requestAnimationFrame(() => {
          if (marks.firstCandle === null && chart.times.length) marks.firstCandle = performance.now();
        });
        setState({ loading: false, err: "", refused: "" });
        rescore();
      } catch (e) {
        if (!dead) setState({ loading: false, err: e.message });
      }
    }
    return () => {
      dead = true;
      offC();
      offT();
      offP();
      offA();
      chart.destroy();
      if (window.cryptostream.chart === chart) window.cryptostream.chart = null;
    };
  }, [sym, iv, range]);

  useEffect(() => {
    const c = window.cryptostream.chart;
    if (c && pred) c.setForecast(fan(pred, fh));
  }, [fh, pred]);

  const setQ = (k, v) => {
    const q = new URLSearchParams(query);
    q.set(k, v);
    go(`#/asset/${assetToken(sym)}?${q}`);
  };
  return (
    <main class="asset">
      <header class="row">
        <h1>{sym}</h1>
        <span class="big num" id="last-price">{last ? num(last.close) : "—"}</span>
        <label>Interval{" "}
          <select id="interval" value={iv} onChange={(e) => setQ("iv", e.target.value)}>
            <IntervalOptions current={iv} />
          </select>
        </label>
        <span class="ranges" role="group" aria-label="range">
          {RANGES.map(([name]) => (
            <button class={name === rangeName ? "active" : ""} onClick={() => setQ("range", name)} id={"range-" + name}>{name}</button>
          ))}
        </span>
        <a href={`#/analysis/${assetToken(sym)}`}>Analysis</a>
      </header>
      {state.err && <p class="error">{state.err}</p>}
      {state.failed && <p class="error" id="channel-failed">The live {iv} candles of {sym} cannot be followed now: {state.failed}. The page retries when it reconnects.</p>}
      {state.refused && (
        <p class="notice" id="not-tracked">
          No chart: {state.refused}. {/interval/.test(state.refused) ? "Choose one of the intervals in the menu." : "An admin can add it on the Admin page."}
        </p>
      )}
      {state.loading && !state.refused && <p id="waiting"><small>Waiting for the first {iv} candle of {sym}…</small></p>}
      <div class="chart" ref={el} id="chart" hidden={!!state.refused} data-loading={state.loading ? "1" : "0"} />
      <section class="stats">
        <div class="wide"><h3>Forecast</h3>
          {pred ? <Forecast p={pred} hs={hs} fh={fh} iv={iv} onPick={(h) => setQ("fh", String(h))} /> : <p><small>no prediction yet</small></p>}
        </div>
        <div><h3>Realised error</h3>
          <p id="realised" data-n={score.n}>{score.n ? <>MAE {num(score.mae)} over {score.n} since {time(score.since)}{score.banded ? <> · {share(score.covered)} inside the {levelName(score.level)} interval (of {score.banded})</> : ""}</> : <small>none scored yet</small>}</p>
          {pastErr && <p class="error" id="past-error"><small>Predictions made before the page opened cannot be read ({pastErr}): scored from now on only.</small></p>}
        </div>
        <div><h3>Last candle</h3>
          <p>{last ? <>{time(last.time)}<br /><small>O {num(last.open)} H {num(last.high)} L {num(last.low)} V {num(last.volume, 4)}</small></> : "—"}</p>
        </div>
      </section>
    </main>
  );
}

// Forecast is the latest prediction, horizon by horizon: the point
// forecast and who made it, each interval with its nominal level and the
// coverage measured so far. A horizon's button sets how far the fan on the
// chart reaches.
function Forecast({ p, hs, fh, iv, onPick }) {
  const levels = [...new Set(hs.flatMap((h) => h.bands.map((b) => b.level)))].sort((a, b) => a - b);
  const allNoChange = hs.every(isNoChange);
  return (
    <div id="forecast" data-model={allNoChange ? "no-change" : "model"}>
      <p><small>made at the close of the {time(p.start)} candle ({num(p.close)}) · {allNoChange ? modelLabel(hs[0]) : "point forecasts per horizon below"}</small></p>
      <div class="scroll">
        <table class="forecast">
          <thead>
            <tr><th>Ahead</th><th>At</th><th class="num">Close</th>{levels.map((l) => <th class="num">{levelName(l)} interval</th>)}<th class="num">σ</th>{!allNoChange && <th>By</th>}</tr>
          </thead>
          <tbody>
            {hs.map((h) => (
              <tr key={h.horizon} data-horizon={h.horizon} class={h.horizon <= fh ? "drawn" : ""}>
                <td><button class={"link" + (h.horizon === fh ? " active" : "")} onClick={() => onPick(h.horizon)} title="draw the fan up to this horizon">{ahead(h.horizon, iv)}</button></td>
                <td>{time(h.target)}</td>
                <td class="num">{num(h.predicted)} <small>{pct(h.predicted / p.close - 1)}</small></td>
                {levels.map((l) => {
                  const b = h.bands.find((x) => x.level === l);
                  if (!h.ready || !b) return <td class="num"><small>warming up</small></td>;
                  return (
                    <td class="num">{num(b.lower)} – {num(b.upper)}<br />
                      <small>{b.coverage !== undefined && b.coverage !== null ? `covered ${share(b.coverage)} of ${b.covered}` : "no outcome yet"}</small>
                    </td>
                  );
                })}
                <td class="num">{h.ready ? share(h.sigma, 3) : "—"}</td>
                {!allNoChange && <td>{modelLabel(h)}</td>}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

function ahead(bars, iv) {
  const s = bars * seconds(iv);
  if (s % 86400 === 0) return s / 86400 + "d";
  if (s % 3600 === 0) return s / 3600 + "h";
  return s / 60 + "m";
}
