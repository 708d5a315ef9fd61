// REST calls with the session's token. A 401 ends the session: the page
// goes back to login with a message rather than showing broken panels.
import { session, expire, startSession, renewal } from "./session.js";

export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const headers = {};
  const s = session.value;
  if (s) headers.Authorization = "Bearer " + s.token;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: payload });
  } catch {
    throw new APIError(0, "offline", "The server cannot be reached.");
  }
  if (resp.status === 204) return null;
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const e = (data && data.error) || {};
    if (resp.status === 401 && s && path !== "/auth/login") {
      // A call refused while the page renews its own token (after a
      // password change) fails alone; it does not end the session.
      await renewal();
      if (session.value === s) expire("Your session expired or was revoked. Log in again.");
    }
    throw new APIError(resp.status, e.code || "error", e.message || resp.statusText);
  }
  return data;
}

export const get = (p) => api("GET", p);

// assetToken spells a symbol the way paths and channels take it: BTC-USD.
export const assetToken = (sym) => sym.replace("/", "-");

// pages reads a paged list (key in each answer) of path from `from` on,
// following the cursor, bounded by max items.
async function pages(path, key, params, max) {
  let out = [];
  let cursor = "";
  for (;;) {
    const q = new URLSearchParams({ ...params, limit: String(Math.min(1000, max)) });
    if (cursor) q.set("cursor", cursor);
    const r = await get(`${path}?${q}`);
    if (!session.value) break; // logged out meanwhile
    out = out.concat(r[key]);
    if (!r.next || out.length >= max || r[key].length === 0) break;
    cursor = r.next;
  }
  return out;
}

const range = (from, to) => {
  const q = {};
  if (from) q.from = String(Math.floor(from));
  if (to) q.to = String(Math.floor(to));
  return q;
};

// history reads every candle of a series from `from` on, bounded by max
// candles.
export const history = (sym, interval, from, max = 5000) =>
  pages(`/crypto/asset_history/${assetToken(sym)}`, "candles", { interval, ...range(from) }, max);

// predictionHistory reads the predictions made on the candles of [from,
// to), each with its primary horizon only.
export const predictionHistory = (sym, interval, from, to, max = 5000) =>
  pages("/prediction/history", "predictions", { asset: assetToken(sym), interval, ...range(from, to) }, max);

// login starts a session for the user (or renews the current one in
// place: the page and its socket stay).
export async function login(username, password) {
  const r = await api("POST", "/auth/login", { username, password });
  startSession(r.access_token, r.expires_in);
  try {
    const me = await api("GET", "/auth/users/me");
    session.value = { ...session.value, me, role: me.role };
  } catch {
    // The token's role claim stands in until /auth/users/me answers.
  }
}
