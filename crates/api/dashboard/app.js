// bourse live dashboard. Plain JavaScript, no dependencies, served by the binary itself.
//
// Data flow: one snapshot of every stock with its analyst target (`GET /stocks?include=
// technical_analysis`) on start, on every (re)connect of the stream and every 30 s (slower when the
// API's quota asks for it, see `refreshDelay`); live `tick`,
// `target_hit` and `analysis` events from `GET /stocks/stream` in between. The selected stock's
// charts load its recent ticks and the last hour of 1-minute bars with an indicator overlay.
//
// Bounded by design, whatever the tick rate: one table row per stock, created once and updated
// in place (text nodes are reused); events only mark rows dirty and one animation frame repaints
// what changed; the tick chart keeps a fixed-size ring buffer and the bar chart the last hour.
'use strict';

(() => {
  const TICK_CAP = 600; // points of the tick chart (ring buffer)
  const BAR_MINUTES = 60; // the bar chart's window
  const MIN_BAR_MINUTES = 20; // narrowest window, so that a short history keeps slim candles
  const SNAPSHOT_EVERY_MS = 30000;
  const BARS_EVERY_MS = 30000;
  const MAX_RETRY_MS = 30000;

  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const palette = {
    tick: color('--accent'),
    up: color('--up'),
    down: color('--down'),
    overlay: color('--overlay'),
    target: color('--target'),
    grid: '#23324f',
    label: '#94a3b8',
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'),
    count: $('count'),
    rate: $('rate'),
    updated: $('updated'),
    notice: $('notice'),
    tbody: document.querySelector('#stocks tbody'),
    empty: $('empty'),
    chartName: $('chart-name'),
    chartPrice: $('chart-price'),
    tickCount: $('tick-count'),
    ticksCanvas: $('ticks-chart'),
    barsCanvas: $('bars-chart'),
    overlay: $('overlay'),
  };

  const priceFormat = new Intl.NumberFormat('en-US', {
    minimumFractionDigits: 2,
    maximumFractionDigits: 6,
    useGrouping: false,
  });
  const fmtPrice = (p) => (Number.isFinite(p) ? priceFormat.format(p) : '—');
  const pad = (n) => String(n).padStart(2, '0');
  const fmtTime = (ms) => {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };
  const fmtMinute = (ms) => {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  };

  // ---- model --------------------------------------------------------------------------------

  /** id -> stock: {id, name, price, prev, availability, at, analysis, seq, aseq, cells} */
  const stocks = new Map();
  /** Stocks changed since the last frame; at most one entry per stock. */
  const dirty = new Set();
  let seq = 0; // orders live events against snapshots
  let lastTickAt = 0;
  let selectedId = null;
  let snapshotLoaded = false; // until then, which stock comes first by name is not known
  let frame = 0;
  let chartDirty = false;

  // Ticks per second over the last 5 seconds, in one-second buckets.
  const rateBuckets = new Uint32Array(5);
  let rateSecond = Math.floor(Date.now() / 1000);
  function rollRate(now) {
    if (now - rateSecond >= 5) rateBuckets.fill(0);
    else for (let sec = rateSecond + 1; sec <= now; sec += 1) rateBuckets[sec % 5] = 0;
    if (now > rateSecond) rateSecond = now;
  }
  function countTick() {
    const now = Math.floor(Date.now() / 1000);
    rollRate(now);
    rateBuckets[now % 5] += 1;
  }
  /** Over the four whole seconds before this one (this one is still counting). */
  function ticksPerSecond() {
    const now = Math.floor(Date.now() / 1000);
    rollRate(now);
    let sum = 0;
    for (let sec = now - 4; sec < now; sec += 1) sum += rateBuckets[((sec % 5) + 5) % 5];
    return sum / 4;
  }

  /** A fixed-size ring of (time, price) points. */
  class Ring {
    constructor(cap) {
      this.cap = cap;
      this.t = new Float64Array(cap);
      this.v = new Float64Array(cap);
      this.start = 0;
      this.len = 0;
    }
    clear() {
      this.start = 0;
      this.len = 0;
    }
    lastTime() {
      return this.len ? this.t[(this.start + this.len - 1) % this.cap] : -Infinity;
    }
    push(t, v) {
      // A late or repeated tick (a stock's ticks are unique by timestamp): the line only moves
      // forward.
      if (t <= this.lastTime()) return;
      let i;
      if (this.len === this.cap) {
        i = this.start;
        this.start = (this.start + 1) % this.cap;
      } else {
        i = (this.start + this.len) % this.cap;
        this.len += 1;
      }
      this.t[i] = t;
      this.v[i] = v;
    }
    time(k) {
      return this.t[(this.start + k) % this.cap];
    }
    value(k) {
      return this.v[(this.start + k) % this.cap];
    }
  }

  const chart = {
    ticks: new Ring(TICK_CAP),
    /** 1-minute bars {t, o, h, l, c} of the last hour, oldest first. */
    bars: [],
    /** Overlay lines: arrays of {t, v}, one per field of the indicator. */
    overlay: [],
    loading: false,
    /** Live ticks that arrive while the history loads. */
    early: [],
    barsTimer: 0,
    barsRequest: 0,
    ticksRequest: 0,
  };

  // ---- table --------------------------------------------------------------------------------

  function cell(tr, className) {
    const td = document.createElement('td');
    if (className) td.className = className;
    td.appendChild(document.createTextNode(''));
    tr.appendChild(td);
    return td;
  }

  function setText(node, text) {
    const t = node.firstChild;
    if (t.data !== text) t.data = text;
  }

  function setClass(node, name) {
    if (node.className !== name) node.className = name;
  }

  function addStock(id, name) {
    const tr = document.createElement('tr');
    tr.dataset.id = id;
    tr.tabIndex = 0;
    tr.setAttribute('aria-selected', 'false');
    const cells = {
      tr,
      name: cell(tr, 'name'),
      price: cell(tr, 'num price'),
      move: cell(tr, 'num move'),
      availability: cell(tr, 'num availability'),
      target: cell(tr, 'num target'),
      hit: document.createElement('td'),
      time: cell(tr, 'num time'),
    };
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.appendChild(document.createTextNode('—'));
    cells.hit.className = 'hit';
    cells.hit.appendChild(badge);
    tr.insertBefore(cells.hit, cells.time);
    cells.badge = badge;
    setText(cells.name, name);

    const stock = {
      id, name, price: NaN, prev: NaN, availability: null, at: 0, analysis: null, seq: 0, aseq: 0, cells,
    };
    stocks.set(id, stock);
    // Rows stay ordered by name, like `GET /stocks`.
    let before = null;
    for (const row of ui.tbody.rows) {
      const other = stocks.get(row.dataset.id);
      if (other && other.name > name) {
        before = row;
        break;
      }
    }
    ui.tbody.insertBefore(tr, before);
    ui.empty.hidden = true;
    setText(ui.count, `${stocks.size} stock${stocks.size === 1 ? '' : 's'}`);
    if (selectedId === null && snapshotLoaded) select(id);
    return stock;
  }

  function render(s) {
    const c = s.cells;
    setText(c.price, fmtPrice(s.price));
    const move = s.price - s.prev;
    const dir = move > 0 ? 'up' : move < 0 ? 'down' : '';
    setClass(c.price, `num price ${dir}`);
    setClass(c.move, `num move ${dir}`);
    setText(c.move, Number.isFinite(move) ? `${move > 0 ? '▲' : move < 0 ? '▼' : ''} ${fmtPrice(Math.abs(move))}` : '');
    setText(c.availability, s.availability === null ? '—' : String(s.availability));
    const a = s.analysis;
    setText(c.target, a ? `${a.type === 'UP' ? '▲' : '▼'} ${fmtPrice(a.target)}` : '—');
    setText(c.badge, a ? (a.target_hit ? 'hit' : 'not yet') : '—');
    setClass(c.badge, a ? (a.target_hit ? 'badge hit' : 'badge waiting') : 'badge');
    const hit = a ? String(a.target_hit) : '';
    if (c.tr.dataset.targetHit !== hit) c.tr.dataset.targetHit = hit;
    setText(c.time, s.at ? fmtTime(s.at) : '—');
  }

  function markDirty(stock) {
    dirty.add(stock);
    schedule();
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function flush() {
    frame = 0;
    for (const s of dirty) render(s);
    dirty.clear();
    setText(ui.updated, lastTickAt ? `last tick ${fmtTime(lastTickAt)}` : 'no tick yet');
    if (chartDirty) {
      chartDirty = false;
      drawCharts();
    }
  }

  function updateSummary() {
    setText(ui.rate, `${ticksPerSecond().toFixed(1)} ticks/s`);
  }

  function showNotice(text) {
    if (text) setText(ui.notice, text);
    ui.notice.hidden = !text;
  }
  ui.notice.appendChild(document.createTextNode(''));

  // ---- selection and charts -----------------------------------------------------------------

  function select(id) {
    const stock = stocks.get(id);
    if (!stock || selectedId === id) return;
    const old = stocks.get(selectedId);
    if (old) old.cells.tr.setAttribute('aria-selected', 'false');
    stock.cells.tr.setAttribute('aria-selected', 'true');
    selectedId = id;
    setText(ui.chartName, stock.name);
    chart.ticks.clear();
    chart.bars = [];
    chart.overlay = [];
    chart.early = [];
    chartDirty = true;
    schedule();
    loadTicks(stock);
    loadBars();
  }

  ui.tbody.addEventListener('click', (e) => {
    const tr = e.target.closest('tr');
    if (tr) select(tr.dataset.id);
  });
  ui.tbody.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' && e.key !== ' ') return;
    const tr = e.target.closest('tr');
    if (tr) {
      e.preventDefault();
      select(tr.dataset.id);
    }
  });
  ui.overlay.addEventListener('change', () => loadBars());

  // The API's quota (anonymous callers: 100 requests a rolling day by default) as its
  // `RateLimit-*` headers last reported it. Live data comes over the stream, which is not
  // counted; the periodic refreshes of the snapshot and of the bars are paced so that a page
  // left open all day stays within the quota (see `refreshDelay`).
  const quota = { remaining: null, windowMs: 86400000, retryAt: 0, notedAt: 0 };

  /**
   * Takes the quota from a response to a request sent at `sentAt`. Answers to requests that were
   * in flight together may arrive in another order than the server counted them; among those
   * the lowest count is the latest. A request sent after the last noted answer arrived was
   * counted after everything noted so far, so its count stands (it may be higher again once
   * old requests left the rolling window).
   */
  function noteQuota(r, sentAt) {
    const remaining = r.headers.get('RateLimit-Remaining');
    if (remaining !== null && remaining !== '') {
      const value = Number(remaining);
      const overlapping = quota.remaining !== null && sentAt < quota.notedAt;
      quota.remaining = overlapping ? Math.min(quota.remaining, value) : value;
      quota.notedAt = Math.max(quota.notedAt, performance.now());
    }
    const policy = /w=(\d+)/.exec(r.headers.get('RateLimit-Policy') || '');
    if (policy) quota.windowMs = Number(policy[1]) * 1000;
    if (r.status === 429) {
      quota.remaining = 0;
      quota.retryAt = Date.now() + Number(r.headers.get('Retry-After') || 60) * 1000;
    }
  }

  /**
   * How long to wait before a periodic refresh that costs `cost` requests: `base` without a
   * quota; else long enough that refreshing at this pace for a whole window spends at most
   * half of what is left (the other half is for the user's clicks), and never before a
   * `Retry-After` has passed.
   */
  function refreshDelay(base, cost) {
    let delay = base;
    if (quota.remaining !== null) {
      const refreshes = Math.max(quota.remaining / 2 / cost, 1);
      delay = Math.max(delay, quota.windowMs / refreshes);
    }
    return Math.max(delay, quota.retryAt - Date.now());
  }

  async function getJSON(path) {
    const sentAt = performance.now();
    const r = await fetch(path, { headers: { Accept: 'application/json' } });
    noteQuota(r, sentAt);
    if (!r.ok) {
      const err = new Error(`${path} answered ${r.status}`);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  async function loadTicks(stock) {
    const request = (chart.ticksRequest += 1);
    const current = () => request === chart.ticksRequest;
    chart.loading = true;
    try {
      const rows = await getJSON(`/stocks/${encodeURIComponent(stock.id)}/ticks?limit=${TICK_CAP}`);
      if (!current()) return;
      for (let i = rows.length - 1; i >= 0; i -= 1) {
        chart.ticks.push(Date.parse(rows[i].timestamp), rows[i].price);
      }
      for (const [t, v] of chart.early) chart.ticks.push(t, v);
    } catch (e) {
      if (current()) showNotice(`Could not load ticks: ${e.message}`);
    } finally {
      if (current()) {
        chart.loading = false;
        chart.early = [];
        chartDirty = true;
        schedule();
      }
    }
  }

  function parseOverlay(rows) {
    if (!rows.length) return [];
    const fields = Object.keys(rows[0]).filter((k) => k !== 'date' && k !== 'period_start');
    return fields.map((f) => rows.map((r) => ({ t: Date.parse(r.date), v: Number(r[f]) })));
  }

  async function loadBars() {
    clearTimeout(chart.barsTimer);
    const stock = stocks.get(selectedId);
    if (!stock) return;
    const request = (chart.barsRequest += 1);
    const start = new Date(Math.floor(Date.now() / 60000) * 60000 - BAR_MINUTES * 60000).toISOString();
    const symbol = encodeURIComponent(stock.name);
    const overlay = ui.overlay.value;
    try {
      const [rows, ind] = await Promise.all([
        getJSON(`/stocks/time-series/${symbol}?start=${start}`),
        overlay
          ? getJSON(`/stocks/indicators/${symbol}/${overlay.replace('?', `?start=${start}&`)}`)
          : Promise.resolve([]),
      ]);
      if (request !== chart.barsRequest) return;
      const bars = rows
        .filter((r) => typeof r.date === 'string' && r.date.includes('T'))
        .map((r) => ({ t: Date.parse(r.date), o: r.open, h: r.high, l: r.low, c: r.close }));
      // Keep a live bar that is newer than what the server had rolled up when it answered.
      const live = chart.bars[chart.bars.length - 1];
      const last = bars[bars.length - 1];
      if (live && (!last || live.t > last.t)) bars.push(live);
      chart.bars = bars;
      chart.overlay = parseOverlay(ind);
      showNotice('');
    } catch (e) {
      if (request !== chart.barsRequest) return;
      if (e.status !== 404) showNotice(`Could not load bars: ${e.message}`);
    }
    chartDirty = true;
    schedule();
    chart.barsTimer = setTimeout(loadBars, refreshDelay(BARS_EVERY_MS, overlay ? 2 : 1));
  }

  function chartTick(t, price) {
    if (chart.loading) {
      if (chart.early.length < TICK_CAP) chart.early.push([t, price]);
    } else {
      chart.ticks.push(t, price);
    }
    const minute = Math.floor(t / 60000) * 60000;
    const last = chart.bars[chart.bars.length - 1];
    if (last && last.t === minute) {
      last.h = Math.max(last.h, price);
      last.l = Math.min(last.l, price);
      last.c = price;
    } else if (!last || minute > last.t) {
      chart.bars.push({ t: minute, o: price, h: price, l: price, c: price });
      const oldest = minute - BAR_MINUTES * 60000;
      while (chart.bars.length && chart.bars[0].t < oldest) chart.bars.shift();
    }
    chartDirty = true;
  }

  /** Sizes the canvas to its box at the device's pixel ratio; returns the context and CSS size. */
  function prepare(canvas) {
    const box = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(box.width * dpr));
    const h = Math.max(1, Math.round(box.height * dpr));
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, box.width, box.height);
    return { ctx, w: box.width, h: box.height };
  }

  const PAD = { left: 8, right: 64, top: 12, bottom: 22 };

  /** Value range with a little headroom; the target is included when it is near the data. */
  function range(lo, hi, target) {
    if (!Number.isFinite(lo)) return null;
    if (target !== null && target >= lo - (hi - lo) && target <= hi + (hi - lo)) {
      lo = Math.min(lo, target);
      hi = Math.max(hi, target);
    }
    const span = hi - lo || Math.abs(hi) * 0.01 || 1;
    return { lo: lo - span * 0.08, hi: hi + span * 0.08 };
  }

  /** A round grid step (1, 2 or 5 times a power of ten) giving three to six lines. */
  function niceStep(span) {
    const raw = span / 5;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const n = raw / magnitude;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * magnitude;
  }

  function frameAxes(ctx, w, h, y, x0, x1, xLabel) {
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.strokeStyle = palette.grid;
    ctx.fillStyle = palette.label;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'left';
    const bottom = h - PAD.bottom;
    const step = niceStep(y.hi - y.lo);
    const decimals = Math.min(6, Math.max(2, -Math.floor(Math.log10(step))));
    for (let k = Math.ceil(y.lo / step); k * step <= y.hi; k += 1) {
      const v = k * step;
      const py = Math.round(y.px(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(PAD.left, py);
      ctx.lineTo(w - PAD.right, py);
      ctx.stroke();
      ctx.fillText(v.toFixed(decimals), w - PAD.right + 6, py);
    }
    ctx.textBaseline = 'top';
    ctx.textAlign = 'center';
    for (let i = 0; i <= 3; i += 1) {
      const t = x0 + ((x1 - x0) * i) / 3;
      const px = PAD.left + ((w - PAD.left - PAD.right) * i) / 3;
      ctx.textAlign = i === 0 ? 'left' : i === 3 ? 'right' : 'center';
      ctx.fillText(xLabel(t), px, bottom + 5);
    }
  }

  function targetLine(ctx, w, y, analysis) {
    if (!analysis) return;
    const py = y.px(analysis.target);
    if (py < PAD.top || py > y.bottom) return;
    ctx.save();
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = palette.target;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(PAD.left, py);
    ctx.lineTo(w - PAD.right, py);
    ctx.stroke();
    ctx.restore();
  }

  function message(ctx, w, h, text) {
    ctx.fillStyle = palette.label;
    ctx.font = '13px system-ui, sans-serif';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(text, w / 2, h / 2);
  }

  function yScale(r, h) {
    const bottom = h - PAD.bottom;
    return { ...r, bottom, px: (v) => bottom - ((v - r.lo) / (r.hi - r.lo)) * (bottom - PAD.top) };
  }

  function drawTicks(stock) {
    const { ctx, w, h } = prepare(ui.ticksCanvas);
    const ring = chart.ticks;
    let points = 0;
    if (ring.len === 0) {
      message(ctx, w, h, chart.loading ? 'loading…' : 'waiting for ticks…');
    } else {
      let lo = Infinity;
      let hi = -Infinity;
      for (let k = 0; k < ring.len; k += 1) {
        const v = ring.value(k);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const analysis = stock && stock.analysis;
      const y = yScale(range(lo, hi, analysis ? analysis.target : null), h);
      const t0 = ring.time(0);
      const t1 = Math.max(ring.lastTime(), t0 + 1000);
      const px = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (w - PAD.left - PAD.right);
      frameAxes(ctx, w, h, y, t0, t1, fmtTime);
      targetLine(ctx, w, y, analysis);
      ctx.strokeStyle = palette.tick;
      ctx.lineWidth = 2;
      ctx.lineJoin = 'round';
      ctx.beginPath();
      for (let k = 0; k < ring.len; k += 1) {
        const x = px(ring.time(k));
        const yy = y.px(ring.value(k));
        if (k === 0) ctx.moveTo(x, yy);
        else ctx.lineTo(x, yy);
        points += 1;
      }
      if (ring.len === 1) ctx.lineTo(px(t1), y.px(ring.value(0)));
      ctx.stroke();
      ctx.fillStyle = palette.tick;
      ctx.beginPath();
      ctx.arc(px(ring.lastTime()), y.px(ring.value(ring.len - 1)), 3, 0, Math.PI * 2);
      ctx.fill();
    }
    ui.ticksCanvas.dataset.points = String(points);
    setText(ui.tickCount, String(ring.len));
  }

  function drawBars(stock) {
    const { ctx, w, h } = prepare(ui.barsCanvas);
    const now = Date.now();
    const t1 = Math.floor(now / 60000) * 60000 + 60000;
    const bars = chart.bars.filter((b) => b.t >= t1 - (BAR_MINUTES + 1) * 60000);
    // From the first bar of the hour, so that a short history still fills the width.
    const t0 = Math.min(bars.length ? bars[0].t : t1, t1 - (MIN_BAR_MINUTES + 1) * 60000);
    let overlayPoints = 0;
    if (bars.length === 0) {
      message(ctx, w, h, 'no bars in the last hour yet');
    } else {
      let lo = Infinity;
      let hi = -Infinity;
      for (const b of bars) {
        lo = Math.min(lo, b.l);
        hi = Math.max(hi, b.h);
      }
      for (const line of chart.overlay) {
        for (const p of line) {
          if (p.t >= t0 && Number.isFinite(p.v)) {
            lo = Math.min(lo, p.v);
            hi = Math.max(hi, p.v);
          }
        }
      }
      const analysis = stock && stock.analysis;
      const y = yScale(range(lo, hi, analysis ? analysis.target : null), h);
      const slot = (w - PAD.left - PAD.right) / ((t1 - t0) / 60000);
      const px = (t) => PAD.left + ((t - t0) / 60000 + 0.5) * slot;
      frameAxes(ctx, w, h, y, t0, t1, fmtMinute);
      targetLine(ctx, w, y, analysis);
      const body = Math.max(1, slot * 0.7);
      for (const b of bars) {
        const x = px(b.t);
        ctx.strokeStyle = ctx.fillStyle = b.c >= b.o ? palette.up : palette.down;
        ctx.lineWidth = 1;
        ctx.beginPath();
        ctx.moveTo(Math.round(x) + 0.5, y.px(b.h));
        ctx.lineTo(Math.round(x) + 0.5, y.px(b.l));
        ctx.stroke();
        const top = y.px(Math.max(b.o, b.c));
        const height = Math.max(1, y.px(Math.min(b.o, b.c)) - top);
        ctx.fillRect(x - body / 2, top, body, height);
      }
      ctx.strokeStyle = palette.overlay;
      ctx.lineWidth = 2;
      for (const line of chart.overlay) {
        ctx.beginPath();
        let started = false;
        for (const p of line) {
          if (p.t < t0 || !Number.isFinite(p.v)) continue;
          const x = px(p.t);
          const yy = y.px(p.v);
          if (started) ctx.lineTo(x, yy);
          else ctx.moveTo(x, yy);
          started = true;
          overlayPoints += 1;
        }
        ctx.stroke();
      }
    }
    ui.barsCanvas.dataset.bars = String(bars.length);
    ui.barsCanvas.dataset.overlay = String(overlayPoints);
  }

  function drawCharts() {
    const stock = stocks.get(selectedId);
    setText(ui.chartPrice, stock ? fmtPrice(stock.price) : '');
    drawTicks(stock);
    drawBars(stock);
  }

  new ResizeObserver(() => {
    chartDirty = true;
    schedule();
  }).observe(ui.ticksCanvas);

  // ---- live data ----------------------------------------------------------------------------

  function applyTick(d) {
    const t = Date.parse(d.timestamp);
    const stock = stocks.get(d.stock_id) || addStock(d.stock_id, d.name);
    countTick();
    if (t < stock.at) return; // older than what is shown: history only, as on the server
    if (d.price !== stock.price) stock.prev = stock.price;
    stock.price = d.price;
    stock.availability = d.availability;
    stock.at = t;
    stock.seq = ++seq;
    lastTickAt = Math.max(lastTickAt, t);
    markDirty(stock);
    if (stock.id === selectedId) chartTick(t, d.price);
  }

  function applyAnalysis(d) {
    const stock = stocks.get(d.stock_id);
    if (!stock) return;
    stock.analysis = { target: d.target, type: d.type, target_hit: d.target_hit };
    stock.aseq = ++seq;
    markDirty(stock);
    if (stock.id === selectedId) chartDirty = true;
  }

  function applyTargetHit(d) {
    const stock = stocks.get(d.stock_id);
    if (!stock) return;
    const a = stock.analysis;
    if (a && a.target === d.target && a.type === d.type) a.target_hit = true;
    else stock.analysis = { target: d.target, type: d.type, target_hit: true };
    stock.aseq = ++seq;
    markDirty(stock);
  }

  let snapshotTimer = 0;
  async function refreshSnapshot() {
    clearTimeout(snapshotTimer);
    const asked = seq;
    try {
      const rows = await getJSON('/stocks?include=technical_analysis');
      for (const r of rows) {
        const stock = stocks.get(r.stock_id) || addStock(r.stock_id, r.name);
        // Live events newer than the request win over the snapshot.
        if (stock.seq <= asked) {
          if (r.price !== stock.price) stock.prev = stock.price;
          stock.price = r.price;
          stock.availability = r.availability;
        }
        if (stock.aseq <= asked) stock.analysis = r.technical_analysis;
        if (stock.id === selectedId) chartDirty = true; // its price label and target line
        markDirty(stock);
      }
      ui.empty.hidden = stocks.size > 0;
      snapshotLoaded = true;
      if (selectedId === null && ui.tbody.rows.length) select(ui.tbody.rows[0].dataset.id);
      showNotice('');
    } catch (e) {
      showNotice(`Could not load stocks: ${e.message}`);
    }
    snapshotTimer = setTimeout(refreshSnapshot, refreshDelay(SNAPSHOT_EVERY_MS, 1));
  }

  function listen(source, name, apply) {
    source.addEventListener(name, (e) => {
      try {
        apply(JSON.parse(e.data));
      } catch (err) {
        showNotice(`Bad ${name} event: ${err.message}`);
      }
    });
  }

  let retry = 1000;
  function connect() {
    const source = new EventSource('/stocks/stream');
    listen(source, 'tick', applyTick);
    listen(source, 'analysis', applyAnalysis);
    listen(source, 'target_hit', applyTargetHit);
    source.onopen = () => {
      retry = 1000;
      ui.status.dataset.state = 'live';
      setText(ui.status, 'live');
      refreshSnapshot(); // whatever happened while disconnected
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. the server answered an error): retry with backoff.
        ui.status.dataset.state = 'offline';
        setText(ui.status, 'offline, retrying');
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, MAX_RETRY_MS);
      } else {
        ui.status.dataset.state = 'connecting';
        setText(ui.status, 'reconnecting…');
      }
    };
  }

  ui.status.textContent = '';
  ui.status.appendChild(document.createTextNode('connecting…'));
  for (const id of ['count', 'rate', 'updated', 'chart-name', 'chart-price', 'tick-count']) {
    const node = $(id);
    node.textContent = node.textContent; // exactly one text node each, updated in place
    if (!node.firstChild) node.appendChild(document.createTextNode(''));
  }

  setInterval(updateSummary, 1000);
  refreshSnapshot();
  connect();

  /** For tests and the curious: sizes of everything the page holds. */
  window.bourseDashboard = {
    palette,
    stats: () => ({
      stocks: stocks.size,
      rows: ui.tbody.rows.length,
      dirty: dirty.size,
      tickPoints: chart.ticks.len,
      tickCapacity: TICK_CAP,
      earlyTicks: chart.early.length,
      bars: chart.bars.length,
      overlayLines: chart.overlay.length,
      selected: selectedId,
    }),
    /** The quota as last reported, and the pause before the next snapshot refresh. */
    pacing: () => ({ remaining: quota.remaining, snapshotDelayMs: refreshDelay(SNAPSHOT_EVERY_MS, 1) }),
    select,
  };
})();
