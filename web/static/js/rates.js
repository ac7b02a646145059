// Live rates from successive counter readings, and the samples behind the sparklines.
//
// Nodes write their counters to ZooKeeper every few seconds, stamped with the time of
// the writing ("last_seen"); a rate is the counter's increase over the increase of that
// stamp, so it does not depend on when the console polls. A counter that went down (a
// flow restarted) gives no rate for that interval.

export const WINDOW_MS = 5 * 60 * 1000; // what the sparklines show at most
const MIN_SPAN_MS = 60 * 1000;

export class Rates {
  constructor() {
    this.nodes = new Map(); // name -> {t, in, out, rin, rout, samples: [[t, rin, rout]]}
  }

  /** Takes the status rows of one /api/status answer. */
  update(rows) {
    const seen = new Set();
    for (const row of rows) {
      seen.add(row.name);
      const t = row.last_seen, ein = row.events_in, eout = row.events_out;
      if (!t || (ein === null || ein === undefined) && (eout === null || eout === undefined)) continue;
      let n = this.nodes.get(row.name);
      if (!n) {
        n = { t, in: ein, out: eout, rin: null, rout: null, samples: [] };
        this.nodes.set(row.name, n);
        continue;
      }
      if (t <= n.t) continue; // the same reading again
      const dt = (t - n.t) / 1000;
      n.rin = rate(n.in, ein, dt);
      n.rout = rate(n.out, eout, dt);
      n.t = t; n.in = ein; n.out = eout;
      n.samples.push([t, n.rin, n.rout]);
      const cut = t - WINDOW_MS;
      let drop = 0;
      while (drop < n.samples.length && n.samples[drop][0] < cut) drop++;
      if (drop) n.samples.splice(0, drop);
    }
    for (const name of this.nodes.keys()) if (!seen.has(name)) this.nodes.delete(name);
  }

  get(name) {
    return this.nodes.get(name) || null;
  }
}

function rate(before, after, dt) {
  if (typeof before !== "number" || typeof after !== "number" || dt <= 0) return null;
  const d = after - before;
  return d < 0 ? null : d / dt;
}

/** An inline SVG sparkline of the in (blue) and out (green) rates over the last
 * minutes: ``samples`` are [t, in, out]; ``end`` is the right edge's time. */
export function sparkline(samples, end, w = 120, h = 22) {
  if (!samples || samples.length === 0) {
    return `<svg class="spark" width="${w}" height="${h}" aria-hidden="true"></svg>`;
  }
  // the x axis spans the history kept: a minute at first, growing to WINDOW_MS
  const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, end - samples[0][0]));
  const start = end - span;
  let max = 1;
  for (const s of samples) {
    if (s[1] > max) max = s[1];
    if (s[2] > max) max = s[2];
  }
  const x = (t) => (((t - start) / span) * (w - 2) + 1).toFixed(1);
  const y = (v) => (h - 1 - (v / max) * (h - 3)).toFixed(1);
  const line = (i) => {
    let pts = "";
    for (const s of samples) if (s[i] !== null) pts += `${x(s[0])},${y(s[i])} `;
    return pts;
  };
  const last = samples[samples.length - 1];
  const title = `in ${fmt(last[1])}/s, out ${fmt(last[2])}/s; peak ${fmt(max)}/s ` +
    `(last ${Math.round(span / 60000)} min)`;
  return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img">` +
    `<title>${title}</title>` +
    `<line x1="0" y1="${h - 0.5}" x2="${w}" y2="${h - 0.5}" stroke="#e2e8f0"/>` +
    `<polyline fill="none" stroke="#2b6cb0" stroke-width="1.3" points="${line(1)}"/>` +
    `<polyline fill="none" stroke="#2f855a" stroke-width="1.3" stroke-dasharray="3 1.5" points="${line(2)}"/>` +
    (last[1] !== null ? `<circle cx="${x(last[0])}" cy="${y(last[1])}" r="1.8" fill="#2b6cb0"/>` : "") +
    `</svg>`;
}

function fmt(v) {
  return v === null || v === undefined ? "–" : v < 10 ? v.toFixed(1) : Math.round(v).toString();
}
