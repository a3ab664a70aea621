// lorapod dashboard: the API client. The key lives in sessionStorage (gone when the tab closes) and goes only in
// the Authorization header, never in a URL. Live updates read Server-Sent Events through fetch, because the
// browser's EventSource cannot send that header.

const KEY = "lorapod.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// One API call; JSON in and out by default; an error answer becomes an ApiError with the server's sentence.
export async function api(path, { method = "GET", json, body, raw = false } = {}) {
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let message = response.statusText;
    try {
      const data = await response.json();
      message = data.error || data.detail || message;
    } catch (_) {
      /* not JSON: keep the status text */
    }
    if (response.status === 401) window.dispatchEvent(new CustomEvent("lorapod:auth"));
    throw new ApiError(response.status, `${response.status}: ${message}`);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// A file the API serves, as a blob: URL an <img> or a download link can use (they cannot send the header).
export async function blobUrl(path) {
  const response = await api(path, { raw: true });
  return URL.createObjectURL(await response.blob());
}

// Save a file to the person's disk through a blob (the key stays in the header).
export async function download(path, name) {
  const url = await blobUrl(path);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function parseBlock(block) {
  let name = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  let payload = data.join("\n");
  try {
    payload = JSON.parse(payload);
  } catch (_) {
    /* plain text data */
  }
  return { name, id, data: payload };
}

// Follow an event stream until its `end` event or until signal aborts; reconnects with Last-Event-ID.
export async function follow(path, onEvent, signal) {
  let lastId = null;
  let failures = 0;
  while (!signal.aborted) {
    try {
      const response = await fetch(path, {
        headers: headers(lastId ? { "Last-Event-ID": lastId } : {}),
        signal,
      });
      if (!response.ok) {
        if (response.status === 401) window.dispatchEvent(new CustomEvent("lorapod:auth"));
        throw new ApiError(response.status, `${response.status}: the event stream was refused`);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseBlock(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!event) continue;
          failures = 0;
          lastId = event.id || lastId;
          onEvent(event.name, event.data);
          if (event.name === "end") return;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status < 500) throw error;
      failures += 1;
      if (failures > 5) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * failures, 5000)));
  }
}
