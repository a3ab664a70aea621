// lorapod dashboard: the loss chart, a hand-drawn SVG line (no chart library).

const NS = "http://www.w3.org/2000/svg";
const W = 600;
const H = 200;
const PAD = { left: 48, right: 12, top: 10, bottom: 22 };

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(value) {
  return Number(value).toPrecision(3);
}

// Draw points [{step, loss}] into svg; data-points says how many are drawn (tests read it).
export function drawLossChart(svg, points) {
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.replaceChildren();
  svg.dataset.points = String(points.length);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  svg.append(el("line", { class: "axis", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom }));
  svg.append(el("line", { class: "axis", x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom }));
  if (!points.length) {
    svg.append(el("text", { x: PAD.left + 8, y: PAD.top + 20 }, "no loss yet"));
    return;
  }
  const steps = points.map((p) => p.step);
  const losses = points.map((p) => p.loss);
  const [s0, s1] = [Math.min(...steps), Math.max(...steps)];
  let [l0, l1] = [Math.min(...losses), Math.max(...losses)];
  if (l0 === l1) [l0, l1] = [l0 - 0.5, l1 + 0.5];
  const x = (s) => PAD.left + (s1 === s0 ? plotW / 2 : ((s - s0) / (s1 - s0)) * plotW);
  const y = (l) => PAD.top + (1 - (l - l0) / (l1 - l0)) * plotH;
  const path = points.map((p) => `${x(p.step).toFixed(1)},${y(p.loss).toFixed(1)}`).join(" ");
  svg.append(el("polyline", { class: "line", points: path }));
  svg.append(el("text", { x: 4, y: PAD.top + 10 }, fmt(l1)));
  svg.append(el("text", { x: 4, y: H - PAD.bottom }, fmt(l0)));
  svg.append(el("text", { x: PAD.left, y: H - 6 }, `step ${s0}`));
  svg.append(el("text", { x: W - PAD.right - 70, y: H - 6 }, `step ${s1}`));
}
