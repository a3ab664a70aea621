// lorapod dashboard: one job live — status, phase, bar, loss chart, log tail, samples, artifacts, buttons.

import { api, blobUrl, download, follow } from "./api.js";
import { drawLossChart } from "./chart.js";
import { enc, fail, fmtDuration, fmtLoss, h, notice, serverFeatures, statusBadge } from "./ui.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const LOG_LINES = 200;

export async function jobView(view, jobId, signal) {
  const base = `/jobs/${enc(jobId)}`;
  const features = await serverFeatures();
  const state = { job: null, points: [], phase: "-", log: [], shown: new Set() };

  const status = h("span", { id: "job-status" });
  const phase = h("span", { id: "job-phase" }, "-");
  const bar = h("progress", { id: "job-progress", max: 1, value: 0 });
  const steps = h("span", { id: "job-steps" }, "-");
  const rate = h("span", { id: "job-rate" }, "-");
  const eta = h("span", { id: "job-eta" }, "-");
  const loss = h("span", { id: "job-loss" }, "-");
  const chart = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  chart.id = "loss-chart";
  const samples = h("div", { id: "samples", class: "gallery" });
  const artifacts = h("tbody", { id: "artifacts" });
  const log = h("pre", { id: "log" });
  const error = h("p", { id: "job-error", class: "status-failed", hidden: true });

  const act = (label, id, run) =>
    h("button", {
      id,
      hidden: true,
      onclick: async () => {
        try {
          await run();
          notice("");
        } catch (err) {
          fail(err);
        }
      },
    }, label);
  const cancel = act("Cancel", "btn-cancel", () => api(`${base}/cancel`, { method: "POST" }));
  const cancelSave = act("Save and cancel", "btn-cancel-save", () =>
    api(`${base}/cancel?save=true`, { method: "POST" }),
  );
  const save = act("Save now", "btn-save", () => api(`${base}/save`, { method: "POST" }));
  const resume = act("Resume", "btn-resume", async () => {
    const job = await api(`${base}/resume`, { method: "POST" });
    if (job && job.id) location.hash = `#/job/${enc(job.id)}`;
  });

  view.replaceChildren(
    h("section", {},
      h("h2", {}, jobId, " ", status),
      h("div", { class: "facts" },
        h("span", {}, h("b", {}, "phase"), phase),
        h("span", {}, h("b", {}, "step"), steps),
        h("span", {}, h("b", {}, "speed"), rate),
        h("span", {}, h("b", {}, "ETA"), eta),
        h("span", {}, h("b", {}, "loss"), loss)),
      bar, error,
      h("p", {}, cancel, " ", cancelSave, " ", save, " ", resume)),
    h("section", {}, h("h2", {}, "Loss"), chart),
    h("section", {}, h("h2", {}, "Samples and images"), samples),
    h("section", {}, h("h2", {}, "Artifacts"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, "kind"), h("th", {}, "size"), h("th", {}))),
        artifacts)),
    h("section", {}, h("h2", {}, "Log"), log),
  );
  drawLossChart(chart, []);

  function showProgress(p) {
    if (!p) return;
    if (p.total_steps) {
      bar.max = p.total_steps;
      bar.value = p.step || 0;
      steps.textContent = `${p.step || 0}/${p.total_steps}`;
    }
    rate.textContent = p.rate ? (p.rate >= 1 ? `${p.rate.toFixed(2)} it/s` : `${(1 / p.rate).toFixed(2)} s/it`) : "-";
    eta.textContent = fmtDuration(p.eta_seconds);
    if (p.loss !== null && p.loss !== undefined) loss.textContent = fmtLoss(p.loss);
  }

  function showArtifact(a) {
    if (state.shown.has(a.name)) return;
    state.shown.add(a.name);
    const size = a.size ? `${(a.size / 1024).toFixed(1)} KiB` : "";
    const button = h("button", { dataset: { name: a.name }, onclick: () => download(a.url, a.name.split("/").pop()).catch((e) => fail(e)) }, "Download");
    artifacts.append(h("tr", {}, h("td", {}, a.name), h("td", {}, a.kind), h("td", {}, size), h("td", {}, button)));
    if (a.kind === "sample" || a.kind === "image") {
      const figure = h("figure", {}, h("figcaption", {}, a.name));
      samples.append(figure);
      blobUrl(a.url).then((url) => figure.prepend(h("img", { src: url, alt: a.name }))).catch(() => {});
    }
  }

  function showJob(job) {
    state.job = job;
    status.replaceChildren(statusBadge(job.status));
    showProgress(job.progress);
    for (const a of job.artifacts || []) showArtifact(a);
    error.hidden = !job.error;
    error.textContent = job.error || "";
    const running = job.status === "running";
    cancel.hidden = TERMINAL.has(job.status);
    cancelSave.hidden = !features.cancelSave || !running;
    save.hidden = !features.save || !running;
    resume.hidden = !features.resume || !["cancelled", "failed"].includes(job.status);
    if (TERMINAL.has(job.status)) phase.textContent = job.status;
  }

  const onEvent = (name, data) => {
    if (name === "status") showJob(data);
    else if (name === "progress") showProgress(data);
    else if (name === "artifact") showArtifact(data);
    else if (name === "metrics") {
      phase.textContent = data.phase || phase.textContent;
      if (data.points && data.points.length) {
        // A reconnect sends the whole series again: drop what it repeats.
        const first = data.points[0].step;
        state.points = state.points.filter((p) => p.step < first).concat(data.points);
        drawLossChart(chart, state.points);
        loss.textContent = fmtLoss(state.points[state.points.length - 1].loss);
      }
    } else if (name === "log") {
      state.log.push(...data.lines);
      state.log = state.log.slice(-LOG_LINES);
      log.textContent = state.log.join("\n");
      log.scrollTop = log.scrollHeight;
    } else if (name === "end") {
      api(base).then(showJob).catch(() => {});
    }
  };
  follow(`${base}/events`, onEvent, signal).catch((err) => fail(err));
}
