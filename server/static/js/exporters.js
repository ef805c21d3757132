// Downloads of an analysis: the whole result as JSON, the onsets as CSV (one row per onset).

/** The file name without its extension, safe to reuse for the downloads. */
export function baseName(filename) {
  const stem = (filename || "audio").replace(/\.[^./\\]*$/, "");
  return stem.replace(/[^\w.\- ]+/g, "_").trim() || "audio";
}

export function toJson(filename, taskId, result) {
  return JSON.stringify({ file: filename, task_id: taskId, ...result }, null, 2);
}

/** One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180). */
function csvField(text) {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/**
 * The onsets as CSV, with the same header as `run.py analyze --format csv` (file,time_s,strength,band; band empty
 * when the analysis ran with `beats: false`) and
 * numbers written exactly (the shortest text that reads back as the same double).
 */
export function toCsv(filename, onsets) {
  const rows = ["file,time_s,strength,band"];
  const file = csvField(filename || "audio");
  for (const onset of onsets) {
    rows.push(`${file},${String(onset.time)},${String(onset.strength)},${onset.band || ""}`);
  }
  return `${rows.join("\n")}\n`;
}

/** Offer `text` as a file download called `name`. */
export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
