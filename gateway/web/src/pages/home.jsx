import { useEffect, useState } from "preact/hooks";
import { api, get, history, assetToken } from "../api.js";
import { subscribe, channelName } from "../live.js";
import { num, pct, time, seconds, unix } from "../format.js";
import { IntervalOptions, noteIntervals, useIntervals } from "../intervals.jsx";
import { horizons, isNoChange, levelName } from "../forecast.js";

export async function loadPrefs() {
  return get("/auth/users/me/preferences");
}

function Sparkline({ points }) {
  if (points.length < 2) return <svg class="spark" viewBox="0 0 120 32" />;
  let lo = Infinity, hi = -Infinity;
  for (const p of points) {
    lo = Math.min(lo, p);
    hi = Math.max(hi, p);
  }
  const span = hi - lo || 1;
  const d = points.map((p, i) => `${((i / (points.length - 1)) * 120).toFixed(1)},${(30 - ((p - lo) / span) * 28).toFixed(1)}`).join(" ");
  const up = points[points.length - 1] >= points[0];
  return (
    <svg class="spark" viewBox="0 0 120 32" preserveAspectRatio="none" aria-hidden="true">
      <polyline points={d} class={up ? "up" : "down"} />
    </svg>
  );
}

// Row is one asset, kept live by its ticks and predictions channels; the
// 24 h reference and the sparkline's past come once over REST.
function Row({ sym, interval }) {
  const [price, setPrice] = useState(null);
  const [ref24, setRef24] = useState(null);
  const [spark, setSpark] = useState({ times: [], closes: [] });
  const [pred, setPred] = useState(null);
  useEffect(() => {
    let dead = false;
    let loaded = false;
    // Loaded on the first tick (the snapshot of the running candle), which
    // dates the 24 h reference and the sparkline; an asset with no candle
    // yet asks nothing until it has one.
    const load = async (last) => {
      try {
        const day = await get(`/crypto/asset_history/${assetToken(sym)}?interval=1m&limit=1&from=${last - 86400}`);
        if (dead) return;
        if (day.candles.length) setRef24(day.candles[0].open);
        const past = await history(sym, interval, last - 59 * seconds(interval), 60);
        if (!dead)
          setSpark((s) => {
            const m = new Map(past.map((c) => [unix(c.time), c.close]));
            s.times.forEach((t, i) => m.set(t, s.closes[i]));
            const times = [...m.keys()].sort((a, b) => a - b).slice(-60);
            return { times, closes: times.map((t) => m.get(t)) };
          });
      } catch {
        // The row stays live from the stream without its past.
      }
    };
    const offT = subscribe(channelName("ticks", sym, interval), (t) => {
      const c = t.candle;
      if (!loaded) {
        loaded = true;
        load(unix(c.start));
      }
      setPrice(c.close);
      const at = unix(c.start);
      setSpark((s) => {
        const i = s.times.indexOf(at);
        if (i >= 0) {
          const closes = s.closes.slice();
          closes[i] = c.close;
          return { times: s.times, closes };
        }
        if (s.times.length && at < s.times[s.times.length - 1]) return s;
        return { times: [...s.times, at].slice(-60), closes: [...s.closes, c.close].slice(-60) };
      });
    }, { resume: false });
    const offP = subscribe(channelName("predictions", sym, interval), (p) => setPred(p));
    return () => {
      dead = true;
      offT();
      offP();
    };
  }, [sym, interval]);
  const change = price !== null && ref24 ? price / ref24 - 1 : null;
  return (
    <tr data-symbol={sym}>
      <td><a href={`#/asset/${assetToken(sym)}?iv=${interval}`}>{sym}</a></td>
      <td class="num price">{num(price)}</td>
      <td class={"num " + (change > 0 ? "up" : change < 0 ? "down" : "")}>{pct(change)}</td>
      <td><Sparkline points={spark.closes} /></td>
      <td class="num">
        {pred ? <Prediction p={pred} /> : <small>no prediction yet</small>}
      </td>
    </tr>
  );
}

// Prediction is a row's latest forecast at its primary horizon: the
// close, its widest interval with the level, and "no change" when no
// trained model made it.
function Prediction({ p }) {
  const h = horizons(p).find((x) => x.horizon === (p.horizon || 1));
  const band = h && h.ready ? h.bands[0] : null;
  return (
    <span class="prediction" data-model={h && isNoChange(h) ? "no-change" : "model"} title={`made on the ${time(p.start)} candle for ${time(p.target)}`}>
      {num(p.predicted_close)} {band ? <small>[{num(band.lower)} – {num(band.upper)}] {levelName(band.level)}</small> : <small>interval warming up</small>}
      {h && <small class="by"> · {isNoChange(h) ? "no change" : h.modelId}</small>}
    </span>
  );
}

export function Home() {
  const [assets, setAssets] = useState(null);
  const [prefs, setPrefs] = useState(null);
  const [edit, setEdit] = useState(false);
  const [err, setErr] = useState("");
  const runIvs = useIntervals();
  async function load() {
    try {
      const [a, p] = await Promise.all([get("/crypto/assets"), loadPrefs()]);
      setAssets(a.assets.map((x) => x.symbol));
      noteIntervals(a.intervals);
      setPrefs(p);
    } catch (e) {
      setErr(e.message);
    }
  }
  useEffect(() => {
    load();
  }, []);
  if (err) return <main><p class="error">{err}</p></main>;
  if (!assets || !prefs) return <main><p>Loading…</p></main>;
  const shown = prefs.watchlist.length ? prefs.watchlist.filter((s) => assets.includes(s)) : assets;
  // A default saved before its interval stopped being run falls back to
  // one that is, and says so, rather than opening refused channels.
  const interval = runIvs.length && !runIvs.includes(prefs.interval) ? runIvs[0] : prefs.interval;
  return (
    <main>
      <header class="row">
        <h1>Watchlist <small id="watchlist-interval">{interval}</small></h1>
        <button id="edit-watchlist" onClick={() => setEdit(!edit)}>{edit ? "Close" : "Edit watchlist"}</button>
      </header>
      {edit && <WatchlistEditor assets={assets} prefs={prefs} shown={shown} onSaved={(p) => { setPrefs(p); setEdit(false); }} />}
      {interval !== prefs.interval && <p class="notice" id="interval-fallback">Your default interval {prefs.interval} is not run here; showing {interval}.</p>}
      <div class="scroll">
        <table class="watchlist" id="watchlist" data-interval={interval}>
          <thead>
            <tr><th>Asset</th><th class="num">Price</th><th class="num">24 h</th><th>Last hour</th><th class="num">Next close predicted [interval]</th></tr>
          </thead>
          <tbody>
            {shown.map((s) => <Row key={s + interval} sym={s} interval={interval} />)}
          </tbody>
        </table>
      </div>
      {shown.length === 0 && <p>No asset is tracked yet.</p>}
    </main>
  );
}

function WatchlistEditor({ assets, prefs, shown, onSaved }) {
  const [list, setList] = useState(shown);
  const [iv, setIv] = useState(prefs.interval);
  const [err, setErr] = useState("");
  const move = (i, d) => {
    const l = list.slice();
    const j = i + d;
    if (j < 0 || j >= l.length) return;
    [l[i], l[j]] = [l[j], l[i]];
    setList(l);
  };
  async function save() {
    setErr("");
    try {
      onSaved(await api("PUT", "/auth/users/me/preferences", { watchlist: list, interval: iv }));
    } catch (e) {
      setErr(e.message);
    }
  }
  return (
    <section class="card" id="watchlist-editor">
      <label>Default interval{" "}
        <select value={iv} onChange={(e) => setIv(e.target.value)} id="pref-interval">
          <IntervalOptions current={iv} />
        </select>
      </label>
      <ol>
        {list.map((s, i) => (
          <li key={s}>
            {s} <button onClick={() => move(i, -1)} aria-label={`move ${s} up`} data-up={s}>↑</button>
            <button onClick={() => move(i, 1)} aria-label={`move ${s} down`} data-down={s}>↓</button>
            <button onClick={() => setList(list.filter((x) => x !== s))} data-remove={s}>Remove</button>
          </li>
        ))}
      </ol>
      {assets.filter((s) => !list.includes(s)).map((s) => (
        <button key={s} onClick={() => setList([...list, s])} data-add={s}>Add {s}</button>
      ))}
      {err && <p class="error">{err}</p>}
      <p><button id="save-watchlist" onClick={save}>Save</button></p>
    </section>
  );
}
