// Downloads of an analysis: the whole result as JSON, the onsets and beats as CSV (one row each).

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

/** The CSV columns, as `run.py analyze --format csv` writes them (server/cli/analyze.py, csv_header). */
export const CSV_HEADER = "file,time_s,strength,band,kind,bar_position,bpm";

/**
 * The analysis as CSV, the same as `run.py analyze --format csv` (server/cli/analyze.py, csv_rows): one row per
 * onset (kind `onset`: strength, band, empty when the analysis ran with `beats: false`) and per beat (kind `beat`:
 * empty strength and band, `bar_position` when known, `bpm` the file's `tempo_bpm`), in time order, an onset
 * before a beat at the same time. Numbers are written exactly (the shortest text that reads back as the same
 * double).
 */
export function toCsv(filename, result) {
  const file = csvField(filename || "audio");
  const bpm = result.tempo_bpm == null ? "" : String(result.tempo_bpm);
  const keyed = [];
  for (const onset of result.onsets) {
    keyed.push([onset.time, 0, `${file},${String(onset.time)},${String(onset.strength)},${onset.band || ""},onset,,`]);
  }
  for (const beat of result.beats || []) {
    const bar = beat.bar_position == null ? "" : String(beat.bar_position);
    keyed.push([beat.time, 1, `${file},${String(beat.time)},,,beat,${bar},${bpm}`]);
  }
  keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return `${[CSV_HEADER, ...keyed.map((row) => row[2])].join("\n")}\n`;
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
