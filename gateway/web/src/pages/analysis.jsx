import { useEffect, useRef, useState } from "preact/hooks";
import { createChart, LineSeries, AreaSeries } from "lightweight-charts";
import { get, history, assetToken } from "../api.js";
import { num, pct, unix } from "../format.js";

const DAYS = [1, 3, 7, 30];

// Analysis: over a chosen range, the distribution of log returns, the
// rolling volatility and the drawdown from the running peak.
export function Analysis({ sym }) {
  const [days, setDays] = useState(1);
  const [stats, setStats] = useState(null);
  const [err, setErr] = useState("");
  const volEl = useRef(null), ddEl = useRef(null);
  useEffect(() => {
    let dead = false;
    const opts = { autoSize: true, layout: { background: { color: "#11151c" }, textColor: "#c9d1d9", attributionLogo: false }, grid: { vertLines: { color: "#1d232c" }, horzLines: { color: "#1d232c" } }, timeScale: { timeVisible: true } };
    const vc = createChart(volEl.current, opts), dc = createChart(ddEl.current, opts);
    const vol = vc.addSeries(LineSeries, { color: "#d29922", lineWidth: 1 });
    const dd = dc.addSeries(AreaSeries, { lineColor: "#ef5350", topColor: "#ef535000", bottomColor: "#ef535060", lineWidth: 1 });
    (async () => {
      try {
        const latest = await get(`/crypto/asset_latest/${assetToken(sym)}?interval=1m`);
        const iv = days > 3 ? "1h" : "1m";
        let candles = await history(sym, iv, unix(latest.candle.time) - days * 86400, 5000);
        if (candles.length < 2 && iv !== "1m") candles = await history(sym, "1m", unix(latest.candle.time) - days * 86400, 20000);
        if (dead) return;
        const t = candles.map((c) => unix(c.time)), c = candles.map((x) => x.close);
        const r = [];
        for (let i = 1; i < c.length; i++) r.push(Math.log(c[i] / c[i - 1]));
        const w = 60, v = [];
        for (let i = w; i <= r.length; i++) {
          let m = 0, s = 0;
          for (let j = i - w; j < i; j++) m += r[j];
          m /= w;
          for (let j = i - w; j < i; j++) s += (r[j] - m) ** 2;
          v.push({ time: t[i], value: Math.sqrt(s / (w - 1)) });
        }
        let peak = -Infinity, maxDD = 0;
        const d = c.map((x, i) => {
          peak = Math.max(peak, x);
          const y = x / peak - 1;
          maxDD = Math.min(maxDD, y);
          return { time: t[i], value: y * 100 };
        });
        vol.setData(v);
        dd.setData(d);
        vc.timeScale().fitContent();
        dc.timeScale().fitContent();
        setStats({ n: r.length, hist: histogram(r, 30), mean: r.reduce((a, b) => a + b, 0) / (r.length || 1), sd: Math.sqrt(r.reduce((a, b) => a + b * b, 0) / (r.length || 1)), maxDD });
      } catch (e) {
        if (!dead) setErr(e.message);
      }
    })();
    return () => {
      dead = true;
      vc.remove();
      dc.remove();
    };
  }, [sym, days]);
  return (
    <main>
      <header class="row">
        <h1>Analysis · {sym}</h1>
        <span class="ranges">{DAYS.map((d) => <button class={d === days ? "active" : ""} onClick={() => setDays(d)}>{d}d</button>)}</span>
      </header>
      {err && <p class="error">{err}</p>}
      <section class="card">
        <h2>Distribution of returns</h2>
        {stats && <p>{stats.n} returns · mean {pct(stats.mean, 4)} · sd {pct(stats.sd, 4)} · max drawdown {pct(stats.maxDD)}</p>}
        {stats && <Histogram bins={stats.hist} />}
      </section>
      <section class="card"><h2>Rolling volatility (60 returns)</h2><div class="chart small" ref={volEl} /></section>
      <section class="card"><h2>Drawdown (%)</h2><div class="chart small" ref={ddEl} /></section>
    </main>
  );
}

function histogram(r, n) {
  if (!r.length) return [];
  let lo = Math.min(...r), hi = Math.max(...r);
  if (hi === lo) hi = lo + 1e-9;
  const bins = Array.from({ length: n }, (_, i) => ({ from: lo + ((hi - lo) * i) / n, count: 0 }));
  for (const x of r) bins[Math.min(n - 1, Math.floor(((x - lo) / (hi - lo)) * n))].count++;
  return bins;
}

function Histogram({ bins }) {
  const max = Math.max(1, ...bins.map((b) => b.count));
  return (
    <svg class="histogram" viewBox={`0 0 ${bins.length * 10} 100`} preserveAspectRatio="none" role="img" aria-label="histogram of returns">
      {bins.map((b, i) => <rect x={i * 10 + 1} width="8" y={100 - (b.count / max) * 100} height={(b.count / max) * 100}><title>{`from ${num(b.from * 100, 4)}%: ${b.count}`}</title></rect>)}
    </svg>
  );
}
