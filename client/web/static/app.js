// The page: a queue of uploads, each sent to the JSON API, each answered with a result card.
"use strict";

(() => {
  const TOKEN_KEY = "deepfake-web-token";
  // A frame is shown from its presentation time until the next one's: the box of frame k is drawn
  // while the player's clock is at or past frame_times[k] (with this slack for rounding).
  const TIME_SLACK_S = 0.001;
  const DEFAULT_FRAME_S = 1 / 25;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const IMAGE_NAME = /\.(jpe?g|png)$/i;
  // The frames of a temporal answer named under its verdict, by weight.
  const TOP_WEIGHTED_FRAMES = 3;
  const SHA256_SHOWN = 12;

  const RECENT_CASES = 20;

  // cases: what GET /api/cases/status said (null: the page keeps no case history).
  const state = { token: sessionStorage.getItem(TOKEN_KEY), models: null, queue: [], busy: false, cases: null };

  const $ = (selector, root = document) => root.querySelector(selector);

  function authHeaders() {
    return state.token ? { Authorization: `Bearer ${state.token}` } : {};
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch (error) {
      return null;
    }
  }

  function formatBytes(size) {
    const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
    for (const [unit, scale] of units) {
      if (size >= scale) return `${(size / scale).toFixed(1).replace(/\.0$/, "")} ${unit}`;
    }
    return `${size} bytes`;
  }

  // ------------------------------------------------------------------------- server and models

  function showServerError(message) {
    $("#server-error-text").textContent = message;
    $("#server-error").hidden = false;
    $("#server-status").textContent = "Not connected.";
  }

  async function loadModels() {
    $("#server-error").hidden = true;
    $("#server-status").textContent = "Connecting to the detection server…";
    let response;
    try {
      response = await fetch("/api/models", { headers: authHeaders(), cache: "no-store" });
    } catch (error) {
      showServerError(`The page's own server cannot be reached (${error.message}).`);
      return;
    }
    const body = parseJson(await response.text()) || {};
    if (response.status === 401) {
      $("#token-form").hidden = false;
      $("#server-status").textContent = "An access token is needed.";
      return;
    }
    if (!response.ok) {
      showServerError(`The detection server is not available: ${body.error || `HTTP ${response.status}`}`);
      return;
    }
    $("#token-form").hidden = true;
    state.models = body;
    const select = $("#frames");
    select.replaceChildren();
    for (const length of body.lengths) {
      const option = document.createElement("option");
      option.value = String(length);
      option.textContent = `${length} frames`;
      option.selected = length === body.default_frames;
      select.append(option);
    }
    select.disabled = body.lengths.length === 0;
    fillVersions();
    $("#size-limit").textContent = body.max_upload;
    $("#file-input").accept = body.accept;
    const banner = $("#demo-banner");
    banner.hidden = !body.warning;
    banner.textContent = body.warning || "";
    $("#server-status").textContent = body.lengths.length
      ? `Connected to Triton at ${body.triton_url}: ${body.lengths.join(", ")}-frame models ready.`
      : `Connected to Triton at ${body.triton_url}, but no deepfake_<N> model is ready yet.`;
    if (!body.lengths.length) showServerError("No model is ready on the detection server yet.");
    loadCaseStatus();
  }

  // The versions model_info lists for a length, in the section of the chosen analysis.
  function versionRows(frames, mode) {
    const section = mode === "temporal" ? "temporal" : "classifiers";
    const sections = (state.models && state.models.versions) || {};
    return ((sections[section] || {})[String(frames)] || []).filter((row) => row.ready);
  }

  // The version selector follows the chosen length and analysis: "latest" first, then every version served.
  function fillVersions() {
    const frames = Number($("#frames").value);
    const temporal = $("input[name=mode][value=temporal]");
    const temporalServed = Boolean(state.models && state.models.temporal_lengths.includes(frames));
    temporal.disabled = !temporalServed;
    if (temporal.checked && !temporalServed) $("input[name=mode][value=full]").checked = true;
    const mode = $("input[name=mode]:checked").value;
    const rows = versionRows(frames, mode);
    const latest = rows.find((row) => row.latest);
    const select = $("#model-version");
    const chosen = select.value;
    select.replaceChildren();
    const first = document.createElement("option");
    first.value = "";
    first.textContent = latest ? `latest (version ${latest.version})` : "latest";
    select.append(first);
    for (const row of rows) {
      const option = document.createElement("option");
      option.value = String(row.version);
      option.textContent = `version ${row.version}: ${row.checkpoint}${row.demo ? " (demo weights)" : ""}`;
      option.selected = option.value === chosen;
      select.append(option);
    }
    select.disabled = rows.length === 0;
  }

  // ------------------------------------------------------------------------- the queue

  function addFiles(files) {
    for (const file of files) {
      const card = $("#card-template").content.firstElementChild.cloneNode(true);
      const entry = {
        file,
        card,
        frames: Number($("#frames").value) || (state.models && state.models.default_frames) || 20,
        mode: $("input[name=mode]:checked").value,
        version: $("#model-version").value,
        status: "queued",
        result: null,
        selected: 0,
        objectUrl: null,
      };
      $(".file-name", card).textContent = file.name;
      $(".file-size", card).textContent = formatBytes(file.size);
      $(".retry", card).addEventListener("click", () => {
        entry.status = "queued";
        setState(entry, "Queued");
        pump();
      });
      $("#queue").prepend(card);
      const limit = state.models ? state.models.max_upload_bytes : Infinity;
      if (file.size > limit) {
        fail(entry, `This file is ${formatBytes(file.size)}: larger than the limit of ${state.models.max_upload}.`, false);
        continue;
      }
      setState(entry, "Queued");
      state.queue.push(entry);
    }
    pump();
  }

  function setState(entry, text, progress) {
    const { card } = entry;
    card.dataset.status = entry.status;
    $(".card-state", card).textContent = text;
    const bar = $(".upload-progress", card);
    const row = $(".progress-row", card);
    row.hidden = !(entry.status === "uploading" || entry.status === "analysing");
    if (progress === undefined) bar.removeAttribute("value");
    else bar.value = Math.round(progress * 100);
    $(".progress-text", card).textContent =
      entry.status === "uploading" ? `Uploading… ${Math.round((progress || 0) * 100)} %` : entry.status === "analysing" ? "Analysing on the server…" : "";
    if (entry.status !== "error") $(".card-error", card).hidden = true;
  }

  function fail(entry, message, retry) {
    entry.status = "error";
    setState(entry, "Not analysed");
    const box = $(".card-error", entry.card);
    box.hidden = false;
    $(".error-message", entry.card).textContent = message;
    $(".retry", entry.card).hidden = !retry;
  }

  async function pump() {
    if (state.busy) return;
    const entry = state.queue.find((item) => item.status === "queued");
    if (!entry) return;
    state.busy = true;
    try {
      await analyse(entry);
    } finally {
      state.busy = false;
    }
    pump();
  }

  function send(url, form, entry) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) setState(entry, "Uploading", event.loaded / event.total);
      });
      xhr.upload.addEventListener("load", () => {
        entry.status = "analysing";
        setState(entry, "Analysing");
      });
      xhr.addEventListener("load", () => resolve({ status: xhr.status, body: parseJson(xhr.responseText) }));
      xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
      xhr.addEventListener("abort", () => resolve({ status: 0, body: null }));
      xhr.send(form);
    });
  }

  async function analyse(entry) {
    entry.status = "uploading";
    setState(entry, "Uploading", 0);
    const form = new FormData();
    form.append("file", entry.file, entry.file.name);
    form.append("frames", String(entry.frames));
    const verdictOnly = entry.mode === "verdict";
    const allFaces = entry.mode === "faces";
    const original = entry.mode === "original";
    const temporal = entry.mode === "temporal";
    if (verdictOnly) form.append("verdict_only", "true");
    if (allFaces) form.append("all_faces", "true");
    if (original) form.append("original", "true");
    if (temporal) form.append("temporal", "true");
    if (entry.version) form.append("model_version", entry.version);
    const started = performance.now();
    const scoreOnly = verdictOnly || allFaces || original || temporal;
    const { status, body } = await send(scoreOnly ? "/api/score" : "/api/explain", form, entry);
    const elapsed = performance.now() - started;
    if (status === 200 && body) {
      entry.status = "done";
      entry.result = body;
      setState(entry, "Done");
      renderResult(entry, elapsed);
      if (state.cases && state.cases.can_review && body.case && body.case.id) refreshCases();
      return;
    }
    if (status === 401) {
      $("#token-form").hidden = false;
      fail(entry, "The page needs its access token: enter it above, then retry.", true);
      return;
    }
    if (status === 0) {
      fail(entry, "The connection to the page's server was lost before an answer came. Retry when it is back.", true);
      return;
    }
    const message = (body && body.error) || `The page's server answered HTTP ${status}.`;
    // The server's own refusals (4xx) are about this file: retrying gives the same answer.
    const retry = status >= 500 || status === 408;
    fail(entry, retry ? message : `The file was refused: ${message}`, retry);
  }

  // ------------------------------------------------------------------------- the result card

  function renderResult(entry, elapsed) {
    const { card, result } = entry;
    const n = result.frames;
    $(".result", card).hidden = false;
    renderKnownMatch(entry);
    renderCase(entry);
    $(".decision-label", card).textContent = result.decision;
    card.dataset.decision = result.decision;
    $(".decision-text", card).textContent = result.decision_text;
    $(".prob-fake-calibrated", card).textContent = result.operating_point.calibrated
      ? result.prob_fake_calibrated.toFixed(4) : "not calibrated";
    const label = $(".verdict-label", card);
    label.textContent = result.label;
    card.dataset.label = result.label;
    $(".verdict-confidence", card).textContent = `${result.confidence.toFixed(1)} %`;
    $(".prob-fake", card).textContent = result.prob_fake.toFixed(4);
    $(".frame-mean", card).textContent =
      result.frame_prob_fake_mean === null ? "not asked for (verdict only)" : result.frame_prob_fake_mean.toFixed(4);
    $(".frames-decoded", card).textContent = `${result.frames_decoded} of ${n}`;
    $(".faces-found", card).textContent = `${result.faces_found} of ${n} frames`;
    $(".latency", card).textContent =
      `${Math.round(result.latency_ms)} ms on the detection server, ${Math.round(elapsed)} ms from upload to verdict`;
    $(".model-name", card).textContent = result.model;
    $(".model-version", card).textContent =
      `${result.model_version} (${entry.version ? "the version asked for" : "the latest served"})`;
    const checkpoint = result.checkpoint;
    const sha256 = `sha256 ${String(result.checkpoint_sha256).slice(0, SHA256_SHOWN)}…`;
    const lineage = checkpoint && checkpoint.lineage
      ? `, trained from ${String(checkpoint.lineage.parent_sha256).slice(0, SHA256_SHOWN)}…` : "";
    $(".checkpoint", card).textContent = checkpoint
      ? `${checkpoint.checkpoint} (accuracy ${checkpoint.checkpoint_accuracy} %, ${checkpoint.precision}, ${sha256}${lineage})`
      : sha256;
    $(".demo-note", card).hidden = !result.demo;
    const temporal = Boolean(result.frame_weight);
    $(".explanation", card).textContent = (temporal
      ? `PROB_FAKE is the trained temporal model's answer: it looks at the ${n} frames together and weighs each.` +
        " The timeline scores every frame on its own through the same head."
      : `PROB_FAKE is the probability of FAKE from the ${n}-frame model exactly as published: its LSTM takes one step per frame from a zero state, ` +
        `so the verdict comes from frame ${n} alone.` +
        (result.frame_prob_fake ? " The timeline scores every frame the same way, on its own." : "")) +
      (result.model.startsWith("original_")
        ? " Faces were found as the original app found them (dlib, the first face, tight crops; the whole frame where none)." : "");
    const weights = $(".frame-weights", card);
    weights.hidden = !temporal;
    if (temporal) {
      const order = result.frame_weight.map((weight, i) => [weight, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      weights.textContent = "Frames that counted most: " + order.slice(0, TOP_WEIGHTED_FRAMES)
        .map(([weight, i]) => `frame ${i + 1} (${(100 * weight).toFixed(1)} %)`).join(", ") + ".";
    }
    if (result.frame_prob_fake) renderTimeline(entry);
    if (result.face_tracks) renderFaces(entry);
    renderMedia(entry);
    if (result.heatmap_png) renderStrip(entry);
    $(".download-json", card).onclick = () => downloadJson(entry);
    const zipButton = $(".download-zip", card);
    zipButton.hidden = !result.heatmap_png;
    zipButton.onclick = () => downloadZip(entry);
  }

  function renderFaces(entry) {
    const { card, result } = entry;
    const tracks = result.face_tracks;
    $(".faces-block", card).hidden = false;
    const left = result.faces_seen - tracks.length;
    $(".faces-summary", card).textContent =
      `Is any face fake: ${result.max_prob_fake.toFixed(4)} (the highest mean frame score of a face, over the frames it was detected in). ` +
      `${tracks.length} face${tracks.length === 1 ? "" : "s"} scored` + (left > 0 ? `, ${left} more seen and left out.` : ".") +
      " Face 1 is the main face, the one the verdict above describes.";
    const list = $(".faces-list", card);
    list.replaceChildren();
    tracks.forEach((track, i) => {
      const detected = track.frame_prob_fake.filter((_, k) => track.face_found[k]);
      const mean = detected.length ? detected.reduce((a, b) => a + b, 0) / detected.length : NaN;
      const item = document.createElement("li");
      item.className = "face-track";
      item.dataset.face = String(i);
      item.dataset.probFake = String(track.prob_fake);
      item.textContent = `Face ${i + 1}: PROB_FAKE ${track.prob_fake.toFixed(4)}, mean over its ${detected.length} detected ` +
        `frames ${Number.isNaN(mean) ? "n/a" : mean.toFixed(4)}, prominence ${track.prominence.toFixed(0)}`;
      list.append(item);
    });
  }

  function placeBox(element, box, media, sourceWidth, sourceHeight) {
    // The picture keeps its aspect ratio inside the element (letterboxed when they differ).
    const scale = Math.min(media.clientWidth / sourceWidth, media.clientHeight / sourceHeight);
    const offsetX = (media.clientWidth - sourceWidth * scale) / 2;
    const offsetY = (media.clientHeight - sourceHeight * scale) / 2;
    const [x1, y1, x2, y2] = box;
    element.style.left = `${media.offsetLeft + offsetX + x1 * scale}px`;
    element.style.top = `${media.offsetTop + offsetY + y1 * scale}px`;
    element.style.width = `${(x2 - x1) * scale}px`;
    element.style.height = `${(y2 - y1) * scale}px`;
  }

  function drawOtherFaces(entry, index, media, sourceWidth, sourceHeight) {
    const { card, result } = entry;
    const holder = $(".other-faces", card);
    holder.replaceChildren();
    if (!result.face_tracks || index < 0) return;
    result.face_tracks.slice(1).forEach((track, i) => {
      const element = document.createElement("div");
      element.className = track.face_found[index] ? "face-box other" : "face-box other not-found";
      element.dataset.face = String(i + 1);
      element.dataset.box = track.face_boxes[index].join(",");
      const label = document.createElement("span");
      label.className = "face-box-label";
      label.textContent = `face ${i + 2}: ${track.frame_prob_fake[index].toFixed(2)}`;
      element.append(label);
      placeBox(element, track.face_boxes[index], media, sourceWidth, sourceHeight);
      holder.append(element);
    });
  }

  function svg(name, attributes) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    return element;
  }

  function renderTimeline(entry) {
    const { card, result } = entry;
    const values = result.frame_prob_fake;
    const width = 640;
    const height = 180;
    const pad = { left: 40, right: 16, top: 12, bottom: 28 };
    const x = (i) => pad.left + (values.length === 1 ? 0.5 : i / (values.length - 1)) * (width - pad.left - pad.right);
    const y = (p) => pad.top + (1 - p) * (height - pad.top - pad.bottom);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "timeline-chart", role: "img",
      "aria-label": "fake probability of each frame" });
    for (const tick of [0, 0.5, 1]) {
      chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(tick), y2: y(tick), class: "grid" }));
      const text = svg("text", { x: pad.left - 6, y: y(tick) + 4, class: "tick", "text-anchor": "end" });
      text.textContent = tick.toFixed(1);
      chart.append(text);
    }
    const mean = result.frame_prob_fake_mean;
    chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(mean), y2: y(mean), class: "mean-line" }));
    chart.append(svg("polyline", { points: values.map((p, i) => `${x(i)},${y(p)}`).join(" "), class: "series" }));
    values.forEach((p, i) => {
      const point = svg("circle", { cx: x(i), cy: y(p), r: 5, class: result.face_found[i] ? "point" : "point no-face",
        "data-frame": i });
      const title = svg("title", {});
      title.textContent = `frame ${i + 1}: ${p.toFixed(4)}${result.face_found[i] ? "" : " (face not detected)"}`;
      point.append(title);
      point.addEventListener("click", () => selectFrame(entry, i, true));
      chart.append(point);
    });
    const label = svg("text", { x: width - pad.right, y: height - 6, class: "tick", "text-anchor": "end" });
    label.textContent = `frame 1 … ${values.length}`;
    chart.append(label);
    const block = $(".timeline-block", card);
    block.hidden = false;
    const holder = $(".timeline", card);
    holder.replaceChildren(chart);
    const legend = document.createElement("p");
    legend.className = "timeline-legend";
    legend.textContent = `Mean ${mean.toFixed(4)} (dashed line). Hollow points: no face detected in that frame, the nearest frame's box was used.`;
    holder.append(legend);
  }

  function isStill(file) {
    return file.type.startsWith("image/") || IMAGE_NAME.test(file.name);
  }

  function renderMedia(entry) {
    const { card, file } = entry;
    const video = $(".video", card);
    const still = $(".still", card);
    const note = $(".player-note", card);
    entry.objectUrl = entry.objectUrl || URL.createObjectURL(file);
    if (isStill(file)) {
      video.hidden = true;
      still.hidden = false;
      still.addEventListener("load", () => drawBox(entry, 0));
      still.src = entry.objectUrl;
      note.textContent = "A still image: every frame is this picture.";
      window.addEventListener("resize", () => drawBox(entry, 0));
      return;
    }
    const unplayable = () => {
      video.hidden = true;
      $(".face-box", card).hidden = true;
      card.dataset.playable = "false";
      note.textContent =
        "Your browser cannot play this file (its container or codec, as with AVI or some MKV files); " +
        "the timeline, the faces and the heatmaps are shown without it.";
    };
    if (file.type && video.canPlayType(file.type) === "") {
      unplayable();
      return;
    }
    video.addEventListener("error", unplayable);
    video.addEventListener("loadedmetadata", () => {
      if (!video.videoWidth) {
        unplayable();
        return;
      }
      card.dataset.playable = "true";
      updateBox(entry);
    });
    for (const name of ["timeupdate", "seeked", "play", "pause"]) video.addEventListener(name, () => updateBox(entry));
    window.addEventListener("resize", () => updateBox(entry));
    if ("requestVideoFrameCallback" in video) {
      const onFrame = () => {
        updateBox(entry);
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    }
    video.src = entry.objectUrl;
    const times = entry.result.frame_times;
    note.textContent = `Boxes are drawn over the ${entry.result.frames} frames analysed (${times[0].toFixed(2)} s to ${times[times.length - 1].toFixed(2)} s).`;
  }

  function frameDuration(times) {
    const steps = [];
    for (let i = 1; i < times.length; i += 1) if (times[i] > times[i - 1]) steps.push(times[i] - times[i - 1]);
    if (!steps.length) return DEFAULT_FRAME_S;
    steps.sort((a, b) => a - b);
    return steps[Math.floor(steps.length / 2)];
  }

  function frameAt(times, now) {
    let index = -1;
    for (let i = 0; i < times.length; i += 1) if (times[i] <= now + TIME_SLACK_S) index = i;
    if (index < 0) return -1;
    if (now > times[times.length - 1] + frameDuration(times) + TIME_SLACK_S) return -1;
    return index;
  }

  function updateBox(entry) {
    const video = $(".video", entry.card);
    if (video.hidden || !video.videoWidth) return;
    const index = frameAt(entry.result.frame_times, video.currentTime);
    drawBox(entry, index);
    // The strip, the viewer and the timeline follow the video.
    if (index >= 0 && index !== entry.selected) selectFrame(entry, index, false);
    else if (index >= 0) highlight(entry, index);
  }

  // Places the face box of frame `index` over the displayed picture (video or still).
  function drawBox(entry, index) {
    const { card, result } = entry;
    const box = $(".face-box", card);
    const still = !$(".still", card).hidden;
    const media = still ? $(".still", card) : $(".video", card);
    const sourceWidth = still ? media.naturalWidth : media.videoWidth;
    const sourceHeight = still ? media.naturalHeight : media.videoHeight;
    if (index < 0 || !sourceWidth) {
      box.hidden = true;
      box.dataset.frame = "";
      drawOtherFaces(entry, -1, media, sourceWidth, sourceHeight);
      return;
    }
    placeBox(box, result.face_boxes[index], media, sourceWidth, sourceHeight);
    drawOtherFaces(entry, index, media, sourceWidth, sourceHeight);
    const found = result.face_found[index];
    box.classList.toggle("not-found", !found);
    box.dataset.frame = String(index);
    box.dataset.box = result.face_boxes[index].join(",");
    box.dataset.found = String(found);
    $(".face-box-label", card).textContent = found ? `frame ${index + 1}` : `frame ${index + 1}: no face detected, nearest box`;
    box.hidden = false;
  }

  function renderStrip(entry) {
    const { card, result } = entry;
    const strip = $(".strip", card);
    strip.replaceChildren();
    result.heatmap_png.forEach((png, i) => {
      const item = document.createElement("button");
      item.type = "button";
      item.className = "strip-item";
      item.dataset.frame = String(i);
      const image = document.createElement("img");
      image.className = "heatmap";
      image.alt = `heatmap of frame ${i + 1}`;
      image.src = `data:image/png;base64,${png}`;
      const caption = document.createElement("span");
      caption.textContent = result.frame_prob_fake ? `${i + 1} · ${result.frame_prob_fake[i].toFixed(2)}` : `${i + 1}`;
      if (!result.face_found[i]) item.classList.add("no-face");
      item.append(image, caption);
      item.addEventListener("click", () => selectFrame(entry, i, true));
      strip.append(item);
    });
    strip.hidden = false;
    $(".frame-viewer", card).hidden = false;
    $(".prev-frame", card).onclick = () => selectFrame(entry, Math.max(0, entry.selected - 1), true);
    $(".next-frame", card).onclick = () => selectFrame(entry, Math.min(result.frames - 1, entry.selected + 1), true);
    card.addEventListener("keydown", (event) => {
      if (event.key === "ArrowLeft") $(".prev-frame", card).click();
      if (event.key === "ArrowRight") $(".next-frame", card).click();
    });
    selectFrame(entry, result.frames - 1, false);
  }

  function highlight(entry, index) {
    for (const element of entry.card.querySelectorAll("[data-frame].current")) element.classList.remove("current");
    for (const element of entry.card.querySelectorAll(`.point[data-frame="${index}"], .strip-item[data-frame="${index}"]`)) {
      element.classList.add("current");
    }
  }

  function selectFrame(entry, index, seek) {
    const { card, result } = entry;
    entry.selected = index;
    if (result.heatmap_png) {
      $(".viewer-face", card).src = `data:image/png;base64,${result.face_png[index]}`;
      $(".viewer-heatmap", card).src = `data:image/png;base64,${result.heatmap_png[index]}`;
      const score = result.frame_prob_fake ? `, fake ${result.frame_prob_fake[index].toFixed(4)}` : "";
      $(".viewer-caption", card).textContent =
        `Frame ${index + 1} of ${result.frames} at ${result.frame_times[index].toFixed(2)} s${score}` +
        (result.face_found[index] ? "" : ", no face detected (nearest frame's box)");
    }
    highlight(entry, index);
    const video = $(".video", card);
    if (seek && !video.hidden && video.videoWidth) {
      video.pause();
      video.currentTime = result.frame_times[index];
    } else if (!$(".still", card).hidden) {
      drawBox(entry, 0);
    }
  }

  // ------------------------------------------------------------------------- downloads

  function baseName(entry) {
    return entry.file.name.replace(/\.[^.]+$/, "") || "upload";
  }

  function save(blob, name) {
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function resultJson(entry) {
    const { face_png: facePng, heatmap_png: heatmapPng, ...fields } = entry.result;
    return fields;
  }

  function downloadJson(entry) {
    save(new Blob([JSON.stringify(resultJson(entry), null, 2)], { type: "application/json" }), `${baseName(entry)}.deepfake.json`);
  }

  function decodeBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function downloadZip(entry) {
    const { result } = entry;
    const digits = Math.max(3, String(result.frames - 1).length);
    const files = [];
    result.heatmap_png.forEach((png, i) => {
      const index = String(i).padStart(digits, "0");
      files.push({ name: `frame_${index}_face.png`, data: decodeBase64(result.face_png[i]) });
      files.push({ name: `frame_${index}_heatmap.png`, data: decodeBase64(png) });
    });
    files.push({ name: "summary.json", data: new TextEncoder().encode(JSON.stringify(resultJson(entry), null, 2)) });
    save(window.makeZip(files), `${baseName(entry)}.heatmaps.zip`);
  }

  // ------------------------------------------------------------------------- the bank and the case history

  // A JSON call of the page's API with the token: {status, body} (or {status, blob} with options.blob).
  async function api(path, options = {}) {
    const headers = { ...authHeaders() };
    let body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    let response;
    try {
      response = await fetch(path, { method: options.method || "GET", headers, body, cache: "no-store" });
    } catch (error) {
      return { status: 0, body: { error: `the page's server cannot be reached (${error.message})` } };
    }
    if (options.blob && response.ok) return { status: response.status, blob: await response.blob(), body: {} };
    return { status: response.status, body: parseJson(await response.text()) || {} };
  }

  function failure(status, body) {
    return (body && body.error) || `HTTP ${status}`;
  }

  function span(times) {
    return `${times[0].toFixed(1)}–${times[1].toFixed(1)} s`;
  }

  function percent(share) {
    return `${Math.round(share * 100)} %`;
  }

  // known_match in words: null is no match, status "match" an entry, anything else the bank unavailable.
  function knownMatchWords(known) {
    if (known === null) {
      return { status: "none", label: "No match", text: "No entry of the bank of confirmed fakes matches this video." };
    }
    if (!known || known.status !== "match") {
      const reason = (known && known.reason) || "the server said nothing of it";
      return { status: "unavailable", label: "Bank unavailable",
        text: `The bank of confirmed fakes could not be asked (${reason}); the scores stand.` };
    }
    const label = known.label === "fake" ? "KNOWN FAKE" : `KNOWN ${String(known.label).toUpperCase()}`;
    return { status: "match", label,
      text: `Bank entry ${known.id}${known.note ? `: “${known.note}”` : ""}. ${percent(known.similarity)} of this ` +
        `video's frames match it, at ${span(known.query_span)} of this video and ${span(known.entry_span)} of the ` +
        `entry (${percent(known.entry_similarity)} of the entry's frames).` };
  }

  function renderKnownMatch(entry) {
    const { card, result } = entry;
    const box = $(".known-match", card);
    const words = knownMatchWords(result.known_match);
    box.hidden = false;
    box.dataset.status = words.status;
    box.dataset.entry = words.status === "match" ? String(result.known_match.id) : "";
    $(".known-match-label", box).textContent = words.label;
    $(".known-match-text", box).textContent = words.text;
  }

  function caseMessage(entry, text, error) {
    const message = $(".case-message", entry.card);
    message.textContent = text;
    message.classList.toggle("error", Boolean(error));
  }

  // The case the upload was recorded as, and the review form when the token is a reviewer's.
  function renderCase(entry) {
    const { card, result } = entry;
    const recorded = result.case;
    const block = $(".case-block", card);
    block.hidden = !recorded;
    if (!recorded) return;
    if (recorded.status === "unavailable") {
      $(".case-info", card).textContent = `Not recorded in the case history: ${recorded.reason}`;
      $(".review-form", card).hidden = true;
      return;
    }
    card.dataset.caseId = String(recorded.id);
    $(".case-info", card).textContent = `Case ${recorded.id}, content sha256 ${recorded.content_sha256.slice(0, SHA256_SHOWN)}…` +
      (recorded.uploaded_by ? `, uploaded by ${recorded.uploaded_by}.` : ".");
    $(".review-form", card).onsubmit = (event) => {
      event.preventDefault();
      submitReview(entry);
    };
    $(".confirm-fake", card).onclick = () => confirmFake(entry);
    updateReviewForm(entry);
  }

  function updateReviewForm(entry) {
    const { card } = entry;
    if (!card.dataset.caseId) return;
    const can = Boolean(state.cases && state.cases.can_review);
    $(".review-form", card).hidden = !can;
    if (!can) {
      const why = state.cases && state.cases.why ? state.cases.why : "sign in with your reviewer token";
      caseMessage(entry, `Decisions cannot be recorded from here: ${why}.`, false);
      return;
    }
    if ($(".case-message", card).textContent.startsWith("Decisions cannot")) caseMessage(entry, "", false);
    refreshReviews(entry);
  }

  async function refreshReviews(entry) {
    const { status, body } = await api(`/api/cases/${entry.card.dataset.caseId}`);
    if (status === 200) fillReviews($(".case-reviews", entry.card), body.reviews);
  }

  function reviewText(review) {
    return `${review.at.replace("T", " ").slice(0, 19)} UTC, ${review.reviewer}: ${review.decision}` +
      (review.bank_entry_id ? ` (confirmed into the bank as entry ${review.bank_entry_id})` : "") +
      (review.note ? `. ${review.note}` : "");
  }

  function fillReviews(list, reviews) {
    list.replaceChildren();
    for (const review of reviews) {
      const item = document.createElement("li");
      item.className = "case-review";
      item.dataset.reviewer = review.reviewer;
      item.dataset.decision = review.decision;
      if (review.bank_entry_id) item.dataset.bankEntry = String(review.bank_entry_id);
      item.textContent = reviewText(review);
      list.append(item);
    }
  }

  async function submitReview(entry) {
    const { card } = entry;
    const decision = $(".review-decision", card).value;
    if (!decision) {
      caseMessage(entry, "Choose fake, real or unsure first.", true);
      return;
    }
    const { status, body } = await api(`/api/cases/${card.dataset.caseId}/review`,
      { method: "POST", json: { decision, note: $(".review-note", card).value } });
    if (status !== 200) {
      caseMessage(entry, `Not recorded: ${failure(status, body)}`, true);
      return;
    }
    card.dataset.reviewed = body.review.decision;
    caseMessage(entry, `Recorded: ${body.review.decision}, by ${body.review.reviewer}.`, false);
    refreshReviews(entry);
    if (!$("#history-tools").hidden) refreshCases();
  }

  async function confirmFake(entry) {
    const { card } = entry;
    const button = $(".confirm-fake", card);
    button.disabled = true;
    const { status, body } = await api(`/api/cases/${card.dataset.caseId}/confirm`,
      { method: "POST", json: { note: $(".review-note", card).value } });
    button.disabled = false;
    if (status !== 200) {
      caseMessage(entry, `Not confirmed: ${failure(status, body)}`, true);
      return;
    }
    card.dataset.bankEntry = String(body.entry.id);
    caseMessage(entry, `Confirmed as fake into the bank as entry ${body.entry.id}, by ${body.review.reviewer}: ` +
      "every server matches copies of it within seconds.", false);
    refreshReviews(entry);
    if (!$("#history-tools").hidden) refreshCases();
  }

  function historyMessage(text, error) {
    const message = $("#history-message");
    message.textContent = text;
    message.classList.toggle("error", Boolean(error));
  }

  async function loadCaseStatus() {
    const { status, body } = await api("/api/cases/status");
    const panel = $("#history");
    state.cases = status === 200 && body.history ? body : null;
    panel.hidden = !state.cases;
    for (const entry of state.queue) updateReviewForm(entry);
    if (!state.cases) return;
    panel.dataset.reviewer = body.reviewer || "";
    $("#reviewer-status").textContent = body.reviewer
      ? `Signed in as ${body.reviewer}: your decisions are recorded under this name. Cases are kept ${body.retention_days} days.`
      : `${body.why}.`;
    $("#reviewer-form").hidden = Boolean(body.reviewer);
    $("#history-tools").hidden = !body.can_review;
    if (body.can_review) refreshCases();
  }

  function caseItem(found, similarity) {
    const item = document.createElement("li");
    item.className = "case-item";
    item.dataset.caseId = String(found.id);
    item.dataset.sha256 = found.content_sha256;
    const known = knownMatchWords(found.known_match);
    const head = document.createElement("p");
    head.className = "case-summary";
    head.textContent = (similarity === undefined ? "" : `similarity ${percent(similarity)}: `) +
      `case ${found.id}, ${found.created_at.replace("T", " ").slice(0, 19)} UTC, ${found.file_name}: ` +
      `${found.decision} (PROB_FAKE ${found.prob_fake === null ? "n/a" : found.prob_fake.toFixed(4)}), ` +
      `${known.label}${known.status === "match" ? ` (entry ${found.known_match.id})` : ""}, ` +
      `sha256 ${found.content_sha256.slice(0, SHA256_SHOWN)}…` +
      (found.uploaded_by ? `, uploaded by ${found.uploaded_by}` : "") +
      (found.confirmed_entry ? `, in the bank as entry ${found.confirmed_entry}` : "");
    const similar = document.createElement("button");
    similar.type = "button";
    similar.className = "button similar";
    similar.textContent = "Similar videos";
    similar.addEventListener("click", () => searchSimilar(found.id));
    head.append(" ", similar);
    const reviews = document.createElement("ul");
    reviews.className = "case-reviews";
    fillReviews(reviews, found.reviews);
    item.append(head, reviews);
    return item;
  }

  // What the case list shows: the latest cases, those of one content hash, or those similar to a case.
  // Only the answer to the latest request is shown, so a refresh never overwrites a newer search.
  const listing = { query: { kind: "recent" }, sequence: 0 };

  async function showCases(query) {
    if (query) listing.query = query;
    const { kind, sha256, caseId } = listing.query;
    const sequence = ++listing.sequence;
    const { status, body } = kind === "similar"
      ? await api("/api/cases/search-similar", { method: "POST", json: { case_id: caseId } })
      : await api(kind === "sha256" ? `/api/cases?sha256=${encodeURIComponent(sha256)}` : `/api/cases?limit=${RECENT_CASES}`);
    if (sequence !== listing.sequence) return;
    if (status !== 200) {
      historyMessage(`The case history could not be read: ${failure(status, body)}`, true);
      return;
    }
    const found = kind === "similar" ? body.matches : body.cases;
    const count = found.length;
    const cases = `${count} case${count === 1 ? "" : "s"}`;
    historyMessage(kind === "similar"
      ? `${cases} whose fingerprint matches case ${caseId}'s (the bank's rule).`
      : kind === "sha256" ? `${cases} of the bytes with sha256 ${sha256.slice(0, SHA256_SHOWN)}….`
        : `The ${count} latest case${count === 1 ? "" : "s"} (kept ${body.retention_days} days).`);
    $("#case-list").replaceChildren(...found.map((item) => (kind === "similar"
      ? caseItem(item.case, item.similarity) : caseItem(item))));
    $("#case-list").dataset.listing = kind;
  }

  function refreshCases() {
    return showCases();
  }

  function searchSimilar(caseId) {
    return showCases({ kind: "similar", caseId });
  }

  async function exportCases() {
    const { status, blob, body } = await api("/api/cases/export.csv", { blob: true });
    if (status !== 200) {
      historyMessage(`The export failed: ${failure(status, body)}`, true);
      return;
    }
    save(blob, "cases.csv");
    historyMessage("The decisions were saved as cases.csv.");
  }

  // ------------------------------------------------------------------------- wiring

  function wire() {
    const zone = $("#drop-zone");
    const input = $("#file-input");
    input.addEventListener("change", () => {
      addFiles([...input.files]);
      input.value = "";
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      addFiles([...event.dataTransfer.files]);
    });
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") input.click();
    });
    $("#server-retry").addEventListener("click", loadModels);
    $("#frames").addEventListener("change", fillVersions);
    for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", fillVersions);
    $("#reviewer-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = $("#reviewer-token").value.trim();
      $("#reviewer-token").value = "";
      sessionStorage.setItem(TOKEN_KEY, state.token);
      loadModels();
    });
    $("#case-search").addEventListener("submit", (event) => {
      event.preventDefault();
      const sha256 = $("#case-sha256").value.trim().toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(sha256)) {
        historyMessage("A content sha256 is 64 hexadecimal digits (sha256sum FILE prints it).", true);
        return;
      }
      showCases({ kind: "sha256", sha256 });
    });
    $("#case-recent").addEventListener("click", () => showCases({ kind: "recent" }));
    $("#case-export").addEventListener("click", exportCases);
    $("#token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = $("#token-input").value.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      loadModels();
    });
    loadModels();
  }

  wire();
})();
