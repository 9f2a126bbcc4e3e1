// scanner-agent web console. Every value from the agent (DICOM and MQTT strings) is written
// with textContent, never as HTML. No libraries: this file is the whole client.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const page = body.dataset.page;
  const MUTE_KEY = "scanner-agent-muted";
  const DISMISSED_KEY = "scanner-agent-dismissed";
  const VERBS = { release: "Release", hold: "Hold", repeat: "Mark for repeat" };
  let latest = new Map();

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function word(text) { return String(text || "").toLowerCase().replace(/[^a-z_]/g, ""); }
  function badge(text, kind) {
    const s = el("span", text || "-", "badge");
    if (text) s.classList.add(kind + "-" + word(text));
    return s;
  }
  function triageOf(v) {
    const t = v.triage;
    if (!t) return "";
    if (t.status === "not_applicable") return "n/a";
    return t.priority || "";
  }
  function qcOf(v) { return (v.qc && v.qc.status) || ""; }
  function clock(epoch) {
    if (!epoch) return "";
    return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
  }
  function isCritical(v) { return qcOf(v) === "fail" || triageOf(v) === "stat"; }
  function seriesHref(uid) { return "/series/" + encodeURIComponent(uid); }

  // -- the series table ------------------------------------------------------------------
  function tableRow(v) {
    const tr = el("tr");
    tr.dataset.uid = v.series_uid;
    if (isCritical(v)) tr.classList.add("critical");
    if (v.superseded) tr.classList.add("superseded");
    const name = el("td", v.label || v.series_description || "series");
    name.title = v.label || "";
    tr.append(name, el("td", v.modality), el("td", v.instances, "num"));
    const state = el("td"); state.append(badge(v.state, "s"));
    const qc = el("td"); qc.append(badge(qcOf(v), "q"));
    const tri = el("td"); tri.append(badge(triageOf(v), "t"));
    const del = el("td"); del.append(badge(v.delivery, "d"));
    tr.append(state, qc, tri, del, el("td", clock(v.updated_at)));
    tr.addEventListener("click", () => { location.href = seriesHref(v.series_uid); });
    return tr;
  }
  function drawTable(rows) {
    const tbody = document.querySelector("#series tbody");
    tbody.replaceChildren(...rows.map(tableRow));
    $("empty").hidden = rows.length > 0;
  }

  // -- one series ------------------------------------------------------------------------
  function fact(dl, name, value) { dl.append(el("dt", name), el("dd", value || "-")); }
  function drawOne(v) {
    $("title").textContent = v.label || v.series_uid;
    const state = $("state");
    state.textContent = v.state + (v.superseded ? " (superseded)" : "");
    state.className = "badge s-" + word(v.state);
    const dl = $("facts");
    dl.replaceChildren();
    fact(dl, "Modality", v.modality);
    fact(dl, "Images", v.instances);
    fact(dl, "QC", qcOf(v));
    fact(dl, "Triage", triageOf(v));
    const dests = Object.entries(v.deliveries || {}).map(([d, s]) => d + ": " + s).join(", ");
    fact(dl, "Delivery", dests);
    fact(dl, "Series UID", v.series_uid);
    const reasons = $("reasons");
    reasons.replaceChildren();
    for (const r of (v.qc && v.qc.reasons) || []) reasons.append(el("li", r.message || r.code));
    for (const f of (v.triage && v.triage.findings) || []) {
      const score = typeof f.score === "number" ? f.score.toFixed(2) : "";
      reasons.append(el("li", f.label + " " + score + (f.priority ? " (" + f.priority + ")" : "")));
    }
    if (!reasons.children.length) reasons.append(el("li", "nothing flagged"));
  }
  async function loadAudit(uid) {
    const res = await fetch("/api/series/" + encodeURIComponent(uid), { credentials: "same-origin" });
    if (res.status === 401) { location.href = "/login"; return; }
    if (!res.ok) return;
    const doc = await res.json();
    // The live stream may already have brought a newer state (a release forwarded while
    // this answer was on its way): never draw an older snapshot over it.
    const live = latest.get(uid);
    drawOne(live && live.updated_at >= doc.updated_at ? live : doc);
    const ol = $("audit");
    ol.replaceChildren();
    for (const a of doc.audit || []) {
      const when = clock(a.at);
      const what = a.applied ? a.from_state + " → " + a.to_state : "refused (" + a.detail + ")";
      ol.append(el("li", when + "  " + a.who + ": " + a.action + ", " + what));
    }
    if (!ol.children.length) ol.append(el("li", "none yet"));
  }
  function askThenSend(uid, action) {
    const dialog = $("confirm");
    const label = $("title").textContent;
    $("confirm-text").textContent = VERBS[action] + " " + label + "?";
    dialog.onclose = () => { if (dialog.returnValue === "ok") send(uid, action); };
    dialog.returnValue = "";
    dialog.showModal();
  }
  async function send(uid, action) {
    const answer = $("answer");
    answer.textContent = "sending…";
    answer.className = "answer";
    const res = await fetch("/api/series/" + encodeURIComponent(uid) + "/" + action, {
      method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
    });
    let doc = {};
    try { doc = await res.json(); } catch (e) { doc = {}; }
    answer.textContent = doc.message || doc.error || ("HTTP " + res.status);
    if (!res.ok || doc.applied === false) answer.classList.add("refused");
    answer.dataset.applied = doc.applied ? "yes" : "no";
    loadAudit(uid);
  }
  function setupOne() {
    const uid = body.dataset.series;
    const img = $("key-image");
    img.addEventListener("error", () => { img.hidden = true; $("key-none").hidden = false; });
    const strip = $("strip");
    strip.addEventListener("error", () => { strip.hidden = true; });
    for (const b of document.querySelectorAll("button.act")) {
      b.addEventListener("click", () => askThenSend(uid, b.dataset.action));
    }
    loadAudit(uid);
  }

  // -- the critical-alert banner and its tone ---------------------------------------------
  let audio = null;
  function muted() { return body.dataset.sound !== "on" || localStorage.getItem(MUTE_KEY) === "1"; }
  function drawMute() {
    const b = $("mute");
    b.hidden = body.dataset.sound !== "on";
    b.textContent = muted() ? "Sound off" : "Sound on";
    b.setAttribute("aria-pressed", muted() ? "true" : "false");
  }
  function tone() {
    try {
      audio = audio || new AudioContext();
      const t0 = audio.currentTime;
      for (let i = 0; i < 3; i++) {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        const at = t0 + i * 0.3;
        osc.frequency.value = 880;
        gain.gain.setValueAtTime(0.0001, at);
        gain.gain.exponentialRampToValueAtTime(0.3, at + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.25);
        osc.connect(gain).connect(audio.destination);
        osc.start(at);
        osc.stop(at + 0.26);
      }
    } catch (e) { /* no audio device: the banner still shows */ }
  }
  function dismissed() {
    try { return new Set(JSON.parse(sessionStorage.getItem(DISMISSED_KEY) || "[]")); }
    catch (e) { return new Set(); }
  }
  function alertText(a) {
    const reasons = (a.reasons || []).map((r) => r.message || r.code).join("; ");
    const row = latest.get(a.series_uid);
    const what = (row && row.label) || a.series_description || "agent";
    const action = a.action && a.action !== "none" ? String(a.action).toUpperCase() + " " : "";
    return String(a.severity).toUpperCase() + " " + a.kind + ": " + action + what + ": " + reasons;
  }
  function showAlert(a) {
    if (a.severity !== "critical" || dismissed().has(a.id)) return;
    const banner = $("banner");
    $("banner-text").textContent = alertText(a);
    const link = $("banner-link");
    link.hidden = !a.series_uid;
    if (a.series_uid) link.href = seriesHref(a.series_uid);
    banner.dataset.alertId = a.id;
    banner.dataset.series = a.series_uid || "";
    banner.hidden = false;
    if (!a.replay && !muted()) tone();
  }
  function setupBanner() {
    drawMute();
    $("mute").addEventListener("click", () => {
      localStorage.setItem(MUTE_KEY, muted() ? "0" : "1");
      drawMute();
      if (!muted() && audio) audio.resume();
    });
    $("banner-close").addEventListener("click", () => {
      const gone = dismissed();
      gone.add($("banner").dataset.alertId);
      sessionStorage.setItem(DISMISSED_KEY, JSON.stringify([...gone].slice(-200)));
      $("banner").hidden = true;
    });
    document.addEventListener("click", () => { if (audio) audio.resume(); });
  }

  // -- the live feed ---------------------------------------------------------------------
  let order = [];
  function redraw() {
    if (page === "series") drawTable(order.filter((u) => latest.has(u)).map((u) => latest.get(u)));
    if (page === "one") {
      const row = latest.get(body.dataset.series);
      if (row) drawOne(row);
    }
  }
  function follow() {
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => { $("link").textContent = "live"; });
    source.addEventListener("error", async () => {
      $("link").textContent = "reconnecting…";
      const me = await fetch("/api/me", { credentials: "same-origin" }).catch(() => null);
      if (me && me.status === 401) { source.close(); location.href = "/login"; }
    });
    source.addEventListener("series", (e) => {
      const rows = JSON.parse(e.data);
      latest = new Map(rows.map((r) => [r.series_uid, r]));
      order = rows.map((r) => r.series_uid);
      redraw();
    });
    source.addEventListener("rows", (e) => {
      const change = JSON.parse(e.data);
      for (const r of change.changed) latest.set(r.series_uid, r);
      for (const uid of change.removed) latest.delete(uid);
      if (change.order) order = change.order;
      redraw();
    });
    source.addEventListener("alert", (e) => showAlert(JSON.parse(e.data)));
  }

  // -- the department --------------------------------------------------------------------
  function agentRow(a) {
    const tr = el("tr");
    tr.dataset.agent = a.agent_id;
    const last = a.last_series;
    const state = el("td"); state.append(badge(a.state, "a"));
    const lastState = el("td"); lastState.append(badge(last ? last.state : "", "s"));
    const waiting = (a.open || []).map((s) => s.label).join(", ");
    tr.append(el("td", a.agent_id), el("td", a.scanner), state, el("td", last ? last.label : "-"),
      lastState, el("td", a.open_alerts, "num"), el("td", waiting || "-"));
    return tr;
  }
  async function department() {
    const res = await fetch("/api/department", { credentials: "same-origin" });
    if (res.status === 401) { location.href = "/login"; return; }
    if (res.ok) {
      const doc = await res.json();
      $("dept-link").textContent = "broker: " + doc.link;
      document.querySelector("#department tbody").replaceChildren(...doc.agents.map(agentRow));
    }
    setTimeout(department, 1000);
  }

  setupBanner();
  if (page === "one") setupOne();
  if (page === "department") department();
  follow();
})();
