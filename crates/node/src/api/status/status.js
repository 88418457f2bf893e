// The node's status page: polls the public API (status, metrics, bans, peers, validators),
// follows the event stream, and draws height, finality latency and kernel drops over the last
// minutes. Plain ES2020 with no dependency and no build step; text from the API is always set as
// text, never parsed as markup.

/** History the charts show, ms. */
const WINDOW_MS = 5 * 60 * 1000;
/** `/v1/status` and `/metrics` are each polled this often, ms: one request each every 2 s is far
 * under the public API's per-client budget (`api.rate_per_sec`, 50 by default). */
const FAST_POLL_MS = 2000;
/** Bans and peers are polled this often, ms (bans also soon after a ban or unban event). */
const LIST_POLL_MS = 5000;
/** Validators and the latest block's signers are polled this often, ms: the set changes only
 * with staking, and the latest block carries all of its transactions. */
const VALIDATORS_POLL_MS = 10000;
/** A request not answered within this is abandoned as failed, ms. */
const REQUEST_TIMEOUT_MS = 5000;
/** Wait before the first retry of a failed request or of the event stream, ms; it doubles with
 * each failure in a row, up to `RETRY_MAX_MS`. */
const RETRY_FIRST_MS = 1000;
/** Longest wait between retries, ms. */
const RETRY_MAX_MS = 30000;
/** Shortest time between two ban list refreshes asked for by ban events, ms: a wave of bans
 * costs one request per second. */
const BAN_REFRESH_MIN_MS = 1000;
/** Charts draw at most one point per this span, ms (600 over the window, about as many as a
 * chart is wide in pixels); values in one span are merged, keeping the highest. */
const BUCKET_MS = WINDOW_MS / 600;
/** Points kept per chart series: one per span over the window, with room to spare. */
const MAX_POINTS = 1000;
/** Finality latencies kept for their median: the window's blocks at up to 60 per second. */
const MAX_LATENCIES = 18000;
/** Entries kept in the event list. */
const MAX_EVENTS = 40;
/** Rows shown in the peer and validator tables (the API bounds the ban list itself). */
const MAX_ROWS = 100;
/** Charts and countdowns are refreshed at least this often, so the window slides, ms. */
const TICK_MS = 1000;
/** Delay that gathers the changes of one moment into one redraw, ms. */
const REDRAW_DELAY_MS = 100;
/** Series colours, in order of first appearance. */
const COLORS = ['#0969da', '#cf222e', '#1a7f37', '#9a6700', '#8250df', '#bf3989', '#1b7c83',
  '#953800', '#57606a', '#0550ae', '#a40e26', '#116329', '#6639ba', '#99286e', '#4d2d00', '#3e4b5b'];
/** Colour of the drops chart's line of all reasons together. */
const TOTAL_COLOR = '#8c959f';
/** Metric families the page reads; every other line of `/metrics` is skipped unparsed. */
const FAMILIES = new Set(['firewall_packets_total', 'firewall_mode', 'p2p_bans_active',
  'p2p_connections_refused_total']);
/** IP protocol numbers named in drop events. */
const PROTOCOLS = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };

const byId = (id) => document.getElementById(id);

// ---- state ----

/** Timed values, oldest first, at most `max`; with `merge`, one per `BUCKET_MS`, the highest. */
class Series {
  constructor(max = MAX_POINTS, merge = true) {
    this.points = [];
    this.max = max;
    this.merge = merge;
  }

  push(t, value) {
    const last = this.points[this.points.length - 1];
    if (this.merge && last && Math.floor(last[0] / BUCKET_MS) === Math.floor(t / BUCKET_MS)) {
      last[1] = Math.max(last[1], value);
      return;
    }
    this.points.push([t, value]);
    if (this.points.length > this.max) this.points.shift();
  }

  /** Forgets the points older than the window. */
  prune(now) {
    let old = 0;
    while (old < this.points.length && this.points[old][0] < now - WINDOW_MS) old += 1;
    if (old > 0) this.points.splice(0, old);
  }

  highest() {
    return this.points.reduce((m, [, v]) => Math.max(m, v), 0);
  }
}

const page = {
  height: null,
  filterMode: null,
  nodeKey: null,
  heights: new Series(),
  /** The chart's finality latencies: the worst of each span. */
  latencies: new Series(),
  /** Every block's finality latency, for the median. */
  latencySamples: new Series(MAX_LATENCIES, false),
  /** Kernel drops per second, all reasons together: one point per `/metrics` poll. */
  dropTotal: new Series(),
  /** Kernel drops per second by reason (`reason`, or `reason (monitor)` for would-be drops). */
  drops: new Map(),
  colors: new Map(),
  /** The previous `/metrics` counters, to turn the next into rates. */
  counters: null,
  /** Ban list "until" cells with their deadline, refreshed every tick. */
  untils: [],
  /** Sources failing now: name -> { error, retryAt }. */
  failing: new Map(),
  stream: { open: false, failures: 0, retryAt: 0 },
};

// ---- formatting ----

const number = (n, digits = 0) =>
  // `+ 0` turns -0 into 0.
  (n + 0).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });

const rate = (perSec) => (perSec < 10 ? number(perSec, 1) : number(perSec));

const short = (text) => (text.length > 18 ? `${text.slice(0, 8)}…${text.slice(-6)}` : text);

const clock = (ms) => new Date(ms).toLocaleTimeString('en-GB', { hour12: false });

/** A duration as `1h 02m`, `3m 20s` or `45s`. */
function span(ms) {
  const secs = Math.max(0, Math.round(ms / 1000));
  if (secs >= 3600) return `${Math.floor(secs / 3600)}h ${String(Math.floor(secs / 60) % 60).padStart(2, '0')}m`;
  if (secs >= 60) return `${Math.floor(secs / 60)}m ${String(secs % 60).padStart(2, '0')}s`;
  return `${secs}s`;
}

function colorOf(key) {
  if (!page.colors.has(key)) page.colors.set(key, COLORS[page.colors.size % COLORS.length]);
  return page.colors.get(key);
}

/** The median of `values` (not empty). */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// ---- fetching ----

/** GET `path` as JSON (or text when `asText`), failing on a status other than 2xx and after
 * `REQUEST_TIMEOUT_MS`; a failure carries the server's Retry-After, if any. */
async function get(path, asText = false) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  try {
    let response;
    try {
      response = await fetch(path, { signal: abort.signal, cache: 'no-store' });
    } catch (e) {
      throw new Error(e.name === 'AbortError' ? `${path}: no answer within ${span(REQUEST_TIMEOUT_MS)}` : `${path}: unreachable`);
    }
    if (!response.ok) {
      const error = new Error(`${path}: HTTP ${response.status}`);
      error.retryAfterMs = Number(response.headers.get('retry-after')) * 1000 || 0;
      throw error;
    }
    return asText ? await response.text() : await response.json();
  } finally {
    clearTimeout(timer);
  }
}

const retryDelay = (failures, atLeast = 0) =>
  Math.max(atLeast, Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (failures - 1)));

/** Calls `load` every `every` ms and hands its result to `show`; after a failure, retries with
 * backoff and marks the page disconnected until a call succeeds. */
class Poller {
  constructor(name, every, load, show) {
    Object.assign(this, { name, every, load, show });
    this.timer = null;
    this.busy = false;
    this.failures = 0;
    this.lastRun = 0;
  }

  async run() {
    if (this.busy) return;
    clearTimeout(this.timer);
    this.busy = true;
    this.lastRun = Date.now();
    let data = null;
    let wait = this.every;
    try {
      data = await this.load();
      this.failures = 0;
      page.failing.delete(this.name);
    } catch (e) {
      this.failures += 1;
      wait = retryDelay(this.failures, e.retryAfterMs);
      page.failing.set(this.name, { error: e.message, retryAt: Date.now() + wait });
    }
    this.busy = false;
    this.timer = setTimeout(() => this.run(), wait);
    showConnection();
    // Outside the try: a fault in the page is an error to see, not a lost connection.
    if (data !== null) this.show(data);
  }

  /** Runs soon, but not sooner than `BAN_REFRESH_MIN_MS` after the last run, nor while failing. */
  soon() {
    if (this.busy || this.failures > 0) return;
    clearTimeout(this.timer);
    const wait = Math.max(0, this.lastRun + BAN_REFRESH_MIN_MS - Date.now());
    this.timer = setTimeout(() => this.run(), wait);
  }
}

// ---- connection state ----

function showConnection() {
  const conn = byId('conn');
  const [failing] = page.failing.values();
  const now = Date.now();
  let state = 'live';
  let text = 'live';
  if (failing) {
    state = 'disconnected';
    text = `disconnected: ${failing.error}; retrying in ${span(failing.retryAt - now)}`;
  } else if (!page.stream.open) {
    state = page.stream.failures > 0 ? 'disconnected' : 'connecting';
    text = state === 'connecting' ? 'connecting'
      : `event stream closed; reconnecting in ${span(page.stream.retryAt - now)}`;
  }
  conn.dataset.state = state;
  byId('conn-text').textContent = text;
  document.body.classList.toggle('stale', page.failing.has('status'));
}

// ---- the event stream ----

function openStream() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(`${scheme}//${location.host}/v1/events`);
  socket.addEventListener('open', () => {
    page.stream.open = true;
    page.stream.failures = 0;
    showConnection();
  });
  socket.addEventListener('message', (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    onEvent(event);
  });
  socket.addEventListener('close', () => {
    page.stream.open = false;
    page.stream.failures += 1;
    const wait = retryDelay(page.stream.failures);
    page.stream.retryAt = Date.now() + wait;
    setTimeout(openStream, wait);
    showConnection();
  });
}

function onEvent(event) {
  const now = Date.now();
  switch (event.type) {
    case 'finality':
      page.latencies.push(now, event.latency_ms);
      page.latencySamples.push(now, event.latency_ms);
      setHeight(event.height, now);
      if (event.evidence > 0) {
        addEvent(now, `evidence: ${event.evidence} equivocation(s) surfaced at height ${event.height}`);
      }
      redraw();
      break;
    case 'ban':
      addEvent(now, `ban ${event.target} (${event.reason}, offence ${event.offence}) until ${clock(event.until_ms)}: ${event.detail}`);
      pollers.bans.soon();
      break;
    case 'unban':
      addEvent(now, `unban ${event.target}`);
      pollers.bans.soon();
      break;
    case 'drop': {
      const protocol = PROTOCOLS[event.protocol] || `protocol ${event.protocol}`;
      const port = event.port ? ` port ${event.port}` : '';
      addEvent(now, `kernel drop (${event.reason}): ${event.source} ${protocol}${port}`);
      break;
    }
    case 'lagged':
      addEvent(now, `the page fell behind and missed ${event.missed} events`);
      break;
    default:
      break;
  }
}

function addEvent(now, text) {
  const list = byId('events');
  const item = document.createElement('li');
  const time = document.createElement('time');
  time.textContent = clock(now);
  item.append(time, text);
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  byId('events-empty').hidden = true;
}

// ---- what the pollers show ----

function setHeight(height, now) {
  page.heights.push(now, height);
  if (page.height !== null && height < page.height) return;
  page.height = height;
  byId('height').textContent = number(height);
  document.title = `#${height} · xdp-node`;
}

function showStatus(status) {
  const now = Date.now();
  setHeight(status.height, now);
  page.filterMode = status.filter.mode;
  page.nodeKey = status.node_key;
  const round = status.round === null ? '–' : status.round;
  byId('height-note').textContent = `round ${round}${status.syncing ? ` · syncing, peers at ${number(status.best_peer_height)}` : ''}`;
  byId('chain').textContent = `chain ${status.chain_id}`;
  byId('peer-count').textContent = number(status.peers);
  byId('mempool').textContent = number(status.mempool.transactions);
  byId('mempool-note').textContent = `transactions, ${number(status.mempool.bytes / 1024, 1)} KiB`;
  const iface = status.filter.iface ? ` on ${status.filter.iface}` : '';
  byId('node-info').textContent = [
    `node ${status.node_key}`,
    `peer ${status.peer_id}`,
    `version ${status.version}`,
    `filter ${status.filter.mode}${iface}`,
    status.validator ? `validator, last signed at ${number(status.signed_height)}` : 'not a validator',
    `up ${span(now - status.started_ms)}`,
  ].join(' · ');
  redraw();
}

/** One sample of the text exposition format, or null: `name{k="v",...} value [timestamp]`. */
function parseSample(line) {
  let i = 0;
  while (i < line.length && line[i] !== '{' && line[i] !== ' ') i += 1;
  const name = line.slice(0, i);
  if (!FAMILIES.has(name)) return null;
  const labels = {};
  if (line[i] === '{') {
    i += 1;
    while (i < line.length && line[i] !== '}') {
      const eq = line.indexOf('=', i);
      if (eq < 0 || line[eq + 1] !== '"') return null;
      const key = line.slice(i, eq).trim();
      let value = '';
      let j = eq + 2;
      for (; j < line.length && line[j] !== '"'; j += 1) {
        if (line[j] === '\\' && j + 1 < line.length) {
          j += 1;
          value += line[j] === 'n' ? '\n' : line[j];
        } else {
          value += line[j];
        }
      }
      if (j >= line.length) return null;
      labels[key] = value;
      i = j + 1;
      if (line[i] === ',') i += 1;
    }
    i += 1;
  }
  const value = Number(line.slice(i).trim().split(' ')[0]);
  return Number.isNaN(value) ? null : { name, labels, value };
}

/** Growth of a counter from `before` to `now`, a restart (a drop to a lower value) included. */
const growth = (before, now) => (before === undefined ? 0 : now >= before ? now - before : now);

function showMetrics(text) {
  const now = Date.now();
  const drops = new Map();
  const refused = new Map();
  const bans = [];
  let kernel = false;
  for (const line of text.split('\n')) {
    if (line === '' || line[0] === '#') continue;
    const sample = parseSample(line);
    if (sample === null) continue;
    const { labels, value } = sample;
    switch (sample.name) {
      case 'firewall_packets_total':
        kernel = true;
        if (labels.verdict === 'drop') drops.set(labels.reason, value);
        if (labels.verdict === 'would_drop') drops.set(`${labels.reason} (monitor)`, value);
        break;
      case 'firewall_mode':
        if (value === 1) page.filterMode = labels.mode;
        break;
      case 'p2p_bans_active':
        if (value > 0) bans.push(`${labels.reason} ${number(value)}`);
        break;
      case 'p2p_connections_refused_total':
        refused.set(labels.rule, value);
        break;
      default:
        break;
    }
  }
  byId('ban-note').textContent = bans.join(', ');

  const before = page.counters;
  page.counters = { t: now, drops, refused };
  if (!before) return;
  const secs = Math.max(0.001, (now - before.t) / 1000);
  const rows = [];
  let total = 0;
  for (const [reason, count] of drops) {
    const perSec = growth(before.drops.get(reason), count) / secs;
    total += perSec;
    if (!page.drops.has(reason)) page.drops.set(reason, new Series());
    page.drops.get(reason).push(now, perSec);
    if (count > 0) rows.push(['kernel (XDP)', reason, perSec, count]);
  }
  for (const [rule, count] of refused) {
    const perSec = growth(before.refused.get(rule), count) / secs;
    if (count > 0) rows.push(['connection gate', rule, perSec, count]);
  }
  if (kernel) {
    page.dropTotal.push(now, total);
    byId('drop-rate').textContent = `${rate(total)}/s`;
    byId('drop-note').textContent = `${page.filterMode || 'xdp'}, all reasons`;
  } else {
    byId('drop-rate').textContent = '–';
    byId('drop-note').textContent = `no kernel counters (filter: ${page.filterMode || 'unknown'})`;
  }
  rows.sort((a, b) => b[2] - a[2] || b[3] - a[3]);
  fill(byId('drops'), byId('drops-empty'), rows, ([where, reason, perSec, count]) =>
    row([where], [reason, 'tag'], [rate(perSec), 'num'], [number(count), 'num']));
  redraw();
}

/** A table row of cells given as `[text, class, title]`; the class `tag` marks the text as a
 * label. */
function row(...cells) {
  const tr = document.createElement('tr');
  for (const [text, className, title] of cells) {
    const td = document.createElement('td');
    if (className === 'tag') {
      const tag = document.createElement('span');
      tag.className = 'tag';
      tag.textContent = text;
      td.append(tag);
    } else {
      td.textContent = text;
      if (className) td.className = className;
    }
    if (title) td.title = title;
    tr.append(td);
  }
  return tr;
}

/** Replaces the rows of `body` with `makeRow` of each item; `empty` shows when there are none. */
function fill(body, empty, items, makeRow) {
  body.replaceChildren(...items.slice(0, MAX_ROWS).map(makeRow));
  if (empty) empty.hidden = items.length > 0;
}

function showBans(answer) {
  byId('ban-count').textContent = number(answer.total);
  byId('bans-summary').textContent = answer.truncated
    ? `the first ${answer.bans.length} of ${number(answer.total)} to expire` : '';
  page.untils = [];
  fill(byId('bans'), byId('bans-empty'), answer.bans, (ban) => {
    const tr = row(
      [ban.target, 'mono wrap', ban.addresses.join(', ')],
      [ban.reason, 'tag'],
      ['', '', new Date(ban.until_ms).toString()],
      [`#${ban.offence}`, 'num'],
      [ban.detail, 'wrap'],
    );
    page.untils.push([tr.children[2], ban.until_ms]);
    return tr;
  });
  showUntils();
}

function showUntils() {
  const now = Date.now();
  for (const [td, until] of page.untils) {
    td.textContent = until > now ? `${clock(until)} (in ${span(until - now)})` : 'ended';
  }
}

function showPeers(answer) {
  const peers = answer.peers;
  const inbound = peers.filter((p) => p.direction === 'inbound').length;
  byId('peer-note').textContent = `${inbound} in, ${peers.length - inbound} out`;
  byId('peers-summary').textContent = `${peers.length} connection${peers.length === 1 ? '' : 's'}`;
  fill(byId('peers'), byId('peers-empty'), peers, (p) =>
    row([short(p.peer_id), 'mono', p.peer_id], [p.address, 'mono wrap'], [p.direction],
      [number(p.score, 1), 'num']));
}

function showValidators([set, latest]) {
  const signers = latest.commit ? new Set(latest.commit.signers) : null;
  byId('validators-summary').textContent = `${set.validators.length} at height ${number(set.height)}, total power ${number(set.total_stake)}${signers ? `; last commit at ${number(latest.height)}` : ''}`;
  fill(byId('validators'), null, set.validators, (v) => {
    const signed = signers === null ? ['–'] : signers.has(v.key) ? ['yes', 'yes'] : ['no', 'no'];
    const me = v.key === page.nodeKey ? ' (this node)' : '';
    return row([`${short(v.key)}${me}`, 'mono', v.key], [number(v.stake), 'num'],
      [`${number((100 * v.stake) / Math.max(1, set.total_stake), 1)}%`, 'num'], signed);
  });
}

function showFinality() {
  const values = page.latencySamples.points.map(([, v]) => v);
  if (values.length === 0) return;
  byId('finality').textContent = `${number(median(values))} ms`;
  byId('finality-note').textContent = `last ${number(values[values.length - 1])} ms, ${values.length} blocks`;
}

// ---- charts ----

/** A round step near `raw`: 1, 2 or 5 times a power of ten. */
function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return power * (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10);
}

/**
 * Draws `lines` (`{ points, color }`) over the window on `canvas`, with `empty` written when no
 * line has a point; `zero` starts the scale at 0, `minStep` is its smallest step. Sets and
 * returns the canvas's `data-points`: the points of its longest line.
 */
function drawChart(canvas, lines, { empty, zero = false, minStep = 0 }) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = '11px system-ui, "DejaVu Sans", sans-serif';

  const now = Date.now();
  const pad = { left: 56, right: 8, top: 8, bottom: 20 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const x = (t) => pad.left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * plotW;

  const values = lines.flatMap((l) => l.points.map(([, v]) => v));
  const count = Math.max(0, ...lines.map((l) => l.points.length));
  let lo = zero || values.length === 0 ? 0 : Math.min(...values);
  let hi = values.length === 0 ? 1 : Math.max(...values);
  const step = Math.max(minStep, niceStep(Math.max(hi - lo, minStep || 1) / 4));
  lo = Math.floor(lo / step) * step;
  hi = Math.max(lo + step, Math.ceil(hi / step) * step);
  const y = (v) => pad.top + plotH - ((v - lo) / (hi - lo)) * plotH;

  ctx.strokeStyle = '#e1e4e8';
  ctx.fillStyle = '#656d76';
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let v = lo; v <= hi + step / 2; v += step) {
    const py = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, py);
    ctx.lineTo(width - pad.right, py);
    ctx.stroke();
    ctx.fillText(number(v, step < 1 ? 1 : 0), pad.left - 6, py);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  const minutes = WINDOW_MS / 60000;
  for (let m = minutes; m >= 0; m -= 1) {
    const px = x(now - m * 60000);
    ctx.textAlign = m === minutes ? 'left' : m === 0 ? 'right' : 'center';
    ctx.fillText(m === 0 ? 'now' : `-${m} min`, m === minutes ? pad.left : px, height - pad.bottom + 5);
  }

  if (count === 0) {
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(empty, pad.left + plotW / 2, pad.top + plotH / 2);
  }
  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.left, pad.top - 2, plotW, plotH + 4);
  ctx.clip();
  ctx.lineWidth = 1.75;
  ctx.lineJoin = 'round';
  for (const { points, color } of lines) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    if (points.length === 1) {
      ctx.beginPath();
      ctx.arc(x(points[0][0]), y(points[0][1]), 2.5, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.beginPath();
    points.forEach(([t, v], i) => (i === 0 ? ctx.moveTo(x(t), y(v)) : ctx.lineTo(x(t), y(v))));
    ctx.stroke();
  }
  ctx.restore();
  canvas.dataset.points = String(count);
  return count;
}

function drawCharts() {
  const now = Date.now();
  const all = [page.heights, page.latencies, page.latencySamples, page.dropTotal];
  for (const series of [...all, ...page.drops.values()]) {
    series.prune(now);
  }
  drawChart(byId('chart-height'), [{ points: page.heights.points, color: COLORS[0] }],
    { empty: 'waiting for /v1/status', minStep: 1 });
  drawChart(byId('chart-finality'), [{ points: page.latencies.points, color: COLORS[2] }],
    { empty: 'waiting for finality events', zero: true, minStep: 1 });

  const shown = [...page.drops].filter(([, s]) => s.highest() > 0);
  const lines = shown.map(([reason, s]) => ({ points: s.points, color: colorOf(reason) }));
  const noKernel = page.counters !== null && page.counters.drops.size === 0;
  const empty = noKernel ? `no kernel counters: the filter is ${page.filterMode || 'off'}` : 'waiting for /metrics';
  // The total is drawn first, under the reasons: a flat line at 0 says that nothing is dropped.
  drawChart(byId('chart-drops'), [{ points: page.dropTotal.points, color: TOTAL_COLOR }, ...lines],
    { empty, zero: true, minStep: 1 });
  const legend = page.dropTotal.points.length ? [['all reasons', page.dropTotal, TOTAL_COLOR]] : [];
  legend.push(...shown.map(([reason, s]) => [reason, s, colorOf(reason)]));
  byId('drops-legend').replaceChildren(...legend.map(([name, s, color]) => {
    const item = document.createElement('span');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = color;
    const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
    item.append(swatch, `${name} ${rate(last)}/s`);
    return item;
  }));
  showFinality();
}

let drawPending = false;

/** Redraws the charts soon, once for all the changes of the moment. */
function redraw() {
  if (drawPending) return;
  drawPending = true;
  setTimeout(() => {
    drawPending = false;
    drawCharts();
  }, REDRAW_DELAY_MS);
}

// ---- start ----

const pollers = {
  status: new Poller('status', FAST_POLL_MS, () => get('/v1/status'), showStatus),
  metrics: new Poller('metrics', FAST_POLL_MS, () => get('/metrics', true), showMetrics),
  bans: new Poller('bans', LIST_POLL_MS, () => get('/v1/bans'), showBans),
  peers: new Poller('peers', LIST_POLL_MS, () => get('/v1/peers'), showPeers),
  validators: new Poller('validators', VALIDATORS_POLL_MS,
    () => Promise.all([get('/v1/validators'), get('/v1/blocks/latest')]), showValidators),
};

for (const poller of Object.values(pollers)) poller.run();
openStream();
setInterval(() => {
  drawCharts();
  showUntils();
  showConnection();
}, TICK_MS);
window.addEventListener('resize', redraw);
