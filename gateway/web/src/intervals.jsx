// The candle intervals the system runs, as GET /crypto/assets names them:
// the only ones an interval menu offers, since the hub refuses a channel on
// any other (not_tracked) and the server a preference naming one.
import { useEffect } from "preact/hooks";
import { get } from "./api.js";
import { signal, useSignal } from "./signal.js";

export const runIntervals = signal(null);
let loading = null;

// noteIntervals keeps the list from an answer of /crypto/assets a page
// fetched anyway.
export function noteIntervals(list) {
  if (Array.isArray(list) && list.length) runIntervals.value = list;
}

function load() {
  if (runIntervals.value || loading) return;
  loading = get("/crypto/assets")
    .then((a) => noteIntervals(a.intervals))
    .catch(() => {})
    .finally(() => (loading = null));
}

// useIntervals is the list for a menu; until it is known, only the value
// the menu holds, so that nothing not run is offered meanwhile.
export function useIntervals(current) {
  const v = useSignal(runIntervals);
  useEffect(load, []);
  return v || (current ? [current] : []);
}

// IntervalOptions are a menu's options; a value the system does not run
// (an old link, a preference saved before the interval was dropped) is
// shown as such rather than silently replaced.
export function IntervalOptions({ current }) {
  const list = useIntervals(current);
  return (
    <>
      {current && !list.includes(current) && <option value={current} disabled>{current} (not run)</option>}
      {list.map((i) => <option value={i}>{i}</option>)}
    </>
  );
}
