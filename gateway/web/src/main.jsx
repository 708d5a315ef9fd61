import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./style.css";
import { api, APIError, login } from "./api.js";
import { session, expiredMessage, logout, warnAt } from "./session.js";
import { useSignal } from "./signal.js";
import { route, go } from "./router.js";
import { status, subscribe, reauth, closeAll, lastSeq } from "./live.js";
import { toasts, toast, dismiss } from "./toast.js";
import { clock } from "./format.js";
import { Home } from "./pages/home.jsx";
import { Asset } from "./pages/asset.jsx";
import { Models } from "./pages/models.jsx";
import { Admin } from "./pages/admin.jsx";
import { Account } from "./pages/account.jsx";
import { Alerts } from "./pages/alerts.jsx";
import { Analysis } from "./pages/analysis.jsx";
import { Backtests } from "./pages/backtests.jsx";

// The automation surface the browser tests and the benchmark read: plain
// numbers about what the page drew, never a credential.
window.cryptostream = { chart: null, lastSeq, marks: {} };

function LoginPage({ signup }) {
  const r = useSignal(route);
  const msg = useSignal(expiredMessage);
  const [err, setErr] = useState("");
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    const f = new FormData(e.target);
    setErr("");
    setBusy(true);
    try {
      if (signup) {
        await api("POST", "/auth/signup", { username: f.get("username"), password: f.get("password"), email: f.get("email") || "", full_name: f.get("full_name") || "" });
      }
      // The App sends a logged-in page on to ?next=.
      await login(f.get("username"), f.get("password"));
    } catch (ex) {
      setErr(ex instanceof APIError ? ex.message : String(ex));
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="auth">
      <h1>cryptostream</h1>
      {msg && <p class="notice" id="session-message">{msg}</p>}
      <form onSubmit={submit} id={signup ? "signup-form" : "login-form"}>
        <h2>{signup ? "Create an account" : "Log in"}</h2>
        <label>Username <input name="username" autocomplete="username" required minLength={3} maxLength={32} /></label>
        <label>Password <input name="password" type="password" autocomplete={signup ? "new-password" : "current-password"} required minLength={8} maxLength={72} /></label>
        {signup && <label>Email <input name="email" type="email" autocomplete="email" /></label>}
        {signup && <label>Full name <input name="full_name" autocomplete="name" maxLength={128} /></label>}
        {err && <p class="error" role="alert">{err}</p>}
        <button type="submit" disabled={busy}>{signup ? "Sign up" : "Log in"}</button>
        <p>{signup ? <a href="#/login">I have an account</a> : <a href="#/signup">Create an account</a>}</p>
      </form>
    </main>
  );
}

// SessionWarning counts down the last minutes of the token and offers a
// re-login in place: the page, its chart and its socket stay as they are.
function SessionWarning() {
  const s = useSignal(session);
  const [now, setNow] = useState(Date.now());
  const [open, setOpen] = useState(false);
  const [err, setErr] = useState("");
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  if (!s) return null;
  const left = s.exp - now;
  if (left > warnAt(s) && !open) return null;
  async function relogin(e) {
    e.preventDefault();
    setErr("");
    try {
      await login(s.username, new FormData(e.target).get("password"));
      reauth();
      setOpen(false);
    } catch (ex) {
      setErr(ex.message);
    }
  }
  return (
    <div class="session-warning" id="session-warning" role="status">
      {!open && (
        <span>
          Session ends in <b id="session-left">{clock(left)}</b>. <button onClick={() => setOpen(true)}>Stay logged in</button>
        </span>
      )}
      {open && (
        <form onSubmit={relogin} id="relogin-form">
          Password for {s.username}: <input name="password" type="password" autocomplete="current-password" required />
          <button type="submit">Log in again</button>
          {err && <span class="error">{err}</span>}
        </form>
      )}
    </div>
  );
}

function Offline() {
  const st = useSignal(status);
  const [, tick] = useState(0);
  useEffect(() => {
    if (st.state !== "offline") return;
    const t = setInterval(() => tick((n) => n + 1), 500);
    return () => clearInterval(t);
  }, [st.state]);
  if (st.state !== "offline" && st.state !== "connecting") return null;
  return (
    <div class="offline" id="offline" role="status">
      {st.state === "offline" ? `Offline: reconnecting in ${clock(st.retryAt - Date.now())}` : "Connecting…"}
    </div>
  );
}

function Toasts() {
  const list = useSignal(toasts);
  return (
    <div class="toasts" aria-live="polite">
      {list.map((t) => (
        <div class={"toast " + t.kind} key={t.id} data-rule={t.rule || undefined} onClick={() => dismiss(t.id)}>
          {t.text}
        </div>
      ))}
    </div>
  );
}

// AlertFeed puts every alert the user receives in a toast, wherever they
// are in the page; the hub sends a user their own and the system alerts.
function useAlertToasts(s) {
  useEffect(() => {
    if (!s) return;
    return subscribe("alerts", (a, meta) => {
      if (!meta.snapshot) toast(a.message || `${a.symbol} ${a.kind}`, "alert", { rule: a.rule_id });
    });
  }, [s && s.username]);
}

function Nav({ s, path }) {
  const links = [["#/", "Home"], ["#/alerts", "Alerts"], ["#/models", "Models"], ["#/analysis/BTC-USD", "Analysis"], ["#/account", "Account"]];
  if (s.role === "admin") links.push(["#/backtests", "Backtests"], ["#/admin", "Admin"]);
  return (
    <nav>
      <a class="brand" href="#/">cryptostream</a>
      {links.map(([h, label]) => (
        <a href={h} class={path === h.slice(1) ? "active" : ""} id={"nav-" + label.toLowerCase()}>{label}</a>
      ))}
      <span class="who">{s.username}</span>
      <button class="link" id="logout" onClick={() => { closeAll(); logout(); go("#/login"); }}>Log out</button>
    </nav>
  );
}

function App() {
  const s = useSignal(session);
  const r = useSignal(route);
  useAlertToasts(s);
  useEffect(() => {
    if (!s) closeAll();
  }, [!s]);
  const [p0, p1] = r.parts;
  if (!s) {
    if (p0 === "signup") return <LoginPage signup />;
    if (p0 !== "login") {
      go("#/login?next=" + encodeURIComponent(r.hash));
      return null;
    }
    return <LoginPage />;
  }
  if (p0 === "login" || p0 === "signup") {
    const next = r.query.get("next") || "#/";
    go(next.startsWith("#/") && !/^#\/(login|signup)/.test(next) ? next : "#/");
    return null;
  }
  let page;
  switch (p0) {
    case undefined: page = <Home />; break;
    case "asset": page = <Asset sym={(p1 || "BTC-USD").replace("-", "/")} query={r.query} />; break;
    case "models": page = <Models admin={s.role === "admin"} />; break;
    case "admin": page = <Admin s={s} />; break;
    case "account": page = <Account />; break;
    case "alerts": page = <Alerts s={s} />; break;
    case "backtests": page = <Backtests s={s} query={r.query} />; break;
    case "analysis": page = <Analysis sym={(p1 || "BTC-USD").replace("-", "/")} />; break;
    default: page = <main><h1>Not found</h1><p>No page at {r.path}.</p></main>;
  }
  return (
    <>
      <Nav s={s} path={r.path} />
      <Offline />
      <SessionWarning />
      {page}
      <Toasts />
    </>
  );
}

render(<App />, document.getElementById("app"));
