// A tiny observable value with a Preact hook: enough state sharing for a
// few pages without a state library.
import { useEffect, useState } from "preact/hooks";

export function signal(initial) {
  const subs = new Set();
  let v = initial;
  return {
    get value() { return v; },
    set value(nv) {
      v = nv;
      for (const f of [...subs]) f(nv);
    },
    subscribe(f) {
      subs.add(f);
      return () => subs.delete(f);
    },
  };
}

export function useSignal(s) {
  const [v, set] = useState(s.value);
  useEffect(() => {
    set(s.value);
    return s.subscribe(set);
  }, [s]);
  return v;
}
