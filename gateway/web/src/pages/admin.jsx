import { useEffect, useState } from "preact/hooks";
import { api, get, assetToken } from "../api.js";
import { time } from "../format.js";

// Admin is hidden from the navigation of a user and refused by the API
// anyway: the page never decides access, the server does.
export function Admin({ s }) {
  if (s.role !== "admin") {
    return <main><h1>Administration</h1><p class="error" id="forbidden">This page is for administrators.</p></main>;
  }
  return (
    <main>
      <h1>Administration</h1>
      <Assets />
      <Users self={s.username} />
    </main>
  );
}

function Assets() {
  const [assets, setAssets] = useState(null);
  const [pairs, setPairs] = useState(null);
  const [q, setQ] = useState("");
  const [err, setErr] = useState("");
  const load = async () => {
    try {
      setAssets((await get("/crypto/assets")).assets);
    } catch (e) {
      setErr(e.message);
    }
  };
  useEffect(() => {
    load();
    get("/crypto/kraken_assets").then((r) => setPairs(r.pairs), (e) => setErr(e.message));
  }, []);
  const act = (f) => async () => {
    setErr("");
    try {
      await f();
      await load();
    } catch (e) {
      setErr(e.message);
    }
  };
  const tracked = new Set((assets || []).map((a) => a.symbol));
  const needle = q.trim().toUpperCase();
  const found = needle && pairs ? pairs.filter((p) => !tracked.has(p.symbol) && (p.symbol.includes(needle) || p.altname.toUpperCase().includes(needle) || p.wsname.toUpperCase().includes(needle))).slice(0, 20) : [];
  return (
    <section class="card">
      <h2>Assets</h2>
      {err && <p class="error">{err}</p>}
      <table id="assets">
        <thead><tr><th>Asset</th><th>Kraken</th><th>Added</th><th /></tr></thead>
        <tbody>
          {(assets || []).map((a) => (
            <tr key={a.id} data-symbol={a.symbol}>
              <td>{a.symbol}</td><td>{a.kraken_key}</td><td>{a.added_by} · {time(a.added_at)}</td>
              <td><button class="danger" onClick={act(() => api("DELETE", `/crypto/assets/${assetToken(a.symbol)}`))}>Remove</button></td>
            </tr>
          ))}
        </tbody>
      </table>
      <label>Add from Kraken's list <input id="pair-search" type="search" placeholder="search, e.g. ETH" value={q} onInput={(e) => setQ(e.target.value)} /></label>
      <ul id="pair-results">
        {found.map((p) => (
          <li key={p.symbol}>
            {p.symbol} <small>{p.altname} · {p.status}</small>{" "}
            <button data-add={p.symbol} onClick={act(() => api("POST", "/crypto/assets", { symbol: p.symbol }))}>Add</button>
          </li>
        ))}
        {needle && pairs && found.length === 0 && <li>No untracked pair matches.</li>}
      </ul>
    </section>
  );
}

function Users({ self }) {
  const [users, setUsers] = useState(null);
  const [err, setErr] = useState("");
  const load = async () => {
    try {
      setUsers((await get("/auth/users")).users);
    } catch (e) {
      setErr(e.message);
    }
  };
  useEffect(() => {
    load();
  }, []);
  const act = (f) => async (...a) => {
    setErr("");
    try {
      await f(...a);
      await load();
    } catch (e) {
      setErr(e.message);
    }
  };
  const create = act(async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    await api("POST", "/auth/signup", { username: f.get("username"), password: f.get("password"), email: f.get("email") || "", full_name: "" });
    if (f.get("role") === "admin") await api("PUT", `/auth/users/${encodeURIComponent(f.get("username"))}/role`, { role: "admin" });
    e.target.reset();
  });
  return (
    <section class="card">
      <h2>Users</h2>
      {err && <p class="error">{err}</p>}
      <div class="scroll">
        <table id="users">
          <thead><tr><th>User</th><th>Email</th><th>Role</th><th>Created</th><th /></tr></thead>
          <tbody>
            {(users || []).map((u) => (
              <tr key={u.username} data-user={u.username}>
                <td>{u.username}{u.disabled && " (disabled)"}</td>
                <td>{u.email}</td>
                <td>
                  <select value={u.role} disabled={u.username === self} onChange={act((e) => api("PUT", `/auth/users/${encodeURIComponent(u.username)}/role`, { role: e.target.value }))}>
                    <option value="user">user</option><option value="admin">admin</option>
                  </select>
                </td>
                <td>{time(u.created_at)}</td>
                <td>{u.username !== self && <button class="danger" onClick={act(() => confirm(`Delete ${u.username}?`) && api("DELETE", `/auth/users/${encodeURIComponent(u.username)}`))}>Delete</button>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <form onSubmit={create} class="inline" id="create-user">
        <input name="username" placeholder="username" required minLength={3} maxLength={32} />
        <input name="password" type="password" placeholder="password" autocomplete="new-password" required minLength={8} maxLength={72} />
        <input name="email" type="email" placeholder="email" />
        <select name="role"><option value="user">user</option><option value="admin">admin</option></select>
        <button type="submit">Create user</button>
      </form>
    </section>
  );
}
