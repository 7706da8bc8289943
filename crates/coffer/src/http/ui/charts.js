// Hand-made SVG charts: no library, no build step. Every chart sizes its
// margins from the labels it draws (so an axis label is never clipped),
// scales to its container through its viewBox, and names itself for screen
// readers.

const SVG_NS = 'http://www.w3.org/2000/svg';
// The label font is 11 px: a character is at most about 7 px wide, so a
// margin of that many pixels per character (plus a gap) always fits.
const CHAR_WIDTH_PX = 7;
const LABEL_GAP_PX = 8;
const TICKS_WANTED = 4;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === 'testid') el.dataset.testid = value;
    else el.setAttribute(key, value);
  }
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false)
    .map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

/** Round tick values from 0 to at least `max`: 1, 2 or 5 times a power of ten apart. */
export function niceTicks(max, wanted = TICKS_WANTED) {
  if (!(max > 0)) return [0];
  const raw = max / wanted;
  // Amounts are whole msat: a step below one is no step.
  const power = Math.max(1, 10 ** Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= raw);
  const ticks = [];
  for (let v = 0; v < max + step; v += step) ticks.push(v);
  return ticks;
}

const satFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 3 });
/** An axis label in sats: msat in, "1,234 sat" out (whole sats once they are large). */
export function satLabel(valueMsat) {
  return `${satFormat.format(valueMsat / 1000)} sat`;
}

/**
 * Vertical bars over time. `points`: [{label, value}] (value in msat),
 * oldest first; `every`: show one x label in that many. Y ticks in sats.
 */
export function columnChart(points, { title, every = 1, testid = 'column-chart' } = {}) {
  const max = Math.max(0, ...points.map((p) => p.value));
  const ticks = niceTicks(max);
  const top = ticks[ticks.length - 1] || 1;
  const yLabels = ticks.map(satLabel);
  const left = Math.max(...yLabels.map((t) => t.length)) * CHAR_WIDTH_PX + LABEL_GAP_PX;
  const xLabelHalf = Math.max(...points.map((p) => p.label.length), 1) * CHAR_WIDTH_PX / 2;
  const pad = { left, right: Math.ceil(xLabelHalf) + 4, top: 12, bottom: 28 };
  const width = 640;
  const height = 220;
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const step = plotW / Math.max(1, points.length);
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const grid = ticks.map((t, i) => [
    svg('line', { class: i ? 'chart-grid' : 'chart-axis', x1: pad.left, x2: width - pad.right, y1: y(t), y2: y(t) }),
    svg('text', { class: 'chart-label', x: pad.left - LABEL_GAP_PX / 2, y: y(t) + 4, 'text-anchor': 'end' },
      yLabels[i])]);
  const bars = points.map((p, i) => {
    const h = (p.value / top) * plotH;
    const x = pad.left + i * step;
    return [
      svg('rect', { class: 'chart-bar', x: (x + step * 0.15).toFixed(1), y: (pad.top + plotH - h).toFixed(1),
        width: Math.max(1, step * 0.7).toFixed(1), height: h.toFixed(1), rx: 1.5 },
      svg('title', {}, `${p.label}: ${satLabel(p.value)}`)),
      i % every === 0 || i === points.length - 1
        ? svg('text', { class: 'chart-label', x: (x + step / 2).toFixed(1), y: height - 8, 'text-anchor': 'middle' },
          p.label) : null];
  });
  return svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart-svg', role: 'img', testid,
    'aria-label': title, preserveAspectRatio: 'xMidYMid meet' }, svg('title', {}, title), grid, bars);
}

/**
 * Horizontal bars, largest first: `rows` [{label, value}] (msat). The left
 * margin fits the longest name (cut at `LABEL_MAX_CHARS`), the right one the
 * longest amount.
 */
const LABEL_MAX_CHARS = 28;
export function barChart(rows, { title, testid = 'bar-chart' } = {}) {
  const cut = (t) => (t.length > LABEL_MAX_CHARS ? `${t.slice(0, LABEL_MAX_CHARS - 1)}…` : t);
  const names = rows.map((r) => cut(r.label));
  const amounts = rows.map((r) => satLabel(r.value));
  const rowH = 26;
  const pad = {
    left: Math.max(4, ...names.map((t) => t.length)) * CHAR_WIDTH_PX + LABEL_GAP_PX,
    right: Math.max(4, ...amounts.map((t) => t.length)) * CHAR_WIDTH_PX + LABEL_GAP_PX,
    top: 6,
    bottom: 6,
  };
  const width = Math.max(400, pad.left + pad.right + 160);
  const height = pad.top + pad.bottom + rowH * Math.max(1, rows.length);
  const plotW = width - pad.left - pad.right;
  const max = Math.max(1, ...rows.map((r) => r.value));
  const body = rows.map((r, i) => {
    const y = pad.top + i * rowH;
    const w = (r.value / max) * plotW;
    return svg('g', { testid: 'bar-row' },
      svg('text', { class: 'chart-label', x: pad.left - LABEL_GAP_PX / 2, y: y + rowH / 2 + 4, 'text-anchor': 'end' },
        names[i]),
      svg('rect', { class: 'chart-bar', x: pad.left, y: y + 4, width: Math.max(1, w).toFixed(1), height: rowH - 8,
        rx: 2 }, svg('title', {}, `${r.label}: ${amounts[i]}`)),
      svg('text', { class: 'chart-label', x: (pad.left + w + 4).toFixed(1), y: y + rowH / 2 + 4 }, amounts[i]));
  });
  return svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart-svg bars', role: 'img', testid,
    'aria-label': title }, svg('title', {}, title),
  svg('line', { class: 'chart-axis', x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom }), body);
}
