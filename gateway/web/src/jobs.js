// A job (train, score, predict, backtest) has no channel on the hub: its
// status is read until it ends, backing off, and never after.
import { get } from "./api.js";

export const ended = (st) => st.state === "done" || st.state === "failed";

// follow reads url until the job ends or alive() turns false, handing
// each status to onStatus; it resolves with the last status read (null
// when stopped first) and rejects with the error of a failed read.
export async function follow(url, onStatus, alive) {
  let delay = 500;
  while (alive()) {
    const st = await get(url);
    onStatus(st);
    if (ended(st)) return st;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 1.5, 5000);
  }
  return null;
}
