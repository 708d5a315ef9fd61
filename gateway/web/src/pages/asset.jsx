import { useEffect, useRef, useState } from "preact/hooks";
import { get, history, assetToken } from "../api.js";
import { subscribe, channelName } from "../live.js";
import { CandleChart } from "../chart.js";
import { num, pct, time, INTERVALS, seconds, unix } from "../format.js";
import { go } from "../router.js";

const RANGES = [["1h", 3600], ["6h", 6 * 3600], ["1d", 86400], ["3d", 3 * 86400], ["7d", 7 * 86400], ["30d", 30 * 86400]];
const MAX_BARS = 3000;

const bar = (c) => ({ time: unix(c.time ?? c.start), open: c.open, high: c.high, low: c.low, close: c.close, volume: c.volume });
const predPoint = (p) => ({ start: unix(p.start), target: unix(p.target), close: p.close, predicted_close: p.predicted_close, lower: p.lower, upper: p.upper, model_id: p.model_id });

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
  const [state, setState] = useState({ loading: true, err: "" });
  const [last, setLast] = useState(null);
  const [pred, setPred] = useState(null);
  const [score, setScore] = useState({ n: 0, mae: null, covered: null });

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
      let n = 0, abs = 0, inside = 0;
      const list = [...preds.values()].sort((a, b) => a.target - b.target);
      for (const p of list) {
        const actual = chart.closed.has(p.target) ? chart.bars.get(p.target).close : null;
        if (actual === null) continue;
        n++;
        abs += Math.abs(actual - p.predicted_close);
        if (actual >= p.lower && actual <= p.upper) inside++;
      }
      setScore({ n, mae: n ? abs / n : null, covered: n ? inside / n : null });
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
    }, { onGap: () => { if (!dead) reload((chart.lastClosed() || { time: 0 }).time); } });
    const offT = subscribe(channelName("ticks", sym, iv), (t) => {
      if (dead || !ready) return;
      const b = bar(t.candle);
      chart.upsert(b, false);
      setLast(b);
    }, { resume: false });
    const offP = subscribe(channelName("predictions", sym, iv), (p) => {
      if (dead) return;
      const q = predPoint(p);
      preds.set(q.target, q);
      if (preds.size > 2000) preds.delete(preds.keys().next().value);
      setPred(q);
      chart.setForecast(q);
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
          candles = await history(sym, iv, from, MAX_BARS);
          const fired = await get(`/crypto/alert_history/${assetToken(sym)}?from=${from}`).catch(() => ({ alerts: [] }));
          alerts = fired.alerts.map((a) => ({ time: Math.floor(unix(a.at) / seconds(iv)) * seconds(iv), kind: a.kind }));
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
        setState({ loading: false, err: "" });
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

  const setQ = (k, v) => {
    const q = new URLSearchParams(query);
    q.set(k, v);
    go(`#/asset/${assetToken(sym)}?${q}`);
  };
  const move = pred && pred.close ? pred.predicted_close / pred.close - 1 : null;
  return (
    <main class="asset">
      <header class="row">
        <h1>{sym}</h1>
        <span class="big num" id="last-price">{last ? num(last.close) : "—"}</span>
        <label>Interval{" "}
          <select id="interval" value={iv} onChange={(e) => setQ("iv", e.target.value)}>
            {INTERVALS.map((i) => <option value={i}>{i}</option>)}
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
      {state.loading && <p id="waiting"><small>Waiting for the first {iv} candle of {sym}…</small></p>}
      <div class="chart" ref={el} id="chart" data-loading={state.loading ? "1" : "0"} />
      <section class="stats">
        <div><h3>Next close</h3>
          {pred ? (
            <p id="forecast">
              <b>{num(pred.predicted_close)}</b> ({pct(move)}) at {time(pred.target)}<br />
              <small>interval {num(pred.lower)} – {num(pred.upper)} · {pred.model_id ? "model " + pred.model_id : "no-change forecast"}</small>
            </p>
          ) : <p><small>no prediction yet</small></p>}
        </div>
        <div><h3>Realised error</h3>
          <p id="realised">{score.n ? <>MAE {num(score.mae)} over {score.n} · {pct(score.covered, 0)} inside the interval</> : <small>none scored yet</small>}</p>
        </div>
        <div><h3>Last candle</h3>
          <p>{last ? <>{time(last.time)}<br /><small>O {num(last.open)} H {num(last.high)} L {num(last.low)} V {num(last.volume, 4)}</small></> : "—"}</p>
        </div>
      </section>
    </main>
  );
}
