// The one websocket to /ws for the whole page. Channels are reference
// counted; each remembers the last stream sequence it delivered, so that a
// reconnect resumes it with `since` (the hub then sends what was missed and
// nothing twice). Reconnects back off exponentially with full jitter.
import { session, expire, renewal } from "./session.js";
import { signal } from "./signal.js";

export const status = signal({ state: "idle", retryAt: 0 }); // idle | connecting | open | offline

const channels = new Map(); // name -> {handlers:Set, seq:number|null, resume:bool, subscribed:bool}
let ws = null;
let attempt = 0;
let retryTimer = 0;
let wantOpen = false;
let authRetried = false;

// Channels the hub names canonically: 1m is dropped for ticks and
// predictions and always spelt for candles.
export function channelName(kind, sym, interval) {
  const tok = sym.replace("/", "-");
  if (kind === "alerts") return sym ? "alerts:" + tok : "alerts";
  if (kind === "candles") return `candles:${tok}:${interval || "1m"}`;
  return interval && interval !== "1m" ? `${kind}:${tok}:${interval}` : `${kind}:${tok}`;
}

// subscribe calls onEvent(data, {seq, snapshot}) for every event of the
// channel, onGap({from,to}) when a resume could not be served in full, and
// onRefused({code, message}) when the hub refuses the channel (not_tracked:
// an asset or interval the system does not run; unavailable).
// resume: whether a reconnect asks for what was missed (closed candles,
// predictions, alerts) or only the latest value (ticks).
export function subscribe(name, onEvent, { resume = true, onGap, onRefused } = {}) {
  let ch = channels.get(name);
  if (!ch) {
    ch = { handlers: new Set(), seq: null, resume, subscribed: false };
    channels.set(name, ch);
  }
  const h = { onEvent, onGap, onRefused };
  ch.handlers.add(h);
  if (ws && ws.readyState === WebSocket.OPEN && !ch.subscribed) send(name, ch);
  ensureOpen();
  return () => {
    ch.handlers.delete(h);
    if (ch.handlers.size === 0) {
      channels.delete(name);
      if (ws && ws.readyState === WebSocket.OPEN && ch.subscribed) ws.send(JSON.stringify({ op: "unsubscribe", channel: name }));
    }
  };
}

function send(name, ch) {
  const msg = { op: "subscribe", channel: name };
  if (ch.resume && ch.seq !== null) msg.since = ch.seq;
  ch.subscribed = true;
  ws.send(JSON.stringify(msg));
}

function ensureOpen() {
  wantOpen = true;
  if (ws || retryTimer || !session.value) return;
  connect();
}

function connect() {
  retryTimer = 0;
  const s = session.value;
  if (!s || !wantOpen) return;
  status.value = { state: "connecting", retryAt: 0 };
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  let sock;
  try {
    sock = new WebSocket(url, ["bearer", s.token]);
  } catch {
    scheduleRetry();
    return;
  }
  ws = sock;
  const token = s.token;
  sock.onopen = () => {
    attempt = 0;
    authRetried = false;
    status.value = { state: "open", retryAt: 0 };
    for (const [name, ch] of channels) {
      ch.subscribed = false;
      send(name, ch);
    }
  };
  sock.onmessage = (e) => onMessage(e.data);
  sock.onclose = (e) => {
    if (ws !== sock) return;
    ws = null;
    for (const ch of channels.values()) ch.subscribed = false;
    if (e.code === 4001 || e.code === 4003) {
      refused(e, token);
      return;
    }
    scheduleRetry();
  };
}

// refused handles the server closing the socket for its token. A token
// revoked by the page's own doing (its password changed) is replaced by
// the re-login under way, and the socket comes back with the new one;
// otherwise the session is over and the page says why.
async function refused(e, token) {
  status.value = { state: "idle", retryAt: 0 };
  await renewal();
  // The re-login's own reauth may have opened the next socket already.
  if (ws) return;
  const s = session.value;
  if (s && s.token !== token && !authRetried && wantOpen) {
    authRetried = true;
    connect();
    return;
  }
  expire(e.reason === "token revoked"
    ? "Your access changed (password, role or account): log in again."
    : "Your session expired. Log in again.");
}

function scheduleRetry() {
  if (!wantOpen || !session.value) {
    status.value = { state: "idle", retryAt: 0 };
    return;
  }
  // Full jitter: a restarted server is not hit by every page at once.
  const cap = Math.min(30_000, 500 * 2 ** attempt);
  const delay = Math.round(cap / 2 + Math.random() * (cap / 2));
  attempt = Math.min(attempt + 1, 10);
  status.value = { state: "offline", retryAt: Date.now() + delay };
  retryTimer = setTimeout(connect, delay);
}

function onMessage(raw) {
  let m;
  try {
    m = JSON.parse(raw);
  } catch {
    return;
  }
  const ch = m.channel && channels.get(m.channel);
  if (m.type === "event" && ch) {
    // The hub sends a channel's events in order without duplicates; this
    // guard only matters for a resubscription racing an old frame.
    if (ch.seq !== null && m.seq <= ch.seq && !m.snapshot) return;
    ch.seq = Math.max(ch.seq || 0, m.seq);
    for (const h of ch.handlers) h.onEvent(m.data, { seq: m.seq, snapshot: m.snapshot });
  } else if (m.type === "gap" && ch) {
    ch.seq = Math.max(ch.seq || 0, m.to);
    for (const h of ch.handlers) if (h.onGap) h.onGap({ from: m.from, to: m.to });
  } else if (m.type === "error" && ch && m.code !== "subscribe_refused") {
    // Not subscribed on the server: the next connection asks again (an
    // admin may have added the asset meanwhile).
    ch.subscribed = false;
    for (const h of ch.handlers) if (h.onRefused) h.onRefused({ code: m.code, message: m.message });
  } else if (m.type === "error" && m.code !== "subscribe_refused") {
    console.warn("websocket:", m.code, m.message);
  }
}

// reauth extends the open socket with a fresh token after a re-login.
export function reauth() {
  const s = session.value;
  if (ws && ws.readyState === WebSocket.OPEN && s) {
    ws.send(JSON.stringify({ op: "auth", token: s.token }));
  } else ensureOpen();
}

// close ends the socket and forgets every channel (logout).
export function closeAll() {
  wantOpen = false;
  clearTimeout(retryTimer);
  retryTimer = 0;
  channels.clear();
  if (ws) {
    const s = ws;
    ws = null;
    s.close(1000, "logout");
  }
  attempt = 0;
  status.value = { state: "idle", retryAt: 0 };
}

// lastSeq is the newest sequence a channel delivered (tests and the
// benchmark read it through window.cryptostream).
export const lastSeq = (name) => (channels.get(name) || {}).seq ?? null;
