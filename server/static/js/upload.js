// The upload page: send a file to POST /api/v3/analysis (upload progress from XHR), follow its task
// (GET /api/v3/analysis/{id}?wait_s=, answered as soon as it finishes) to the result, then show the
// waveform with the onsets, play it from any point, and offer the onsets as JSON and CSV.

import { ApiError, PATHS, fetchJson, formatClock, sleep } from "./api.js";
import { TokenField, accessProblem, getToken } from "./auth.js";
import { baseName, download, toCsv, toJson } from "./exporters.js";
import { Player } from "./player.js";
import { SettingsPanel } from "./settings.js";
import { $, setBanner, setPill } from "./ui.js";
import { WaveformView, summarise } from "./waveform.js";

const POLL_FIRST_MS = 200;
const POLL_MAX_MS = 1000;
const POLL_FAILURES = 20; // consecutive failed polls before giving up
const MAX_DECODED_BYTES = 600 * 1024 * 1024; // larger files are played, not decoded for a waveform

const ui = {
  banner: $("#banner"),
  pill: $("#state"),
  drop: $("#drop"),
  file: $("#file"),
  job: $("#job"),
  jobName: $("#job-name"),
  jobSize: $("#job-size"),
  upload: $("#upload-progress"),
  analysis: $("#analysis-progress"),
  cancel: $("#cancel"),
  again: $("#again"),
  result: $("#result"),
  summary: $("#summary"),
  decodeNote: $("#decode-note"),
  play: $("#play"),
  position: $("#position"),
  zoom: $("#zoom"),
  onsets: $("#onsets"),
  json: $("#download-json"),
  csv: $("#download-csv"),
};

const settings = new SettingsPanel($("#settings"), { storageKey: "transient.upload.settings" });
const tokenField = new TokenField($("#token-form"), () => {
  const again = file ? " Press “Analyse again” to send the file with it." : "";
  setBanner(ui.banner, "info", `Access token saved for this tab.${again}`);
});
const player = new Player();
const view = new WaveformView($("#wave"), $("#overview"), { onSeek: (t) => playFrom(t) });
let file = null;
let run = 0; // increases with each analysis; stale callbacks compare against it
let xhr = null;
let finished = null; // {taskId, result, filename}

function formatBytes(bytes) {
  const units = ["bytes", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function setProgress(row, fraction, text, done = false) {
  row.querySelector(".bar > div").style.width = `${Math.round(Math.min(1, Math.max(0, fraction)) * 100)}%`;
  row.querySelector("output").textContent = text;
  row.classList.toggle("done", done);
}

/** POST the file with its settings; resolves to the task id. Upload progress drives the first bar. */
function send(chosen, values, myRun) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("settings", JSON.stringify(values));
    form.append("file", chosen, chosen.name);
    const request = new XMLHttpRequest();
    xhr = request;
    request.open("POST", PATHS.analysis);
    if (getToken()) request.setRequestHeader("Authorization", `Bearer ${getToken()}`);
    request.responseType = "json";
    request.upload.onprogress = (event) => {
      if (myRun !== run || !event.lengthComputable) return;
      const fraction = event.loaded / event.total;
      setProgress(ui.upload, fraction, `${Math.floor(fraction * 100)} %`);
    };
    request.onload = () => {
      xhr = null;
      const body = request.response;
      if (request.status === 202 && body && body.task_id) resolve(body.task_id);
      else {
        const error = (body && body.error) || {};
        reject(new ApiError(request.status, error.code || `http_${request.status}`, error.message || request.statusText));
      }
    };
    request.onerror = () => {
      xhr = null;
      reject(new ApiError(0, "unreachable", `cannot reach the server at ${window.location.host}`));
    };
    request.onabort = () => {
      xhr = null;
      reject(new ApiError(0, "cancelled", "the upload was cancelled"));
    };
    request.send(form);
  });
}

/** Poll the task until it succeeds (its result) or fails (throws ApiError with the task's error). */
async function follow(taskId, myRun) {
  let delay = POLL_FIRST_MS;
  let failures = 0;
  while (myRun === run) {
    let task;
    const asked = performance.now();
    try {
      // wait_s: the server answers as soon as the task finishes, else after the wait (progress meanwhile).
      task = await fetchJson(`${PATHS.task(taskId)}?wait_s=${delay / 1000}`, { cache: "no-store" });
      failures = 0;
      if (ui.banner.dataset.level === "warn") setBanner(ui.banner, "", "");
    } catch (err) {
      failures += 1;
      if (err.status !== 0 || failures >= POLL_FAILURES) throw err;
      setBanner(ui.banner, "warn", `Lost contact with the server; still trying (${failures})…`);
      await sleep(POLL_MAX_MS);
      continue;
    }
    if (task.status === "success") return task.result;
    if (task.status === "failed") {
      const error = task.error || { code: "failed", message: "the analysis failed" };
      throw new ApiError(200, error.code, error.message);
    }
    const text = task.status === "pending" ? "queued" : `${Math.floor(task.progress * 100)} %`;
    setProgress(ui.analysis, task.progress, text);
    await sleep(Math.max(0, delay - (performance.now() - asked))); // only if the server did not wait
    delay = Math.min(POLL_MAX_MS, delay * 1.3);
  }
  return null;
}

async function analyse(chosen) {
  run += 1;
  const myRun = run;
  if (xhr) xhr.abort();
  player.reset();
  finished = null;
  file = chosen;
  setBanner(ui.banner, "", "");
  ui.job.classList.remove("hidden");
  ui.result.classList.add("hidden");
  ui.jobName.textContent = chosen.name;
  ui.jobSize.textContent = formatBytes(chosen.size);
  setProgress(ui.upload, 0, "0 %");
  setProgress(ui.analysis, 0, "–");
  ui.cancel.disabled = false;
  ui.again.disabled = true;
  setPill(ui.pill, "connecting", "Uploading");
  try {
    const taskId = await send(chosen, settings.values(), myRun);
    if (myRun !== run) return;
    ui.cancel.disabled = true;
    setProgress(ui.upload, 1, "100 %", true);
    setProgress(ui.analysis, 0, "queued");
    setPill(ui.pill, "connecting", "Analysing");
    const result = await follow(taskId, myRun);
    if (myRun !== run || !result) return;
    setProgress(ui.analysis, 1, "done", true);
    setPill(ui.pill, "live", `${result.onsets.length} onsets`);
    finished = { taskId, result, filename: chosen.name };
    await show(chosen, result, myRun);
  } catch (err) {
    if (myRun !== run) return;
    ui.cancel.disabled = true;
    const ended = err.code === "cancelled" ? "cancelled" : "failed";
    for (const row of [ui.upload, ui.analysis]) {
      if (!row.classList.contains("done")) setProgress(row, 0, ended); // never "queued" for a dead task
    }
    setPill(ui.pill, "error", err.code === "cancelled" ? "Cancelled" : accessProblem(err) ? "Access refused" : "Failed");
    if (err.code !== "cancelled") setBanner(ui.banner, "error", explain(err));
    if (accessProblem(err)) tokenField.demand();
  } finally {
    if (myRun === run) ui.again.disabled = false;
  }
}

function explain(err) {
  const problem = accessProblem(err);
  if (problem) return `Access refused: ${problem}`;
  if (err.status === 0) return `Cannot reach the server at ${window.location.host}. Check that it is running, then try again.`;
  if (err.status === 413) return `The file is too large for this server: ${err.message}`;
  if (err.status === 503) return `The server is busy: ${err.message}. Try again in a moment.`;
  return `The file could not be analysed: ${err.message} (${err.code})`;
}

async function decode(chosen, result) {
  const bytes = result.duration * result.sample_rate * result.channels * 4;
  if (bytes > MAX_DECODED_BYTES) return { buffer: null, why: "This file is too long to draw in the browser; it plays from the file itself." };
  try {
    const data = await chosen.arrayBuffer();
    const context = new OfflineAudioContext(1, 1, result.sample_rate);
    return { buffer: await context.decodeAudioData(data), why: "" };
  } catch (err) {
    return { buffer: null, why: `This browser cannot decode the file (${err.message || err.name}), so there is no waveform; the onsets are below and playback uses the file itself.` };
  }
}

async function show(chosen, result, myRun) {
  ui.summary.textContent = [
    chosen.name,
    formatClock(result.duration),
    `${(result.sample_rate / 1000).toFixed(1)} kHz`,
    result.channels === 1 ? "mono" : `${result.channels} ch`,
    `${result.onsets.length} onsets`,
    `${result.settings.method}, threshold ${result.settings.threshold}`,
  ].join(" · ");
  renderTable(result.onsets);
  ui.result.classList.remove("hidden");
  view.load(result.duration, result.onsets, null);
  const { buffer, why } = await decode(chosen, result);
  if (myRun !== run) return;
  if (buffer) player.useBuffer(buffer);
  else player.useElement(URL.createObjectURL(chosen));
  ui.decodeNote.textContent = why;
  ui.decodeNote.classList.toggle("hidden", !why);
  view.load(result.duration, result.onsets, buffer ? summarise(buffer) : null);
  ui.zoom.value = "0";
  ui.play.disabled = false;
  ui.result.dataset.ready = "true";
}

function renderTable(onsets) {
  const rows = onsets.map((onset, i) => {
    const row = document.createElement("tr");
    row.dataset.index = String(i);
    row.dataset.time = String(onset.time);
    const gap = i > 0 ? ((onset.time - onsets[i - 1].time) * 1000).toFixed(0) : "";
    for (const text of [i + 1, formatClock(onset.time), onset.time.toFixed(3), onset.strength.toFixed(2), gap]) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      row.append(cell);
    }
    return row;
  });
  ui.onsets.replaceChildren(...rows);
}

const PRE_ROLL_S = 0.25; // a row plays from just before its onset, so the attack is heard

async function playFrom(t) {
  if (!player.ready) return;
  try {
    await player.play(t);
  } catch (err) {
    setBanner(ui.banner, "warn", `Playback failed: ${err.message}`);
    return;
  }
  ui.play.textContent = "Pause";
  tick();
}

function tick() {
  const t = player.time;
  view.current = currentOnset(t);
  view.setPlayhead(t, player.playing);
  ui.position.textContent = `${formatClock(t)} / ${formatClock(view.duration)}`;
  markRow(view.current);
  syncZoom();
  if (player.playing) requestAnimationFrame(tick);
}

function currentOnset(t) {
  const onsets = view.onsets;
  let lo = -1;
  let hi = onsets.length - 1;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi + 1) / 2);
    if (onsets[mid].time <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

let markedRow = null;
function markRow(index) {
  const row = index >= 0 ? ui.onsets.children[index] : null;
  if (row === markedRow) return;
  if (markedRow) markedRow.classList.remove("current");
  if (row) row.classList.add("current");
  markedRow = row;
}

function syncZoom() {
  const position = (1000 * Math.log(view.zoom)) / Math.log(Math.max(view.maxZoom, 1.0001));
  if (document.activeElement !== ui.zoom) ui.zoom.value = String(Math.round(position));
}

function togglePlay() {
  if (!player.ready) return;
  if (player.playing) {
    player.pause();
    ui.play.textContent = "Play";
    tick();
  } else {
    playFrom(player.time >= view.duration - 0.01 ? 0 : player.time);
  }
}

player.onEnded = () => {
  ui.play.textContent = "Play";
  tick();
};

function pick(files) {
  const chosen = files && files[0];
  if (chosen) analyse(chosen);
}

ui.file.addEventListener("change", () => {
  pick(ui.file.files);
  ui.file.value = "";
});
ui.drop.querySelector("label").addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    ui.file.click();
  }
});
for (const type of ["dragenter", "dragover"]) {
  document.addEventListener(type, (event) => {
    event.preventDefault();
    ui.drop.classList.add("over");
  });
}
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) ui.drop.classList.remove("over");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  ui.drop.classList.remove("over");
  pick(event.dataTransfer && event.dataTransfer.files);
});
ui.cancel.addEventListener("click", () => {
  if (xhr) xhr.abort();
});
ui.again.addEventListener("click", () => {
  if (file) analyse(file);
});
ui.play.addEventListener("click", togglePlay);
ui.onsets.addEventListener("click", (event) => {
  const row = event.target.closest("tr");
  if (row) playFrom(Math.max(0, Number(row.dataset.time) - PRE_ROLL_S));
});
ui.zoom.addEventListener("input", () => {
  const zoom = Math.exp((Number(ui.zoom.value) / 1000) * Math.log(view.maxZoom));
  const center = player.playing || view.playhead !== null ? view.playhead : (view.t0 + view.t1) / 2;
  view.zoomTo(zoom, center);
});
view.onViewChange = syncZoom;
ui.json.addEventListener("click", () => {
  if (finished) download(`${baseName(finished.filename)}.onsets.json`, toJson(finished.filename, finished.taskId, finished.result), "application/json");
});
ui.csv.addEventListener("click", () => {
  if (finished) download(`${baseName(finished.filename)}.onsets.csv`, toCsv(finished.filename, finished.result), "text/csv");
});
document.addEventListener("keydown", (event) => {
  if (event.key !== " " || event.target.closest("input, select, textarea, button, label")) return;
  event.preventDefault();
  togglePlay();
});
window.addEventListener("resize", () => view.draw());
