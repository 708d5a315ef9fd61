// The session: the access token, held in this page's memory only.
//
// Why memory and not a cookie: the API and the websocket take the token
// explicitly (Authorization header, websocket subprotocol), never from an
// ambient cookie, which is what lets the hub accept any Origin without a
// CSRF hole. A cookie would make every request carry the credential on its
// own and bring CSRF defences and an Origin check back. The cost is that a
// reload asks for the password again; the strict CSP (no inline or foreign
// script) is what guards the token against script in the page.
import { signal } from "./signal.js";

export const session = signal(null); // {token, username, role, exp (ms), ttl (ms), me}
export const expiredMessage = signal("");

let timer = 0;

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

export function startSession(token, expiresIn) {
  const c = claims(token);
  const now = Date.now();
  let exp = now + expiresIn * 1000;
  // The server's clock decides; the page's may be off, so take the earlier.
  if (typeof c.exp === "number" && c.exp * 1000 < exp && c.exp * 1000 > now) exp = c.exp * 1000;
  const prev = session.value;
  session.value = { token, username: c.sub || "", role: c.role || "user", exp, ttl: exp - now, me: prev && prev.username === c.sub ? prev.me : null };
  expiredMessage.value = "";
  clearTimeout(timer);
  timer = setTimeout(() => expire("Your session expired. Log in again."), Math.max(0, exp - now));
}

export function expire(message) {
  clearTimeout(timer);
  if (!session.value) return;
  session.value = null;
  expiredMessage.value = message || "";
}

export function logout() {
  clearTimeout(timer);
  session.value = null;
  expiredMessage.value = "";
}

// warnAt is how long before expiry the "session ends in" warning shows.
export function warnAt(s) {
  return Math.min(5 * 60_000, s.ttl / 2);
}

let pending = null;

// renewing marks p (a re-login that replaces the token, e.g. after the
// user's own password change revoked it) as under way: a refusal of the
// old token that lands meanwhile waits for it rather than ending the
// session.
export function renewing(p) {
  pending = p;
  p.finally(() => { if (pending === p) pending = null; }).catch(() => {});
  return p;
}

// renewal resolves once no re-login is under way.
export async function renewal() {
  while (pending) await pending.catch(() => {});
}
