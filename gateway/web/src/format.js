const nf = new Map();
export function num(v, digits) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  const d = digits ?? (Math.abs(v) >= 1000 ? 2 : Math.abs(v) >= 1 ? 4 : 6);
  let f = nf.get(d);
  if (!f) nf.set(d, (f = new Intl.NumberFormat("en-US", { minimumFractionDigits: d, maximumFractionDigits: d })));
  return f.format(v);
}
export function pct(v, digits = 2) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  return (v > 0 ? "+" : "") + (v * 100).toFixed(digits) + "%";
}
// share is a proportion as a percentage, without the sign pct gives a
// change.
export function share(v, digits = 0) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  return (v * 100).toFixed(digits) + "%";
}
export function time(t) {
  if (!t) return "—";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}
export function clock(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
export const INTERVALS = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"];
const UNIT = { m: 60, h: 3600, d: 86400, w: 604800 };
export function seconds(iv) {
  const n = parseInt(iv, 10);
  return n * UNIT[iv.slice(-1)];
}
export const unix = (t) => Math.floor(new Date(t).getTime() / 1000);
// dur spells a Go duration as people write it: 15m0s as 15m, 1h0m0s as 1h.
export const dur = (s) => (s || "").replace(/([hm])0s$/, "$1").replace(/h0m$/, "h");
