import { signal } from "./signal.js";

export const toasts = signal([]);
let n = 0;

export function toast(text, kind = "info", ms = 8000) {
  const id = ++n;
  toasts.value = [...toasts.value, { id, text, kind }].slice(-5);
  setTimeout(() => dismiss(id), ms);
}

export function dismiss(id) {
  toasts.value = toasts.value.filter((t) => t.id !== id);
}
