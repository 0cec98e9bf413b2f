// The hapvr web UI: one page, views chosen by the URL fragment, everything read from this server's API.
// No framework and no build step: the page is small, and a reviewer can read all of it here.
// Safety rules: user-supplied text only ever reaches the page through textContent (el() below), never as
// HTML; the API key lives in sessionStorage and the Authorization header, never in a URL.
"use strict";

const KEY = "hapvr-key";
const state = { config: null, lastQuery: null, timers: [] };

// ----- small helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clock(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "?";
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  const rest = (s - 60 * m).toFixed(1).padStart(4, "0");
  return `${m}:${rest}`;
}

function percent(x) {
  return x === null || x === undefined ? "n/a" : `${(100 * x).toFixed(x >= 0.995 || x <= 0.005 ? 0 : 1)}%`;
}

function view() { return document.getElementById("view"); }

function show(...children) {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  const v = view();
  v.replaceChildren(...children);
}

function errorBox(message) { return el("p", { class: "error", role: "alert" }, message); }

// ----- the API, with the key when keys are on
function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if ((response.status === 401 || response.status === 403) && state.config && state.config.keys_required) {
    await signIn(response.status === 403 ? "That key was not accepted." : "");
    return api(path, options);
  }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = body.error || {};
    throw new ApiError(response.status, err.code || "http_error", err.message || `HTTP ${response.status}`);
  }
  return body;
}

function signIn(reason) {
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  document.getElementById("key-error").textContent = reason || "";
  sessionStorage.removeItem(KEY);
  return new Promise((resolve) => {
    form.onsubmit = async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      const r = await fetch("/session", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
      if (!r.ok) {
        document.getElementById("key-error").textContent = "That key was not accepted.";
        input.select();
        return;
      }
      sessionStorage.setItem(KEY, key);
      input.value = "";
      dialog.close();
      document.getElementById("sign-out").hidden = false;
      resolve();
    };
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

// an upload with progress (fetch reports none): resolves with the JSON answer, rejects with ApiError
function send(method, path, formData, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const err = body.error || {};
        reject(new ApiError(xhr.status, err.code || "http_error", err.message || `HTTP ${xhr.status}`));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "the server could not be reached"));
    xhr.send(formData);
  });
}

async function waitJob(jobId, onUpdate) {
  for (;;) {
    const job = await api(`/jobs/${encodeURIComponent(jobId)}`);
    if (onUpdate) onUpdate(job);
    if (["done", "failed", "cancelled"].includes(job.state)) return job;
    await new Promise((r) => setTimeout(r, 400));
  }
}

// ----- pieces shared by the views
function frameUrl(videoId, t) { return `/videos/${encodeURIComponent(videoId)}/frames?t=${t.toFixed(2)}`; }

function strip(videoId, duration, count = 5, label = "") {
  const times = Array.from({ length: count }, (_, i) => (duration * (i + 0.5)) / count);
  return el("div", { class: "strip", role: "group", "aria-label": `${label} key frames` },
    times.map((t) => el("img", { src: frameUrl(videoId, t), alt: `frame at ${clock(t)}`, loading: "lazy" })));
}

function timeline(label, duration, spans) {
  const bar = el("div", { class: "timeline", role: "img",
    "aria-label": `${label}: ${spans.length ? spans.map(([a, b]) => `${clock(a)} to ${clock(b)}`).join(", ") : "no matched span"} of ${clock(duration)}` });
  for (const [a, b] of spans) {
    const left = duration > 0 ? (100 * a) / duration : 0;
    const width = duration > 0 ? Math.max(1, (100 * (b - a)) / duration) : 100;
    const span = el("span", { class: "span" });
    // positioned through the CSSOM, not a style attribute (the policy allows no inline style)
    span.style.left = `${left}%`;
    span.style.width = `${Math.min(100 - left, width)}%`;
    bar.append(span);
  }
  return el("div", { class: "timeline-row" }, el("span", { class: "timeline-label" }, label), bar);
}

function segmentText(s) {
  return `query ${clock(s.query_start)}–${clock(s.query_end)} ↔ match ${clock(s.target_start)}–${clock(s.target_end)}`;
}

// ----- Search
function renderSearch(indexedId) {
  const fileInput = el("input", { type: "file", id: "query-file", accept: "video/*,.mkv,.webm,.mov,.avi" });
  const drop = el("div", { class: "drop", id: "query-drop" }, "or drop a video here");
  const status = el("p", { id: "query-status", "aria-live": "polite" });
  const bar = el("progress", { id: "query-progress", max: 100, value: 0, "aria-label": "search progress" });
  const steps = el("ol", { class: "steps", "aria-label": "steps" },
    ["upload", "decode", "embed", "search"].map((s) => el("li", { "data-step": s }, s)));
  const results = el("section", { id: "results", "aria-label": "results" });
  const button = el("button", { type: "button", id: "query-run" }, "Search");
  const form = el("section", { class: "panel" },
    el("h1", {}, "Search for copies"),
    el("div", { class: "field" }, el("label", { for: "query-file" }, "Query video"), fileInput), drop,
    el("p", { class: "hint" }, "Or pick an indexed video in the ", el("a", { href: "#/library" }, "library"), "."),
    button, steps, bar, status);
  show(form, results);
  const step = (name) => {
    let reached = true;
    for (const li of steps.children) {
      li.classList.toggle("done", reached && li.dataset.step !== name);
      li.classList.toggle("current", li.dataset.step === name);
      if (li.dataset.step === name) reached = false;
    }
  };
  const run = async (file) => {
    results.replaceChildren();
    button.disabled = true;
    try {
      let job;
      if (file) {
        const data = new FormData();
        data.append("file", file, file.name);
        data.append("matrices", "true");
        data.append("top_k", "10");
        step("upload");
        status.textContent = `Uploading ${file.name}`;
        const accepted = await send("POST", "/query?async=true", data, (f) => { bar.value = 100 * f; });
        job = await waitJob(accepted.job_id, (j) => {
          step(j.state === "queued" ? "decode" : j.stage === "embedding" ? "embed" : "decode");
          bar.value = j.progress || 0;
          status.textContent = `${j.state}: ${j.stage}`;
        });
      } else {
        step("embed");
        status.textContent = "Searching with the indexed video";
        const accepted = await api("/query?async=true", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ video_id: indexedId, matrices: true, top_k: 10 }) });
        job = await waitJob(accepted.job_id, (j) => { bar.value = j.progress || 0; });
      }
      if (job.state !== "done") throw new ApiError(422, job.error_code, job.error_message || job.state);
      step("none");
      bar.value = 100;
      const url = file ? URL.createObjectURL(file) : null;
      if (state.lastQuery && state.lastQuery.url) URL.revokeObjectURL(state.lastQuery.url);
      state.lastQuery = { file, url, videoId: indexedId || null, result: job.result };
      if (indexedId) state.lastQuery.duration = (await api(`/videos/${encodeURIComponent(indexedId)}`)).duration;
      status.textContent = `${job.result.results.length} results in ${Math.round(job.result.timings_ms.total || 0)} ms`;
      await renderResults(results, job.result);
    } catch (e) {
      status.textContent = "";
      results.replaceChildren(errorBox(e.message));
    } finally {
      button.disabled = false;
    }
  };
  button.addEventListener("click", () => {
    if (fileInput.files.length) run(fileInput.files[0]);
    else if (indexedId) run(null);
    else status.textContent = "Choose a query video first.";
  });
  fileInput.addEventListener("change", () => { if (fileInput.files.length) run(fileInput.files[0]); });
  dropZone(drop, (files) => run(files[0]));
  if (indexedId) {
    api(`/videos/${encodeURIComponent(indexedId)}`).then((v) => {
      form.insertBefore(el("p", { class: "hint" }, "Query: the indexed video ", el("strong", {}, v.source)), button);
    }).catch(() => {});
    run(null);
  }
}

function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFiles([...e.dataTransfer.files]);
  });
}

async function renderResults(container, result) {
  if (!result.results.length) {
    container.replaceChildren(el("p", {}, result.note || "No indexed video matches this query."));
    return;
  }
  const list = el("ol", { class: "cards" });
  container.replaceChildren(el("h2", {}, "Results"), list);
  const queryDuration = Math.max(1, ...result.results.flatMap((r) => r.segments.map((s) => s.query_end)));
  for (const [i, r] of result.results.entries()) {
    const card = el("li", { class: "card", "data-id": r.id });
    list.append(card);
    let video = null;
    try { video = await api(`/videos/${encodeURIComponent(r.id)}`); } catch (_) { /* deleted meanwhile */ }
    const duration = video ? video.duration : Math.max(...r.segments.map((s) => s.target_end), 1);
    const qd = state.lastQuery && state.lastQuery.duration ? state.lastQuery.duration : queryDuration;
    card.append(...[
      el("h3", { class: "source" }, r.source),
      video ? strip(r.id, duration, 5, r.source) : null,
      el("p", { class: "numbers" },
        el("span", { class: "confidence" }, `confidence ${percent(r.confidence)}`),
        r.score === null ? null : ` · score ${r.score.toFixed(3)}`,
        ` · ${clock(duration)}`, r.mirrored ? " · mirrored" : null, r.exact_duplicate ? " · same file" : null),
      timeline("query", qd, r.segments.map((s) => [s.query_start, s.query_end])),
      timeline("match", duration, r.segments.map((s) => [s.target_start, s.target_end])),
      r.segments.length ? null : el("p", { class: "hint" }, `no segment: ${r.segments_reason || "none found"}`),
      el("a", { class: "button", href: `#/compare/q/${i}` }, "Compare")].filter(Boolean));
  }
  if (state.lastQuery && state.lastQuery.url) {  // the query's real length, for its timeline
    const probe = el("video", { preload: "metadata", src: state.lastQuery.url });
    probe.addEventListener("loadedmetadata", () => { state.lastQuery.duration = probe.duration; });
  }
}

// ----- Compare
async function renderCompare(params) {
  let pair, queryLabel, querySrc, queryId = null;
  try {
    if (params[0] === "q") {
      const last = state.lastQuery;
      const r = last && last.result.results[Number(params[1])];
      if (!r) { show(errorBox("That result is gone (the page was reloaded): search again."), el("a", { href: "#/search" }, "Search")); return; }
      const target = await api(`/videos/${encodeURIComponent(r.id)}`);
      pair = { target, score: r.score, confidence: r.confidence, segments: r.segments, matrix: r.matrix };
      queryId = last.videoId;
      queryLabel = last.file ? last.file.name : queryId;
      querySrc = last.url || `/videos/${encodeURIComponent(queryId)}/media`;
    } else {
      pair = await api(`/videos/${encodeURIComponent(params[0])}/compare/${encodeURIComponent(params[1])}`);
      queryId = params[0];
      queryLabel = pair.query.source;
      querySrc = `/videos/${encodeURIComponent(queryId)}/media`;
    }
  } catch (e) { show(errorBox(e.message)); return; }
  const target = pair.target;
  const targetSrc = `/videos/${encodeURIComponent(target.id)}/media`;
  const qPlayer = await player("query", queryLabel, querySrc, queryId);
  const tPlayer = await player("match", target.source, targetSrc, target.id);
  const canvas = el("canvas", { id: "heatmap", role: "img",
    "aria-label": "frame-to-frame similarity: rows are query frames, columns are the match's frames; the aligned segments are drawn in white" });
  const segments = el("ul", { id: "segments", class: "segments" });
  for (const [i, s] of pair.segments.entries()) {
    segments.append(el("li", {}, el("button", { type: "button", class: "segment", "data-index": i,
      onclick: () => { qPlayer.seek(s.query_start); tPlayer.seek(s.target_start); } },
    `${segmentText(s)} (${s.score.toFixed(2)})`)));
  }
  const pairs = el("div", { class: "pairs", id: "pairs", "aria-label": "aligned key frames" });
  show(el("section", { class: "panel" },
    el("h1", {}, "Compare"),
    el("p", { class: "numbers" }, `confidence ${percent(pair.confidence)}`,
      pair.score === null ? "" : ` · score ${pair.score.toFixed(3)}`),
    el("div", { class: "players" }, qPlayer.node, tPlayer.node),
    el("h2", {}, "Matched segments"),
    pair.segments.length ? segments : el("p", {}, `No segment: ${pair.segments_reason || "none found"}.`),
    el("h2", {}, "Similarity of every frame pair"), canvas,
    el("h2", {}, "Aligned frames"), pairs));
  if (pair.matrix) drawHeatmap(canvas, pair.matrix);
  for (const p of (pair.matrix ? pair.matrix.pairs : [])) {
    const q = queryId ? el("img", { src: frameUrl(queryId, p.query_time), alt: `query at ${clock(p.query_time)}` })
      : await grab(querySrc, p.query_time, `query at ${clock(p.query_time)}`);
    pairs.append(el("figure", { class: "pair" }, q,
      el("img", { src: frameUrl(target.id, p.target_time), alt: `match at ${clock(p.target_time)}` }),
      el("figcaption", {}, `${clock(p.query_time)} ↔ ${clock(p.target_time)} · similarity ${p.similarity.toFixed(2)}`)));
  }
}

// a player for a kept source; key frames (and a note saying so) where the source is not kept
async function player(label, name, src, videoId) {
  let playable = src.startsWith("blob:");
  if (!playable) {
    const r = await fetch(src, { headers: { Range: "bytes=0-0" } });  // one byte: is the source kept?
    playable = r.ok;
  }
  const caption = el("figcaption", {}, el("strong", {}, `${label}: `), name);
  if (playable) {
    const video = el("video", { controls: true, preload: "metadata", src, id: `player-${label}`,
      "aria-label": `${label} video` });
    return { node: el("figure", { class: "player" }, video, caption),
      seek: (t) => { video.currentTime = t; video.classList.add("seeked"); } };
  }
  const shown = el("img", { id: `player-${label}`, class: "still", alt: `${label} key frame`,
    src: videoId ? frameUrl(videoId, 0) : "" });
  const note = el("p", { class: "hint" }, "The source file is not kept on the server: showing its key frames.");
  return { node: el("figure", { class: "player" }, shown, caption, note),
    seek: (t) => { if (videoId) { shown.src = frameUrl(videoId, t); shown.dataset.time = String(t); } } };
}

// a frame of the user's own query file, drawn from a hidden player (it never left the browser for this)
function grab(src, t, alt) {
  return new Promise((resolve) => {
    const video = el("video", { muted: true, preload: "auto", src });
    const canvas = el("canvas", { role: "img", "aria-label": alt, class: "grab" });
    video.addEventListener("loadeddata", () => { video.currentTime = Math.min(t, Math.max(0, video.duration - 0.05)); }, { once: true });
    video.addEventListener("seeked", () => {
      canvas.height = 96;
      canvas.width = Math.round((96 * video.videoWidth) / Math.max(1, video.videoHeight));
      canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
      resolve(canvas);
    }, { once: true });
    video.addEventListener("error", () => resolve(canvas), { once: true });
  });
}

function drawHeatmap(canvas, m) {
  const cell = Math.max(2, Math.floor(512 / Math.max(m.rows, m.cols, 1)));
  canvas.width = m.cols * cell;
  canvas.height = m.rows * cell;
  const ctx = canvas.getContext("2d");
  const bytes = Uint8Array.from(atob(m.data), (c) => c.charCodeAt(0));
  for (let i = 0; i < m.rows; i++) {
    for (let j = 0; j < m.cols; j++) {
      const v = bytes[i * m.cols + j] / 255;
      // dark blue (dissimilar) to yellow (similar)
      ctx.fillStyle = `rgb(${Math.round(255 * v)},${Math.round(40 + 200 * v)},${Math.round(120 * (1 - v))})`;
      ctx.fillRect(j * cell, i * cell, cell, cell);
    }
  }
  const at = (times, t) => {  // a time on an axis, in cells (between the rows/columns that hold it)
    if (!times.length) return 0;
    let k = 0;
    while (k + 1 < times.length && times[k + 1] <= t) k++;
    const next = k + 1 < times.length ? times[k + 1] : times[k] + (times.length > 1 ? times[k] - times[k - 1] : 1);
    return k + Math.min(1, Math.max(0, (t - times[k]) / Math.max(1e-6, next - times[k])));
  };
  ctx.strokeStyle = "#ffffff";
  ctx.lineWidth = Math.max(2, Math.min(4, cell / 6));
  for (const s of m.segments) {
    ctx.beginPath();
    ctx.moveTo(at(m.target_times, s.target_start) * cell, at(m.query_times, s.query_start) * cell);
    ctx.lineTo(at(m.target_times, s.target_end) * cell, at(m.query_times, s.query_end) * cell);
    ctx.stroke();
  }
}

// ----- Library
async function renderLibrary(params) {
  const q = params.get("q") || "";
  const meta = params.get("meta") || "";
  const offset = Math.max(0, Number(params.get("offset") || 0));
  const limit = 20;
  const search = el("form", { class: "row", role: "search" },
    el("label", { for: "library-q" }, "Name"), el("input", { id: "library-q", name: "q", value: q }),
    el("label", { for: "library-meta" }, "Metadata key:value"), el("input", { id: "library-meta", name: "meta", value: meta }),
    el("button", { type: "submit" }, "Filter"));
  search.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    if (search.q.value) next.set("q", search.q.value);
    if (search.meta.value) next.set("meta", search.meta.value);
    location.hash = `#/library?${next}`;
  });
  const files = el("input", { type: "file", id: "upload-files", multiple: true, accept: "video/*,.mkv,.webm,.mov,.avi" });
  const drop = el("div", { class: "drop", id: "upload-drop" }, "or drop videos here");
  const uploads = el("ul", { id: "uploads", class: "uploads", "aria-label": "uploads" });
  const list = el("div", { id: "library-list" });
  show(el("section", { class: "panel" }, el("h1", {}, "Library"),
    el("div", { class: "field" }, el("label", { for: "upload-files" }, "Add videos"), files), drop, uploads),
  el("section", { class: "panel" }, search, list));
  const addAll = (chosen) => { for (const f of chosen) uploadOne(f, uploads, () => loadPage()); };
  files.addEventListener("change", () => { addAll([...files.files]); files.value = ""; });
  dropZone(drop, addAll);

  async function loadPage() {
    const query = new URLSearchParams({ offset, limit });
    if (q) query.set("q", q);
    if (meta) query.set("meta", meta);
    let page;
    try { page = await api(`/videos?${query}`); } catch (e) { list.replaceChildren(errorBox(e.message)); return; }
    const rows = page.videos.map((v) => el("li", { class: "video-row", "data-id": v.id },
      el("img", { src: `/videos/${encodeURIComponent(v.id)}/thumbnail`, alt: "", loading: "lazy" }),
      el("div", {}, el("a", { href: `#/video/${encodeURIComponent(v.id)}`, class: "source" }, v.source),
        el("p", { class: "hint" }, `${clock(v.duration)} · ${v.width}×${v.height} · ${Object.entries(v.metadata || {}).map(([k, x]) => `${k}: ${x}`).join(", ")}`)),
      el("div", { class: "actions" },
        el("a", { class: "button", href: `#/search/${encodeURIComponent(v.id)}` }, "Search with it"),
        el("button", { type: "button", class: "danger", "aria-label": `Delete ${v.source}`,
          onclick: () => confirmDelete(v, loadPage) }, "Delete"))));
    const first = page.total ? offset + 1 : 0;
    const nav = el("nav", { class: "pager", "aria-label": "pages" },
      el("span", {}, `${first}–${offset + page.videos.length} of ${page.total}`),
      offset > 0 ? el("a", { href: pageLink(Math.max(0, offset - limit)) }, "Previous") : null,
      offset + limit < page.total ? el("a", { href: pageLink(offset + limit) }, "Next") : null);
    list.replaceChildren(rows.length ? el("ul", { class: "videos" }, rows) : el("p", {}, "No video here yet."), nav);
  }
  function pageLink(o) {
    const next = new URLSearchParams(params);
    next.set("offset", o);
    return `#/library?${next}`;
  }
  await loadPage();
}

async function uploadOne(file, container, onDone) {
  const bar = el("progress", { max: 100, value: 0, "aria-label": `${file.name} progress` });
  const status = el("span", { class: "state" }, "uploading");
  const row = el("li", { class: "upload" }, el("span", { class: "source" }, file.name), bar, status);
  container.append(row);
  const data = new FormData();
  data.append("files", file, file.name);
  try {
    const accepted = await send("POST", "/index", data, (f) => { bar.value = 100 * f; });
    const job = await waitJob(accepted.jobs[0].job_id, (j) => {
      bar.value = j.progress || 0;
      status.textContent = j.state === "running" ? j.stage : j.state;
    });
    if (job.state === "done") {
      status.textContent = job.result.created ? "indexed" : "already indexed";
      onDone();
    } else {
      status.replaceWith(el("span", { class: "error", role: "alert" }, `${job.error_code || job.state}: ${job.error_message || ""}`));
    }
  } catch (e) {
    status.replaceWith(el("span", { class: "error", role: "alert" }, `rejected: ${e.message}`));
  }
}

function confirmDelete(video, onDone) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = `Delete "${video.source}" from the index? This cannot be undone.`;
  const yes = document.getElementById("confirm-yes");
  const no = document.getElementById("confirm-no");
  yes.onclick = async () => {
    dialog.close();
    try { await api(`/videos/${encodeURIComponent(video.id)}`, { method: "DELETE" }); } catch (e) { alertBox(e.message); }
    onDone();
  };
  no.onclick = () => dialog.close();
  dialog.showModal();
  no.focus();
}

function alertBox(message) { view().prepend(errorBox(message)); }

// ----- one video
function spread(items, n) {  // at most n items, evenly chosen (a page stays under the API's rate limit)
  if (items.length <= n) return items;
  return Array.from({ length: n }, (_, i) => items[Math.floor((i * items.length) / n)]);
}

async function renderVideo(id) {
  let v, frames;
  try {
    v = await api(`/videos/${encodeURIComponent(id)}`);
    frames = await api(`/videos/${encodeURIComponent(id)}/keyframes`).catch(() => ({ times: [] }));
  } catch (e) { show(errorBox(e.message)); return; }
  const facts = [["id", v.id], ["source", v.source], ["external id", v.external_id], ["duration", clock(v.duration)],
    ["size", `${v.width}×${v.height}`], ["codec", v.codec], ["frame rate", v.fps], ["sha256", v.sha256],
    ["indexed", new Date(v.created * 1000).toLocaleString()], ...Object.entries(v.metadata || {})];
  const neighbours = el("ol", { id: "neighbours", class: "neighbours" }, el("li", {}, "searching…"));
  show(el("section", { class: "panel" },
    el("h1", { class: "source" }, v.source),
    el("dl", { class: "facts" }, facts.flatMap(([k, x]) => [el("dt", {}, k), el("dd", {}, x === null ? "—" : x)])),
    el("div", { class: "row" },
      el("a", { class: "button", href: `#/search/${encodeURIComponent(v.id)}` }, "Search with it"),
      el("button", { type: "button", class: "danger", onclick: () => confirmDelete(v, () => { location.hash = "#/library"; }) }, "Delete")),
    el("h2", {}, "Key frames"),
    el("div", { class: "strip wrap" }, spread(frames.times, 24).map((t) => el("img", { src: frameUrl(v.id, t), alt: `frame at ${clock(t)}`, loading: "lazy" }))),
    el("h2", {}, "Nearest neighbours"), neighbours));
  try {
    const accepted = await api("/query?async=true", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ video_id: v.id, top_k: 10 }) });
    const job = await waitJob(accepted.job_id);
    if (job.state !== "done") throw new Error(job.error_message || job.state);
    neighbours.replaceChildren(...(job.result.results.length ? job.result.results.map((r) => el("li", {},
      el("a", { href: `#/video/${encodeURIComponent(r.id)}`, class: "source" }, r.source),
      ` · confidence ${percent(r.confidence)} · `,
      el("a", { href: `#/compare/${encodeURIComponent(v.id)}/${encodeURIComponent(r.id)}` }, "Compare")))
      : [el("li", {}, "no other video is similar")]));
  } catch (e) { neighbours.replaceChildren(el("li", { class: "error" }, e.message)); }
}

// ----- Duplicate sets of the whole collection
async function renderDuplicates() {
  const slider = el("input", { id: "dup-confidence", type: "number", min: 0, max: 1, step: 0.05, value: 0.5 });
  const button = el("button", { type: "button", id: "dup-run" }, "Group the collection");
  const status = el("p", { id: "dup-status", "aria-live": "polite" });
  const sets = el("div", { id: "dup-sets" });
  show(el("section", { class: "panel" }, el("h1", {}, "Duplicate sets"),
    el("p", { class: "hint" }, "Every video searches the collection once; pairs above the confidence are grouped into sets."),
    el("div", { class: "row" }, el("label", { for: "dup-confidence" }, "Minimum confidence"), slider, button), status),
  sets);
  const load = async () => {
    let result;
    try { result = await api("/duplicates"); } catch (e) {
      sets.replaceChildren(el("p", {}, e.status === 404 ? "No grouping has run yet." : e.message));
      return;
    }
    status.textContent = `${result.groups.length} sets, ${result.grouped} of ${result.videos} videos grouped at confidence ≥ ${result.min_confidence}`;
    sets.replaceChildren(...result.groups.map((g, i) => {
      const best = new Map();
      for (const p of g.pairs) {  // each video's strongest pair with the representative, for Compare
        const other = p.a === g.representative ? p.b : p.b === g.representative ? p.a : null;
        if (other && !best.has(other)) best.set(other, p);
      }
      return el("section", { class: "panel dup-set", "aria-label": `set ${i + 1}` },
        el("h2", {}, `Set ${i + 1}: ${g.videos.length} videos`),
        el("ul", { class: "videos" }, g.videos.map((v) => el("li", { class: "video-row" },
          el("img", { src: `/videos/${encodeURIComponent(v.id)}/thumbnail`, alt: "", loading: "lazy" }),
          el("div", {}, el("a", { class: "source", href: `#/video/${encodeURIComponent(v.id)}` }, v.source),
            el("p", { class: "hint" }, v.id === g.representative ? `representative · ${clock(v.duration)}`
              : `confidence ${percent(best.has(v.id) ? best.get(v.id).confidence : null)} · ${clock(v.duration)}`)),
          v.id === g.representative ? el("span") : el("div", { class: "actions" },
            el("a", { class: "button", href: `#/compare/${encodeURIComponent(g.representative)}/${encodeURIComponent(v.id)}` }, "Compare"))))));
    }));
  };
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const accepted = await api("/duplicates", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ min_confidence: Number(slider.value) }) });
      const job = await waitJob(accepted.job_id, (j) => { status.textContent = `${j.state}: ${j.stage} ${Math.round(j.progress || 0)}%`; });
      if (job.state !== "done") throw new Error(`${job.error_code}: ${job.error_message}`);
      await load();
    } catch (e) { status.replaceChildren(errorBox(e.message)); } finally { button.disabled = false; }
  });
  await load();
}

// ----- Jobs and health
async function renderJobs() {
  const health = el("div", { id: "health" });
  const table = el("div", { id: "jobs" });
  show(el("section", { class: "panel" }, el("h1", {}, "Jobs and health"), health, table));
  const refresh = async () => {
    try {
      const [jobs, ready] = await Promise.all([api("/jobs?limit=100"),
        fetch("/readyz").then((r) => r.json())]);
      health.replaceChildren(el("p", { class: "numbers" },
        el("span", { class: ready.ready ? "ok" : "error" }, ready.ready ? "ready" : "not ready"),
        ` · ${jobs.workers_alive} worker(s) · ${jobs.queue_depth} waiting or running · `,
        Object.entries(jobs.jobs_by_state).map(([s, n]) => `${s} ${n}`).join(", ")));
      const rows = jobs.jobs.map((j) => el("tr", { class: `job ${j.state}` },
        el("td", {}, j.kind), el("td", { class: "source" }, j.filename || "—"), el("td", {}, j.state),
        el("td", {}, j.state === "running" ? `${j.stage} ${Math.round(j.progress)}%` : j.stage),
        el("td", {}, j.error_code ? el("span", { class: "error" }, `${j.error_code}: ${j.error_message || ""}`) : ""),
        el("td", {}, new Date(j.created * 1000).toLocaleTimeString())));
      table.replaceChildren(el("table", {}, el("caption", {}, "Newest jobs first"),
        el("thead", {}, el("tr", {}, ["kind", "file", "state", "stage", "error", "created"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows)));
    } catch (e) { table.replaceChildren(errorBox(e.message)); }
  };
  await refresh();
  state.timers.push(setInterval(refresh, 2000));
}

// ----- routing
async function route() {
  const hash = location.hash || "#/search";
  const [path, query] = hash.slice(2).split("?");
  const parts = path.split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    if (a.dataset.view === parts[0]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const params = new URLSearchParams(query || "");
  if (parts[0] === "library") await renderLibrary(params);
  else if (parts[0] === "video") await renderVideo(parts[1]);
  else if (parts[0] === "compare") await renderCompare(parts.slice(1));
  else if (parts[0] === "jobs") await renderJobs();
  else if (parts[0] === "duplicates") await renderDuplicates();
  else renderSearch(parts[1] || null);
  document.body.dataset.ready = parts[0] || "search";
}

async function start() {
  state.config = await fetch("/ui/config").then((r) => r.json());
  const signOut = document.getElementById("sign-out");
  signOut.hidden = !(state.config.keys_required && sessionStorage.getItem(KEY));
  signOut.addEventListener("click", async () => {
    await fetch("/session", { method: "DELETE" });
    sessionStorage.removeItem(KEY);
    signOut.hidden = true;
    await signIn("");
    route();
  });
  if (state.config.keys_required && !sessionStorage.getItem(KEY)) await signIn("");
  window.addEventListener("hashchange", route);
  await route();
}

document.addEventListener("DOMContentLoaded", start);
