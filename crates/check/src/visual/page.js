// The space-time diagram of one Chorus run: one lane per node (and per client), time to the
// right. Everything is drawn on one canvas from the JSON embedded in the page; no network.
"use strict";
(function () {
  const started = performance.now();
  const body = document.body;
  window.addEventListener("error", function (event) {
    body.dataset.error = String(event.message || event.error || "error");
  });

  const data = JSON.parse(document.getElementById("data").textContent);
  const trace = data.trace;
  const nodeLanes = trace.lanes.length;
  const lanes = trace.lanes.slice();
  for (let c = 0; c < data.clients; c++) lanes.push("client " + c);
  const laneCount = lanes.length;
  const unit = trace.time_unit ? " " + trace.time_unit : "";
  const endTime = Math.max(1, trace.shown_until === null ? data.end_time : Math.min(trace.shown_until, data.end_time));

  // ---- derived data -------------------------------------------------------------------
  // Per node lane: intervals [start, end, state|null] of role/epoch, commit ticks, crashes.
  const bands = [];
  const commits = [];
  const snapshots = [];
  const crashes = [];
  const restarts = [];
  for (let l = 0; l < nodeLanes; l++) { bands.push([]); commits.push([]); snapshots.push([]); }
  for (const sample of trace.states) {
    const list = bands[sample.lane];
    const last = list.length ? list[list.length - 1] : null;
    if (last) last[1] = sample.time;
    const prev = last ? last[2] : undefined;
    const state = sample.state;
    if (last && prev && !state) crashes.push([sample.lane, sample.time]);
    if (last && !prev && state) restarts.push([sample.lane, sample.time]);
    if (state && prev && state.commit > prev.commit) commits[sample.lane].push([sample.time, state.commit]);
    if (state && state.snapshot > 0 && (!prev || state.snapshot !== prev.snapshot)) snapshots[sample.lane].push([sample.time, state.snapshot]);
    list.push([sample.time, endTime, state]);
  }
  // Merge bands whose role and epoch are equal (commit changes alone make new samples).
  for (let l = 0; l < nodeLanes; l++) {
    const merged = [];
    for (const band of bands[l]) {
      const last = merged[merged.length - 1];
      const same = last && ((!last[2] && !band[2]) || (last[2] && band[2] && last[2].role === band[2].role && last[2].epoch === band[2].epoch));
      if (same) last[1] = band[1]; else merged.push([band[0], band[1], band[2], band[2] ? band[2].commit : 0]);
    }
    bands[l] = merged;
  }
  // Partitions: intervals with the groups they split the lanes into.
  const cuts = [];
  for (let i = 0; i < trace.cuts.length; i++) {
    const sample = trace.cuts[i];
    const end = i + 1 < trace.cuts.length ? trace.cuts[i + 1].time : endTime;
    if (sample.cut.length) cuts.push([sample.time, end, describeCut(sample.cut)]);
  }
  function describeCut(pairs) {
    const cut = new Set(pairs.map(p => p[0] + ">" + p[1]));
    // Lanes with no cut link (a crashed node the partition left out) reach everyone.
    const involved = new Array(nodeLanes).fill(false);
    for (const [a, b] of pairs) { if (a < nodeLanes) involved[a] = true; if (b < nodeLanes) involved[b] = true; }
    const seen = involved.map(i => !i);
    const groups = [];
    for (let a = 0; a < nodeLanes; a++) {
      if (seen[a]) continue;
      const group = [a]; seen[a] = true;
      for (let k = 0; k < group.length; k++) {
        const x = group[k];
        for (let b = 0; b < nodeLanes; b++) {
          if (!seen[b] && !cut.has(x + ">" + b) && !cut.has(b + ">" + x)) { seen[b] = true; group.push(b); }
        }
      }
      groups.push(group.map(l => trace.lanes[l]).join(" "));
    }
    const oneWay = pairs.filter(p => !cut.has(p[1] + ">" + p[0]));
    let text = "partition: " + groups.join("  |  ");
    const free = involved.map((i, l) => i ? null : trace.lanes[l]).filter(n => n !== null);
    if (free.length) text += "  (" + free.join(", ") + " left out)";
    if (oneWay.length) text += "  (one way: " + oneWay.map(p => trace.lanes[p[0]] + "→" + trace.lanes[p[1]]).join(", ") + ")";
    return text;
  }
  const kinds = trace.kinds;
  const messages = trace.messages; // [from, to, sent, deliveries, kind, fate, detail]
  const ops = data.ops; // [client, kind, key, value, from, call, return, status, output]
  const violations = data.violations; // [invariant, time, detail]
  // The keys a violation names ("key k3: …") mark every operation on them.
  const badKeys = new Set();
  for (const v of violations) {
    const match = /key ([^\s:,]+)/.exec(v[2]);
    if (match) badKeys.add(match[1]);
  }
  const highlighted = ops.filter(op => badKeys.has(op[2])).length;
  // The nodes the first violation names ("n5 became leader …") are marked on their lanes.
  const badLanes = new Set();
  if (violations.length) {
    for (const match of violations[0][2].matchAll(/\bn(\d+)\b/g)) badLanes.add("n" + match[1]);
  }

  // ---- colours ------------------------------------------------------------------------
  const roleColours = {
    "leader": "#ffb74d", "candidate": "#fff176", "pre-candidate": "#fffde7", "follower": "#e3f2fd",
    "primary": "#ffb74d", "primary (not acting)": "#ffe0b2", "backup": "#c8e6c9", "idle": "#eceff1",
    "view service": "#e1bee7", "view service (stuck)": "#ef9a9a", "up": "#e3f2fd",
    "running": "#e3f2fd", "paused": "#fff59d", "spare": "#eceff1", "primary (not serving)": "#ffe0b2",
    "config leader": "#ffcc80", "config candidate": "#fff176", "config pre-candidate": "#fffde7", "config follower": "#e1f5fe",
  };
  const palette = ["#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457", "#4e342e", "#558b2f", "#283593", "#9e9d24", "#00695c", "#5d4037"];
  const kindColour = kinds.map((_, i) => palette[i % palette.length]);
  // Routine traffic (heartbeats, answers, pings) is drawn faint, so the messages that change
  // something stand out.
  const quiet = kinds.map(k => /Heartbeat|Response|Ping|ViewReply|Ack|ClientRequest|ClientReply|ClientRetry/.test(k));
  const statusColours = { ok: "#66bb6a", fail: "#e57373", unknown: "#ffb74d" };

  // ---- filters ------------------------------------------------------------------------
  const laneShown = new Array(laneCount).fill(true);
  const kindShown = new Array(kinds.length).fill(true);
  function checkbox(parent, label, colour, onChange) {
    const el = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = true;
    box.addEventListener("change", () => { onChange(box.checked); layout(); draw(); });
    el.appendChild(box);
    if (colour) { const s = document.createElement("span"); s.className = "swatch"; s.style.background = colour; el.appendChild(s); }
    el.appendChild(document.createTextNode(label));
    parent.appendChild(el);
  }
  const laneFilters = document.getElementById("lane-filters");
  lanes.forEach((name, i) => checkbox(laneFilters, name, null, on => { laneShown[i] = on; }));
  const kindFilters = document.getElementById("kind-filters");
  kinds.forEach((name, i) => checkbox(kindFilters, name, kindColour[i], on => { kindShown[i] = on; }));

  // ---- summary, violations, legend ----------------------------------------------------
  const lost = messages.filter(m => m[3].length === 0).length;
  document.getElementById("summary").textContent =
    nodeLanes + " node lanes, " + data.clients + " clients, " + ops.length + " operations, " +
    messages.length + " messages (" + lost + " lost or cut)" +
    (trace.messages_dropped_from_page ? ", " + trace.messages_dropped_from_page + " more not drawn" : "") +
    ", " + cuts.length + " partitions, time 0–" + endTime + unit +
    (endTime < data.end_time ? " (the run went on to t=" + data.end_time + "; this page stops here)" : "");
  const violationsEl = document.getElementById("violations");
  if (!violations.length) {
    const ok = document.createElement("div"); ok.className = "ok";
    ok.textContent = "No violation: every checker passed and the history is linearizable.";
    violationsEl.appendChild(ok);
  }
  // The first few violations in full; the rest folded (one bug often breaks many checks).
  let more = null;
  violations.forEach((v, i) => {
    const el = document.createElement("div");
    el.className = "violation";
    el.textContent = v[0] + " at t=" + v[1] + ": " + v[2];
    el.title = "click to see it";
    el.addEventListener("click", () => focusOn(v[1]));
    if (i === 4 && violations.length > 5) {
      more = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = (violations.length - 4) + " more violations";
      more.appendChild(summary);
      violationsEl.appendChild(more);
    }
    (more || violationsEl).appendChild(el);
  });
  const story = document.getElementById("story");
  trace.captions.forEach(([t, text]) => {
    const el = document.createElement("li");
    el.textContent = "t=" + t + ": " + text;
    el.addEventListener("click", () => focusOn(t));
    story.appendChild(el);
  });
  if (!trace.captions.length) story.remove();
  const legend = document.getElementById("legend");
  const legendItems = [["leader / primary", "#ffb74d"], ["candidate", "#fff176"], ["follower", "#e3f2fd"], ["backup", "#c8e6c9"], ["view service", "#e1bee7"], ["down", "#9e9e9e"], ["partition", "rgba(229,57,53,0.18)"], ["op ok", statusColours.ok], ["op failed", statusColours.fail], ["op unknown", statusColours.unknown], ["violation", "#c62828"]];
  for (const [name, colour] of legendItems) {
    const el = document.createElement("span");
    el.innerHTML = '<span class="swatch"></span>';
    el.firstChild.style.background = colour;
    el.appendChild(document.createTextNode(name));
    legend.appendChild(el);
  }
  const extra = document.createElement("span");
  extra.textContent = "arrows: messages (× = lost or cut) · ticks: commits · ▼: snapshot · ✕ crash · ▲ restart";
  legend.appendChild(extra);

  // ---- geometry -----------------------------------------------------------------------
  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const tooltip = document.getElementById("tooltip");
  const LEFT = 110, TOP = 72, LANE = 34, GAP = 6;
  let width = 800, height = 400, t0 = 0, t1 = endTime;
  const laneY = new Array(laneCount).fill(-1);
  let lanesBottom = TOP;
  function layout() {
    let y = TOP;
    for (let i = 0; i < laneCount; i++) {
      if (laneShown[i]) { laneY[i] = y; y += (i >= nodeLanes ? LANE - 10 : LANE) + GAP; } else laneY[i] = -1;
      if (i === nodeLanes - 1) { lanesBottom = y - GAP; y += 10; }
    }
    const ratio = window.devicePixelRatio || 1;
    width = canvas.parentElement.clientWidth || 800;
    height = y + 10;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.height = height + "px";
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  }
  const x = t => LEFT + (t - t0) * (width - LEFT - 10) / (t1 - t0);
  const tAt = px => t0 + (px - LEFT) * (t1 - t0) / (width - LEFT - 10);
  const laneH = i => (i >= nodeLanes ? LANE - 10 : LANE);
  const mid = i => laneY[i] + laneH(i) / 2;

  // ---- drawing ------------------------------------------------------------------------
  let hoverItems = [];
  function draw() {
    ctx.clearRect(0, 0, width, height);
    hoverItems = [];
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    // Partitions: a band in the network row (shaded over the lanes once they are drawn).
    for (const [s, e, text] of cuts) {
      if (e < t0 || s > t1) continue;
      const xs = Math.max(LEFT, x(s)), xe = Math.min(width - 10, x(e));
      ctx.fillStyle = "rgba(229,57,53,0.18)";
      ctx.fillRect(xs, TOP - 20, Math.max(1, xe - xs), 16);
      ctx.fillStyle = "#b71c1c";
      if (xe - xs > 60) { ctx.save(); ctx.beginPath(); ctx.rect(xs, TOP - 22, xe - xs, 20); ctx.clip(); ctx.fillText(text, xs + 3, TOP - 12); ctx.restore(); }
      hoverItems.push({ kind: "rect", x0: xs, x1: xe, y0: TOP - 20, y1: TOP - 4, text: text + "\nfrom t=" + s + " to t=" + e, weight: 1 });
    }
    // Notable events of the run (the text trace's lines) as ticks in the same row.
    ctx.fillStyle = "#607d8b";
    for (const [t, text] of trace.notes) {
      if (t < t0 || t > t1) continue;
      ctx.fillRect(x(t), TOP - 8, 1.5, 6);
      hoverItems.push({ kind: "point", px: x(t), py: TOP - 5, text: "t=" + t + ": " + text, weight: 2 });
    }
    ctx.fillStyle = "#6b7588";
    ctx.fillText("network", 8, TOP - 12);
    ctx.fillText("story", 8, 32);
    // Lanes: names, role bands, commits, snapshots.
    for (let l = 0; l < laneCount; l++) {
      if (laneY[l] < 0) continue;
      const y = laneY[l], h = laneH(l);
      const named = badLanes.has(lanes[l]);
      ctx.fillStyle = named ? "#c62828" : "#1d2330";
      ctx.font = named ? "bold 12px system-ui, sans-serif" : "11px system-ui, sans-serif";
      ctx.fillText(lanes[l] + (named ? " ◀" : ""), 8, y + h / 2);
      ctx.font = "11px system-ui, sans-serif";
      ctx.strokeStyle = "#e3e7ec";
      ctx.strokeRect(LEFT, y, width - LEFT - 10, h);
      if (l >= nodeLanes) continue;
      for (const [s, e, state, commit] of bands[l]) {
        if (e < t0 || s > t1) continue;
        const xs = Math.max(LEFT, x(s)), xe = Math.min(width - 10, x(e));
        ctx.fillStyle = state ? (roleColours[state.role] || "#e0e0e0") : "#9e9e9e";
        ctx.fillRect(xs, y, Math.max(1, xe - xs), h);
        const label = state ? state.role + (trace.epoch_name ? " " + trace.epoch_name + " " + state.epoch : "") : "down";
        if (xe - xs > 50) { ctx.save(); ctx.beginPath(); ctx.rect(xs, y, xe - xs, h); ctx.clip(); ctx.fillStyle = "#37474f"; ctx.fillText(label, xs + 3, y + 9); ctx.restore(); }
        hoverItems.push({ kind: "rect", x0: xs, x1: xe, y0: y, y1: y + h, text: lanes[l] + ": " + label + (state ? "\ncommit " + commit + " at start" : "") + "\nt=" + s + "–" + e, weight: 0 });
      }
      ctx.strokeStyle = "#37474f";
      for (const [t, c] of commits[l]) {
        if (t < t0 || t > t1) continue;
        const px = x(t);
        ctx.beginPath(); ctx.moveTo(px, y + h - 6); ctx.lineTo(px, y + h); ctx.stroke();
        hoverItems.push({ kind: "point", px, py: y + h - 3, text: lanes[l] + " commits up to " + c + " at t=" + t, weight: 1 });
      }
      ctx.fillStyle = "#5e35b1";
      for (const [t, index] of snapshots[l]) {
        if (t < t0 || t > t1) continue;
        const px = x(t);
        ctx.beginPath(); ctx.moveTo(px - 5, y + 1); ctx.lineTo(px + 5, y + 1); ctx.lineTo(px, y + 9); ctx.fill();
        hoverItems.push({ kind: "point", px, py: y + 4, text: lanes[l] + " snapshot at index " + index + " (t=" + t + ")", weight: 2 });
      }
    }
    // Partitions shaded over every node lane.
    for (const [s, e] of cuts) {
      if (e < t0 || s > t1) continue;
      const xs = Math.max(LEFT, x(s)), xe = Math.min(width - 10, x(e));
      ctx.fillStyle = "rgba(229,57,53,0.12)";
      ctx.fillRect(xs, TOP, Math.max(1, xe - xs), lanesBottom - TOP);
    }
    // Crashes and restarts.
    ctx.font = "bold 14px system-ui, sans-serif";
    for (const [l, t] of crashes) {
      if (laneY[l] < 0 || t < t0 || t > t1) continue;
      ctx.fillStyle = "#c62828"; ctx.fillText("✕", x(t) - 5, mid(l));
      hoverItems.push({ kind: "point", px: x(t), py: mid(l), text: lanes[l] + " crashes at t=" + t, weight: 3 });
    }
    for (const [l, t] of restarts) {
      if (laneY[l] < 0 || t < t0 || t > t1) continue;
      ctx.fillStyle = "#2e7d32"; ctx.fillText("▲", x(t) - 5, mid(l));
      hoverItems.push({ kind: "point", px: x(t), py: mid(l), text: lanes[l] + " restarts at t=" + t, weight: 3 });
    }
    ctx.font = "11px system-ui, sans-serif";
    // Client operations.
    for (const op of ops) {
      const lane = nodeLanes + op[0];
      if (laneY[lane] < 0) continue;
      const s = op[5], e = op[6] === null ? endTime : op[6];
      if (e < t0 || s > t1) continue;
      const xs = Math.max(LEFT, x(s)), xe = Math.min(width - 10, x(e));
      const y = laneY[lane] + 3, h = laneH(lane) - 6;
      ctx.fillStyle = statusColours[op[7]] || "#bdbdbd";
      ctx.fillRect(xs, y, Math.max(2, xe - xs), h);
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(xs, y, 1, h);
      const bad = badKeys.has(op[2]);
      if (bad) { ctx.strokeStyle = "#c62828"; ctx.lineWidth = 2.5; ctx.strokeRect(xs, y, Math.max(2, xe - xs), h); ctx.lineWidth = 1; }
      const text = describeOp(op);
      if (xe - xs > 40) { ctx.save(); ctx.beginPath(); ctx.rect(xs, y, xe - xs, h); ctx.clip(); ctx.fillStyle = "#102027"; ctx.fillText(text, xs + 2, y + h / 2); ctx.restore(); }
      hoverItems.push({ kind: "rect", x0: xs, x1: Math.max(xs + 2, xe), y0: y, y1: y + h, text: "client " + op[0] + ": " + text + "\nstatus " + op[7] + ", t=" + s + "–" + (op[6] === null ? "?" : op[6]) + (bad ? "\non a key a violation names" : ""), weight: 2 });
    }
    // Messages.
    let drawn = 0;
    for (const m of messages) {
      const [from, to, sent, arrivals, kind, fate, detail] = m;
      if (!kindShown[kind] || laneY[from] < 0 || laneY[to] < 0) continue;
      const last = arrivals.length ? arrivals[arrivals.length - 1] : sent + 4;
      if (last < t0 || sent > t1) continue;
      ctx.strokeStyle = kindColour[kind];
      ctx.fillStyle = kindColour[kind];
      ctx.globalAlpha = quiet[kind] ? 0.35 : 1;
      const y0 = mid(from), y1 = mid(to), px0 = x(sent);
      if (!arrivals.length) {
        const px1 = x(sent + 2), py1 = y0 + (y1 - y0) * 0.35;
        ctx.setLineDash([3, 3]);
        ctx.beginPath(); ctx.moveTo(px0, y0); ctx.lineTo(px1, py1); ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillText("×", px1 - 3, py1);
        hoverItems.push({ kind: "line", px0, py0: y0, px1, py1, text: kinds[kind] + " " + lanes[from] + "→" + lanes[to] + ", " + (fate || "lost") + " (sent t=" + sent + ")\n" + detail, weight: 1 });
      } else {
        for (const at of arrivals) {
          const px1 = x(at);
          ctx.beginPath(); ctx.moveTo(px0, y0); ctx.lineTo(px1, y1); ctx.stroke();
          arrow(px0, y0, px1, y1);
          hoverItems.push({ kind: "line", px0, py0: y0, px1, py1: y1, text: kinds[kind] + " " + lanes[from] + "→" + lanes[to] + ", sent t=" + sent + ", arrives t=" + at + (arrivals.length > 1 ? " (duplicated)" : "") + "\n" + detail, weight: 1 });
        }
      }
      drawn++;
    }
    ctx.globalAlpha = 1;
    // Captions: the steps of a staged story, as flags with a line down every lane.
    const shown = trace.captions.filter(c => c[0] >= t0 && c[0] <= t1);
    shown.forEach(([t, text], i) => {
      const px = x(t);
      ctx.strokeStyle = "rgba(13,71,161,0.55)";
      ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(px, 20); ctx.lineTo(px, height); ctx.stroke();
      ctx.setLineDash([]);
      const row = i % 2, y = 26 + row * 16;
      const next = shown.slice(i + 1).find((c, k) => (i + 1 + k) % 2 === row);
      const room = (next ? x(next[0]) : width - 10) - px - 6;
      ctx.fillStyle = "#0d47a1";
      ctx.fillRect(px, y - 6, 6, 12);
      if (room > 30) { ctx.save(); ctx.beginPath(); ctx.rect(px + 8, y - 8, room, 16); ctx.clip(); ctx.fillText(text, px + 9, y); ctx.restore(); }
      hoverItems.push({ kind: "rect", x0: px - 2, x1: px + 8 + Math.max(0, Math.min(room, ctx.measureText(text).width)), y0: y - 8, y1: y + 8, text: "t=" + t + ": " + text, weight: 3 });
    });
    // Violations.
    for (const v of violations) {
      if (v[1] < t0 || v[1] > t1) continue;
      const px = x(v[1]);
      ctx.strokeStyle = "#c62828"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(px, TOP - 20); ctx.lineTo(px, height); ctx.stroke();
      ctx.lineWidth = 1; ctx.fillStyle = "#c62828"; ctx.fillText(v[0], px + 3, TOP - 24 > 6 ? TOP - 24 : 8);
      hoverItems.push({ kind: "line", px0: px, py0: TOP - 20, px1: px, py1: height, text: v[0] + " at t=" + v[1] + ": " + v[2], weight: 4 });
    }
    // Time axis.
    ctx.fillStyle = "#6b7588";
    const step = niceStep((t1 - t0) / 8);
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      ctx.fillText(String(t) + unit, x(t) - 8, 8);
      ctx.fillRect(x(t), 14, 1, 4);
    }
    body.dataset.drawnMessages = String(drawn);
  }
  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
    for (const k of [1, 2, 5, 10]) if (k * p >= raw) return k * p;
    return 10 * p;
  }
  function arrow(px0, py0, px1, py1) {
    const a = Math.atan2(py1 - py0, px1 - px0);
    ctx.beginPath();
    ctx.moveTo(px1, py1);
    ctx.lineTo(px1 - 6 * Math.cos(a - 0.4), py1 - 6 * Math.sin(a - 0.4));
    ctx.lineTo(px1 - 6 * Math.cos(a + 0.4), py1 - 6 * Math.sin(a + 0.4));
    ctx.fill();
  }
  function describeOp(op) {
    const [, kind, key, value, from, , , status, output] = op;
    let text = kind + " " + key;
    if (kind === "cas") text += " " + from + "→" + value;
    else if (value !== null) text += " " + value;
    if (status === "ok" && output) text += " = " + output;
    return text;
  }

  // ---- interaction --------------------------------------------------------------------
  let pending = false;
  function redraw() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); } }
  function zoom(factor, at) {
    const t = tAt(at);
    const span = Math.min(endTime * 1.2, Math.max(5, (t1 - t0) * factor));
    const share = (at - LEFT) / (width - LEFT - 10);
    t0 = t - share * span; t1 = t0 + span;
    redraw();
  }
  function fit() { t0 = 0; t1 = endTime; redraw(); }
  function focusOn(time) {
    const span = Math.max(60, Math.min(endTime, endTime / 8));
    t0 = Math.max(0, time - span * 0.7); t1 = t0 + span;
    redraw();
  }
  canvas.addEventListener("wheel", event => {
    event.preventDefault();
    zoom(event.deltaY > 0 ? 1.25 : 0.8, event.offsetX);
  }, { passive: false });
  let drag = null;
  canvas.addEventListener("mousedown", event => { drag = { x: event.clientX, t0, t1 }; canvas.classList.add("dragging"); });
  window.addEventListener("mouseup", () => { drag = null; canvas.classList.remove("dragging"); });
  window.addEventListener("mousemove", event => {
    if (!drag) return;
    const dt = (event.clientX - drag.x) * (drag.t1 - drag.t0) / (width - LEFT - 10);
    t0 = drag.t0 - dt; t1 = drag.t1 - dt;
    redraw();
  });
  canvas.addEventListener("dblclick", fit);
  canvas.addEventListener("mousemove", event => {
    if (drag) { tooltip.style.display = "none"; return; }
    const found = pick(event.offsetX, event.offsetY);
    if (!found) { tooltip.style.display = "none"; return; }
    tooltip.textContent = found.text;
    tooltip.style.display = "block";
    const left = Math.min(event.offsetX + 14, width - 300);
    tooltip.style.left = left + "px";
    tooltip.style.top = (event.offsetY + 14) + "px";
  });
  canvas.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });
  function pick(px, py) {
    let best = null, bestScore = Infinity;
    for (const item of hoverItems) {
      let distance;
      if (item.kind === "rect") {
        distance = px >= item.x0 - 1 && px <= item.x1 + 1 && py >= item.y0 && py <= item.y1 ? 3 : Infinity;
      } else if (item.kind === "point") {
        distance = Math.hypot(px - item.px, py - item.py);
      } else {
        distance = segmentDistance(px, py, item.px0, item.py0, item.px1, item.py1);
      }
      if (distance > 5) continue;
      const score = distance - (item.weight || 0) * 2;
      if (score < bestScore) { best = item; bestScore = score; }
    }
    return best;
  }
  function segmentDistance(px, py, ax, ay, bx, by) {
    const dx = bx - ax, dy = by - ay;
    const len = dx * dx + dy * dy;
    const t = len ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / len)) : 0;
    return Math.hypot(px - (ax + t * dx), py - (ay + t * dy));
  }
  document.getElementById("fit").addEventListener("click", fit);
  document.getElementById("zoom-in").addEventListener("click", () => zoom(0.7, LEFT + (width - LEFT) / 2));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(1.4, LEFT + (width - LEFT) / 2));
  const toViolation = document.getElementById("to-violation");
  toViolation.disabled = !violations.length;
  toViolation.addEventListener("click", () => { if (violations.length) focusOn(violations[0][1]); });
  window.addEventListener("keydown", event => {
    if (event.key === "+" || event.key === "=") zoom(0.7, LEFT + (width - LEFT) / 2);
    if (event.key === "-") zoom(1.4, LEFT + (width - LEFT) / 2);
    if (event.key === "0") fit();
  });
  window.addEventListener("resize", () => { layout(); draw(); });

  layout();
  // A failing run opens at its first violation; a passing one shows the whole run.
  if (violations.length) { const v = violations[0][1]; const span = Math.max(60, Math.min(endTime, endTime / 8)); t0 = Math.max(0, v - span * 0.7); t1 = t0 + span; }
  draw();
  body.dataset.lanes = String(laneCount);
  body.dataset.nodeLanes = String(nodeLanes);
  body.dataset.violations = String(violations.length);
  body.dataset.highlighted = String(highlighted);
  body.dataset.messages = String(messages.length);
  body.dataset.t0 = String(Math.floor(t0));
  body.dataset.t1 = String(Math.ceil(t1));
  body.dataset.renderMs = String(Math.round(performance.now() - started));
  // From the start of navigation (reading and parsing the page included) to the first picture.
  body.dataset.readyMs = String(Math.round(performance.now()));
  body.dataset.rendered = "1";
})();
