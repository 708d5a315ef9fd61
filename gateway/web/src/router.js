// Hash routes (#/asset/BTC-USD?iv=5m): a reload or a shared link lands on
// the same view and the server needs one page shell only.
import { signal } from "./signal.js";

function parse() {
  const h = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = h.split("?");
  return { path, parts: path.split("/").filter(Boolean), query: new URLSearchParams(query), hash: "#" + h };
}

export const route = signal(parse());
addEventListener("hashchange", () => (route.value = parse()));

export function go(hash) {
  if (location.hash === hash) route.value = parse();
  else location.hash = hash;
}
