// What the page draws and says of a prediction event. A prediction carries
// every horizon's forecast (forecasts[]) with its intervals; one stored
// before those existed has only its primary horizon at the top level, and
// is read as a single horizon.
import { unix } from "./format.js";

export const NO_CHANGE = "no-change";

// horizons lists a prediction's horizons, nearest first, each as
// {horizon, target (unix s), predicted, model, modelId, ready, sigma,
// bands: [{level, lower, upper, coverage, covered}] widest first}.
export function horizons(p) {
  if (!p) return [];
  const list = p.forecasts && p.forecasts.length ? p.forecasts : [{
    horizon: p.horizon || 1, target: p.target, predicted_close: p.predicted_close, model: p.model, model_id: p.model_id,
    ready: p.lower < p.upper, sigma: p.sigma || 0,
    intervals: p.lower < p.upper ? [{ level: 0, lower: p.lower, upper: p.upper, covered: 0 }] : [],
  }];
  return list
    .map((f) => ({
      horizon: f.horizon,
      target: unix(f.target),
      predicted: f.predicted_close,
      model: f.model || (f.model_id && f.model_id !== NO_CHANGE ? "linear" : NO_CHANGE),
      modelId: f.model_id || NO_CHANGE,
      ready: !!f.ready && (f.intervals || []).length > 0,
      sigma: f.sigma || 0,
      bands: (f.intervals || []).slice().sort((a, b) => b.level - a.level),
    }))
    .sort((a, b) => a.horizon - b.horizon);
}

// isNoChange reports whether a forecast is the no-change one: the next
// closes forecast equal to this one, not a model's guess.
export const isNoChange = (h) => h.model === NO_CHANGE || h.modelId === NO_CHANGE;

// modelLabel says who made a forecast, honestly: no-change is not a model
// that learned anything.
export function modelLabel(h) {
  return isNoChange(h) ? "no-change forecast (no trained model beats it yet)" : `model ${h.modelId}`;
}

// fan is the forecast drawn ahead of the last candle: lines from the
// close the prediction was made at through each horizon up to maxH
// (bars), for the point forecast and each interval level present. A
// horizon still warming up adds its point and no band.
export function fan(p, maxH) {
  const hs = horizons(p).filter((h) => h.horizon <= maxH);
  if (!hs.length) return null;
  const from = unix(p.start), close = p.close;
  const center = [{ time: from, value: close }];
  const levels = new Map(); // level -> {upper:[], lower:[]}
  for (const h of hs) {
    if (!(h.target > center[center.length - 1].time)) continue;
    center.push({ time: h.target, value: h.predicted });
    for (const b of h.bands) {
      let l = levels.get(b.level);
      if (!l) levels.set(b.level, (l = { level: b.level, upper: [{ time: from, value: close }], lower: [{ time: from, value: close }] }));
      l.upper.push({ time: h.target, value: b.upper });
      l.lower.push({ time: h.target, value: b.lower });
    }
  }
  if (center.length < 2) return null;
  return { center, bands: [...levels.values()].sort((a, b) => b.level - a.level) };
}

export const levelName = (l) => (l ? Math.round(l * 100) + "%" : "interval");
