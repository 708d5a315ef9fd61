import { useEffect, useState } from "preact/hooks";
import { api, get, login } from "../api.js";
import { reauth } from "../live.js";
import { session, renewing } from "../session.js";
import { time } from "../format.js";

export function Account() {
  const [me, setMe] = useState(null);
  const [msg, setMsg] = useState({ text: "", err: false });
  useEffect(() => {
    get("/auth/users/me").then(setMe, (e) => setMsg({ text: e.message, err: true }));
  }, []);
  const run = (f) => async (e) => {
    e.preventDefault();
    const form = e.target;
    try {
      setMe(await f(new FormData(form)));
      setMsg({ text: "Saved.", err: false });
      form.querySelectorAll("input[type=password]").forEach((i) => (i.value = ""));
    } catch (ex) {
      setMsg({ text: ex.message, err: true });
    }
  };
  if (!me) return <main><h1>Account</h1>{msg.text && <p class="error">{msg.text}</p>}</main>;
  return (
    <main>
      <h1>Account</h1>
      <p>{me.username} · {me.role} · since {time(me.created_at)}</p>
      {msg.text && <p class={msg.err ? "error" : "notice"} role="status">{msg.text}</p>}
      <form class="card" id="profile-form" onSubmit={run((f) => api("PUT", "/auth/users/me", { email: f.get("email"), full_name: f.get("full_name") }))}>
        <h2>Profile</h2>
        <label>Email <input name="email" type="email" defaultValue={me.email} /></label>
        <label>Full name <input name="full_name" defaultValue={me.full_name} maxLength={128} /></label>
        <button type="submit">Save profile</button>
      </form>
      <form class="card" id="password-form" onSubmit={run(async (f) => {
        if (f.get("password") !== f.get("again")) throw new Error("The new passwords differ.");
        // A new password revokes every token of the account, this page's
        // too: log in again with it at once, so that the page and its
        // socket carry on.
        const me = await renewing((async () => {
          const me = await api("PUT", "/auth/users/me", { password: f.get("password"), current_password: f.get("current") });
          await login(session.value.username, f.get("password"));
          return me;
        })());
        reauth();
        return me;
      })}>
        <h2>Password</h2>
        <label>Current <input name="current" type="password" autocomplete="current-password" required /></label>
        <label>New <input name="password" type="password" autocomplete="new-password" required minLength={8} maxLength={72} /></label>
        <label>Again <input name="again" type="password" autocomplete="new-password" required /></label>
        <button type="submit">Change password</button>
      </form>
    </main>
  );
}
