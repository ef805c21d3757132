// Downloads of an analysis: the whole result as JSON, the onsets as CSV (one row per onset).

/** The file name without its extension, safe to reuse for the downloads. */
export function baseName(filename) {
  const stem = (filename || "audio").replace(/\.[^./\\]*$/, "");
  return stem.replace(/[^\w.\- ]+/g, "_").trim() || "audio";
}

export function toJson(filename, taskId, result) {
  return JSON.stringify({ file: filename, task_id: taskId, ...result }, null, 2);
}

export function toCsv(onsets) {
  const rows = ["time_s,strength"];
  for (const onset of onsets) rows.push(`${onset.time.toFixed(6)},${onset.strength.toFixed(6)}`);
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
