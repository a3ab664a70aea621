// lorapod dashboard: small DOM helpers shared by the views (text always goes in as text, never as HTML).

import { api } from "./api.js";

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function notice(message) {
  const box = document.getElementById("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

// Show an API failure; a 401 means the key is missing or wrong, which the person can fix above.
export function fail(err) {
  notice(err && err.status === 401 ? "This server needs an API key: enter it above (kept for this tab only)." : err.message);
}

export function statusBadge(status) {
  return h("span", { class: `status-${status}` }, status);
}

export function fmtLoss(value) {
  return value === null || value === undefined ? "-" : Number(value).toPrecision(4);
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const total = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  return `${Math.floor(total / 3600)}:${pad(Math.floor((total % 3600) / 60))}:${pad(total % 60)}`;
}

export function enc(text) {
  return encodeURIComponent(text);
}

// Which routes this server offers, read once from its OpenAPI (newer servers add save, resume, caption editing).
let features = null;
export async function serverFeatures() {
  if (features) return features;
  try {
    const spec = await api("/openapi.json");
    const paths = spec.paths || {};
    const cancelParams = ((paths["/jobs/{job_id}/cancel"] || {}).post || {}).parameters || [];
    features = {
      save: Boolean((paths["/jobs/{job_id}/save"] || {}).post),
      resume: Boolean((paths["/jobs/{job_id}/resume"] || {}).post),
      cancelSave: cancelParams.some((p) => p.name === "save"),
    };
  } catch (_) {
    features = { save: false, resume: false, cancelSave: false };
  }
  return features;
}
