// lorapod dashboard: the shell (key, routing) and the jobs, datasets and generate views.

import { api, blobUrl, follow, getKey, setKey } from "./api.js";
import { jobView } from "./job.js";
import { enc, fail, fmtLoss, h, notice, statusBadge } from "./ui.js";

const IMAGE = /\.(png|jpe?g|webp)$/i;
let current = null; // the AbortController of the view on screen: leaving a view stops its polling and streams

function field(label, input) {
  return h("label", {}, label, input);
}

async function jobsView(view, signal) {
  const datasets = h("select", { id: "train-dataset", required: true });
  const form = h("form", { id: "train-form", class: "row" },
    field("dataset", datasets),
    field("trigger word", h("input", { id: "train-trigger", name: "trigger", value: "" })),
    field("steps", h("input", { id: "train-steps", name: "steps", type: "number", min: 1, value: 1000 })),
    field("base model", h("input", { id: "train-base", name: "base", value: "flux-dev" })),
    field("sample prompt", h("input", { id: "train-prompt", name: "prompt", value: "a photo of [trigger]" })),
    field("sample every", h("input", { id: "train-sample-every", name: "sample_every", type: "number", min: 1, value: 250 })),
    h("button", { class: "primary", type: "submit", id: "train-start" }, "Start training"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const job = await api("/jobs", {
        method: "POST",
        json: {
          type: "train",
          training_name: datasets.value,
          trigger_word: form.querySelector("#train-trigger").value || null,
          steps: Number(form.querySelector("#train-steps").value),
          base_model: form.querySelector("#train-base").value,
          sample_prompts: form.querySelector("#train-prompt").value ? [form.querySelector("#train-prompt").value] : [],
          sample_every: Number(form.querySelector("#train-sample-every").value),
          save_every: Number(form.querySelector("#train-sample-every").value),
        },
      });
      location.hash = `#/job/${enc(job.id)}`;
    } catch (err) {
      fail(err);
    }
  });
  const rows = h("tbody", { id: "jobs" });
  view.replaceChildren(
    h("section", {}, h("h2", {}, "New training"), form),
    h("section", {}, h("h2", {}, "Jobs"),
      h("table", {}, h("thead", {}, h("tr", {}, ...["id", "type", "status", "progress", "loss", "created"].map((t) => h("th", {}, t)))),
        rows)),
  );
  api("/datasets").then((d) => datasets.replaceChildren(...d.data.map((x) => h("option", { value: x.name }, x.name)))).catch(() => {});
  // The list refreshes every 2 s while on screen; a job's own page streams its events instead.
  while (!signal.aborted) {
    try {
      const page = await api("/jobs?limit=50");
      rows.replaceChildren(...page.data.map((job) => {
        const p = job.progress || {};
        return h("tr", { dataset: { id: job.id } },
          h("td", {}, h("a", { href: `#/job/${enc(job.id)}` }, job.id)),
          h("td", {}, job.type),
          h("td", {}, statusBadge(job.status)),
          h("td", {}, h("progress", { max: p.total_steps || 1, value: p.step || 0 }), ` ${p.step || 0}/${p.total_steps || "?"}`),
          h("td", {}, fmtLoss(p.loss)),
          h("td", {}, (job.created_at || "").slice(0, 19).replace("T", " ")));
      }));
      notice("");
    } catch (err) {
      fail(err);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function upload(name, files, result) {
  if (!name) throw new Error("dataset name: type one first");
  const body = new FormData();
  for (const file of files) body.append("files", file, file.name);
  const summary = await api(`/datasets/${enc(name)}/files`, { method: "POST", body });
  result.textContent = `${summary.dataset}: ${summary.saved.length} saved, ${summary.images} images, ${summary.captions} captions` +
    (summary.skipped.length ? `; skipped ${summary.skipped.map((s) => `${s.filename} (${s.reason})`).join(", ")}` : "");
}

async function datasetsView(view) {
  const name = h("input", { id: "dataset-name", placeholder: "dataset name" });
  const result = h("p", { id: "upload-result", class: "muted" });
  const picker = h("input", { id: "file-input", type: "file", multiple: true, accept: "image/*,.txt,.zip" });
  const drop = h("div", { id: "drop" }, "Drop images, .txt captions or a .zip here, or ", picker);
  const list = h("tbody", { id: "datasets" });
  const refresh = async () => {
    const found = await api("/datasets");
    list.replaceChildren(...found.data.map((d) =>
      h("tr", {}, h("td", {}, h("a", { href: `#/dataset/${enc(d.name)}` }, d.name)), h("td", {}, d.images), h("td", {}, d.captions))));
  };
  const send = (files) => upload(name.value.trim(), files, result).then(refresh).catch((err) => fail(err));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); send([...e.dataTransfer.files]); });
  picker.addEventListener("change", () => send([...picker.files]));
  view.replaceChildren(
    h("section", {}, h("h2", {}, "Upload"), h("p", {}, field("dataset", name)), drop, result),
    h("section", {}, h("h2", {}, "Datasets"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, "images"), h("th", {}, "captions"))), list)));
  await refresh();
}

async function datasetView(view, name) {
  const info = await api(`/datasets/${enc(name)}`);
  const gallery = h("div", { id: "captions", class: "gallery" });
  const paths = new Set(info.files.map((f) => f.path));
  view.replaceChildren(h("section", {},
    h("h2", {}, `${info.name}: ${info.images} images, ${info.captions} captions`), gallery));
  for (const file of info.files.filter((f) => IMAGE.test(f.path))) {
    const caption = h("figcaption", { class: "caption" }, "(no caption)");
    const figure = h("figure", { dataset: { path: file.path } }, caption);
    gallery.append(figure);
    const where = `/files/training_data/${enc(name)}/${file.path.split("/").map(enc).join("/")}`;
    blobUrl(where).then((url) => figure.prepend(h("img", { src: url, alt: file.path }))).catch(() => {});
    const txt = file.path.replace(/\.[^.]+$/, ".txt");
    if (paths.has(txt)) api(where.replace(/\.[^.\/]+$/, ".txt")).then((text) => { caption.textContent = text; }).catch(() => {});
  }
}

async function generateView(view, signal) {
  const loras = h("select", { id: "gen-lora" }, h("option", { value: "" }, "(no LoRA)"));
  const images = h("div", { id: "gen-images", class: "gallery" });
  const state = h("p", { id: "gen-status", class: "muted" });
  const input = (id, attrs) => h("input", { id, ...attrs });
  const form = h("form", { id: "gen-form", class: "row" },
    field("prompt", input("gen-prompt", { size: 40, required: true })),
    field("LoRA", loras),
    field("base model", input("gen-base", { placeholder: "the LoRA's" })),
    field("images", input("gen-count", { type: "number", min: 1, max: 8, value: 1 })),
    field("seed", input("gen-seed", { type: "number", min: 0 })),
    h("button", { class: "primary", type: "submit" }, "Generate"));
  view.replaceChildren(h("section", {}, h("h2", {}, "Generate"), form, state, images));
  api("/jobs?type=train&status=completed&limit=100")
    .then((page) => loras.append(...page.data.map((j) => h("option", { value: j.id }, `${j.name} (${j.id})`)))).catch(() => {});
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (id) => form.querySelector(id).value;
    const body = { type: "generate", prompt: value("#gen-prompt"), num_images: Number(value("#gen-count")) };
    if (loras.value) body.lora = loras.value;
    if (value("#gen-base")) body.base_model = value("#gen-base");
    if (value("#gen-seed")) body.seed = Number(value("#gen-seed"));
    try {
      const job = await api("/jobs", { method: "POST", json: body });
      images.replaceChildren();
      state.textContent = `${job.id}: ${job.status}`;
      await follow(`/jobs/${enc(job.id)}/events`, (name, data) => {
        if (name === "status" || name === "end") state.textContent = `${job.id}: ${data.status}${data.error ? ` (${data.error})` : ""}`;
        if (name === "artifact" && data.kind === "image") {
          blobUrl(data.url).then((url) => images.append(h("img", { src: url, alt: data.name }))).catch(() => {});
        }
      }, signal);
    } catch (err) {
      fail(err);
    }
  });
}

async function route() {
  if (current) current.abort();
  current = new AbortController();
  const view = document.getElementById("view");
  const [, page, arg] = (location.hash || "#/jobs").split("/");
  const name = arg ? decodeURIComponent(arg) : "";
  notice("");
  try {
    if (page === "job" && name) await jobView(view, name, current.signal);
    else if (page === "datasets") await datasetsView(view);
    else if (page === "dataset" && name) await datasetView(view, name);
    else if (page === "generate") await generateView(view, current.signal);
    else await jobsView(view, current.signal);
  } catch (err) {
    fail(err);
  }
}

function showKeyState() {
  document.getElementById("key-state").textContent = getKey() ? "key set for this tab" : "";
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("api-key");
  setKey(input.value.trim());
  input.value = ""; // the key stays in sessionStorage only, not in the page
  showKeyState();
  route();
});
document.getElementById("forget-key").addEventListener("click", () => { setKey(""); showKeyState(); });
window.addEventListener("lorapod:auth", () => fail({ status: 401 }));
window.addEventListener("hashchange", route);
showKeyState();
route();
