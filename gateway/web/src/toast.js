import { signal } from "./signal.js";

export const toasts = signal([]);
let n = 0;

// toast shows text for ms; rule names the alert rule that fired, so that a
// toast can be told from another rule's (the browser test reads it).
export function toast(text, kind = "info", { ms = 8000, rule = "" } = {}) {
  const id = ++n;
  toasts.value = [...toasts.value, { id, text, kind, rule }].slice(-5);
  setTimeout(() => dismiss(id), ms);
}

export function dismiss(id) {
  toasts.value = toasts.value.filter((t) => t.id !== id);
}
