// The voiceops web page: speak through POST /v1/audio/speech (or the job API for long
// text) and show the pod's status from status.json. No framework and no inline code, so
// the page's Content-Security-Policy allows only its own files. Every URL is relative:
// the page works the same behind the front Service, a port-forward or a path prefix.
"use strict";

const SPEECH_URL = "../v1/audio/speech";
const JOBS_URL = "../v1/audio/jobs";
const STATUS_URL = "status.json";
const STATUS_INTERVAL_MS = 2000;
const JOB_POLL_MS = 500;
const ENGINE_HEADER = "X-Voiceops-Engine";
const VOICE_HEADER = "X-Voiceops-Voice";
const RATE_HEADER = "X-Voiceops-Sample-Rate";
// The API's error `param` -> the form control it is about.
const FIELD_OF_PARAM = { input: "text", voice: "voice", speed: "speed", response_format: "format" };

const $ = (id) => document.getElementById(id);

const page = {
  status: null, // the latest status.json
  objectUrl: null, // the audio element's and download link's blob URL
  lastSummary: "",
  lastTier: undefined,
  tierChange: "",
};

// ---- status -------------------------------------------------------------------------

function formatBytes(bytes) {
  const gib = bytes / 2 ** 30;
  return gib >= 1 ? `${gib.toFixed(1)} GiB` : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

function setText(id, text) {
  const node = $(id);
  if (node.textContent !== text) node.textContent = text;
}

function renderStatus(status) {
  page.status = status;
  setText("status-ready", status.ready ? "yes" : "no");
  $("status-ready").className = status.ready ? "ok" : "bad";
  setText("status-tier", status.tier || "not set");
  const engine = status.engine;
  let engineText = engine.device ? `${engine.name} on ${engine.device}` : `${engine.name} (loading)`;
  if (engine.degraded) engineText += `, degraded: speaking with ${engine.fallback || "no"} fallback`;
  setText("status-engine", engineText);
  setText("status-pod", status.pod || "not named");
  const gpu = status.gpu_memory;
  if (gpu) {
    const percent = gpu.total_bytes ? Math.round((100 * gpu.used_bytes) / gpu.total_bytes) : 0;
    let text = `${formatBytes(gpu.used_bytes)} of ${formatBytes(gpu.total_bytes)} (${percent} %)`;
    if (gpu.gpus > 1) text += ` on ${gpu.gpus} GPUs`;
    if (!gpu.healthy) text += ", unhealthy";
    if (gpu.simulated) text += ", simulated";
    setText("status-gpu", text);
  } else {
    setText("status-gpu", "no GPU");
  }
  const admission = status.admission;
  setText("status-running", `${admission.running} of ${admission.max_concurrency}`);
  setText(
    "status-queued",
    `${admission.queued} of ${admission.max_queue}${admission.saturated ? " (full: new requests get 429)" : ""}`,
  );
  setText(
    "status-jobs",
    status.jobs_enabled ? `on, up to ${status.jobs_max_input_chars} characters` : "off",
  );
  renderReasons(status.reasons);
  renderVoices(status.voices, status.default_voice);
  for (const option of $("format").options) option.disabled = !status.formats.includes(option.value);
  updateCounter();

  let summary = status.ready
    ? `Ready: tier ${status.tier || "not set"}, engine ${engine.name}.`
    : `Not ready (${Object.keys(status.reasons).join(", ")}): tier ${status.tier || "not set"}.`;
  // Kept until the next change: an operator watching a failover should not miss it.
  if (page.lastTier !== undefined && page.lastTier !== status.tier) {
    const when = new Date().toLocaleTimeString();
    page.tierChange = `Tier changed from ${page.lastTier || "not set"} to ${status.tier || "not set"} at ${when}.`;
  }
  page.lastTier = status.tier;
  if (page.tierChange) summary = `${summary} ${page.tierChange}`;
  if (summary !== page.lastSummary) {
    page.lastSummary = summary;
    $("summary").textContent = summary;
  }
  setText("status-updated", `Updated every 2 seconds; last at ${new Date().toLocaleTimeString()}.`);
}

function renderReasons(reasons) {
  const list = $("status-reasons");
  const entries = Object.entries(reasons);
  const key = JSON.stringify(entries);
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren(
    ...entries.map(([reason, message]) => {
      const item = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = reason;
      item.append(code, `: ${message}`);
      return item;
    }),
  );
}

function renderVoices(voices, defaultVoice) {
  const select = $("voice");
  const key = JSON.stringify([voices, defaultVoice]);
  if (select.dataset.key === key) return;
  select.dataset.key = key;
  const chosen = select.value;
  select.replaceChildren(
    ...voices.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name === defaultVoice ? `${name} (default)` : name;
      return option;
    }),
  );
  if (voices.includes(chosen)) select.value = chosen;
  else if (voices.includes(defaultVoice)) select.value = defaultVoice;
}

async function readStatus() {
  const response = await fetch(STATUS_URL, { cache: "no-store" });
  if (!response.ok) throw new Error(`status.json answered ${response.status}`);
  const status = await response.json();
  renderStatus(status);
  return status;
}

async function refreshStatus() {
  try {
    await readStatus();
  } catch (error) {
    const summary = `Cannot read the service status: ${error.message}`;
    if (summary !== page.lastSummary) {
      page.lastSummary = summary;
      $("summary").textContent = summary;
    }
  } finally {
    window.setTimeout(refreshStatus, STATUS_INTERVAL_MS);
  }
}

// ---- the form -----------------------------------------------------------------------

function limits() {
  const status = page.status;
  return {
    speech: status ? status.max_input_chars : 4096,
    jobs: status && status.jobs_enabled ? status.jobs_max_input_chars : 0,
  };
}

function updateCounter() {
  const length = $("text").value.length;
  const { speech, jobs } = limits();
  let text = `${length} of ${speech} characters`;
  let over = false;
  if (length > speech && jobs && length <= jobs) {
    text += `; longer than one request, so it runs as a job (up to ${jobs})`;
  } else if (length > speech) {
    text += jobs ? `; over the job limit of ${jobs}` : "; over the limit";
    over = true;
  }
  setText("counter", text);
  $("counter").classList.toggle("over", over);
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
  for (const id of Object.values(FIELD_OF_PARAM)) $(id).removeAttribute("aria-invalid");
}

function showError(message, param) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  const field = param ? FIELD_OF_PARAM[param] : undefined;
  if (field) {
    $(field).setAttribute("aria-invalid", "true");
    $(field).focus();
  }
}

// An error the API answered, as a sentence: OpenAI's envelope {"error": {"message", ...}}.
async function describeFailure(response) {
  let message = "";
  let param = null;
  try {
    const body = await response.json();
    message = body.error.message;
    param = body.error.param;
  } catch {
    message = ""; // not our envelope (a proxy's page): never show its body
  }
  if (response.status === 429) {
    const retry = response.headers.get("Retry-After");
    return {
      message: `The service is busy: retry in ${retry || "a few"} s.${message ? ` (${message})` : ""}`,
      param: null,
    };
  }
  if (response.status === 413) {
    return { message: `The request is too large: ${message || "refused by the service"}.`, param };
  }
  const what = message || `${response.status} ${response.statusText || "error"}`;
  return { message: `The service refused this (${response.status}): ${what}`, param };
}

class ShownError extends Error {
  constructor(message, param) {
    super(message);
    this.param = param;
  }
}

async function failFrom(response) {
  const { message, param } = await describeFailure(response);
  throw new ShownError(message, param);
}

function requestBody(text, responseFormat) {
  const speedText = $("speed").value.trim();
  return {
    model: "tts-1",
    input: text,
    voice: $("voice").value || undefined,
    // An empty or malformed number goes as it is, so the service names the rule it breaks.
    speed: speedText === "" ? 1 : Number.isNaN(Number(speedText)) ? speedText : Number(speedText),
    response_format: responseFormat,
  };
}

// 16-bit mono PCM -> a WAV blob the audio element can play.
function wavFromPcm(pcm, sampleRate) {
  const header = new DataView(new ArrayBuffer(44));
  const ascii = (offset, text) => [...text].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  ascii(0, "RIFF");
  header.setUint32(4, 36 + pcm.byteLength, true);
  ascii(8, "WAVEfmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true);
  header.setUint16(22, 1, true);
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  ascii(36, "data");
  header.setUint32(40, pcm.byteLength, true);
  return new Blob([header.buffer, pcm], { type: "audio/wav" });
}

// Play ``playable`` in the page, offer ``download``; resolves with the audio's duration.
function present(playable, download, extension) {
  if (page.objectUrl) URL.revokeObjectURL(page.objectUrl.play);
  if (page.objectUrl) URL.revokeObjectURL(page.objectUrl.download);
  const play = URL.createObjectURL(playable);
  const save = download === playable ? play : URL.createObjectURL(download);
  page.objectUrl = { play, download: save };
  const link = $("download");
  link.href = save;
  link.download = `speech.${extension}`;
  link.hidden = false;
  const audio = $("audio");
  return new Promise((resolve, reject) => {
    const done = () => {
      audio.removeEventListener("loadedmetadata", loaded);
      audio.removeEventListener("error", failed);
    };
    const loaded = () => {
      done();
      resolve(audio.duration);
    };
    const failed = () => {
      done();
      reject(new ShownError("The browser could not play this audio; download it instead.", null));
    };
    audio.addEventListener("loadedmetadata", loaded);
    audio.addEventListener("error", failed);
    audio.dataset.bytes = String(playable.size); // what plays; shown with the duration
    audio.src = play;
    audio.load();
  });
}

function formatSize(bytes) {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
}

function showAnswer({ engine, voice, tier, latencyMs, seconds, sampleRate, bytes }) {
  $("answer").hidden = false;
  setText("answer-engine", engine || "not named");
  setText("answer-tier", tier || "not set");
  setText("answer-voice", voice || "not named");
  setText("answer-latency", `${Math.round(latencyMs)} ms`);
  const rate = sampleRate ? `, ${sampleRate} Hz` : "";
  const length = Number.isFinite(seconds) ? `${seconds.toFixed(2)} s` : "unknown length";
  setText("answer-duration", `${length}${rate}, ${formatSize(bytes)}`);
  const rtf = Number.isFinite(seconds) && latencyMs > 0 ? seconds / (latencyMs / 1000) : NaN;
  setText("answer-rtf", Number.isFinite(rtf) ? `${rtf.toFixed(1)}× real time` : "unknown");
}

async function speak(text) {
  const responseFormat = $("format").value;
  const started = performance.now();
  const response = await fetch(SPEECH_URL, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(requestBody(text, responseFormat)),
  });
  if (!response.ok) await failFrom(response);
  const blob = await response.blob();
  const latencyMs = performance.now() - started;
  const sampleRate = Number(response.headers.get(RATE_HEADER)) || 0;
  if (blob.size === 0) throw new ShownError("The service answered with no audio.", null);
  const playable =
    responseFormat === "pcm" ? wavFromPcm(await blob.arrayBuffer(), sampleRate) : blob;
  const seconds = await present(playable, blob, responseFormat);
  // The answer names its engine, not its tier: the status read at once after it comes,
  // like the answer, over the browser's kept-alive connection, so from the same pod.
  const status = await readStatus().catch(() => page.status);
  showAnswer({
    engine: response.headers.get(ENGINE_HEADER),
    tier: status ? status.tier : null,
    voice: response.headers.get(VOICE_HEADER),
    latencyMs,
    seconds,
    sampleRate,
    bytes: blob.size,
  });
}

function showProgress(job) {
  const box = $("progress-box");
  box.hidden = false;
  const bar = $("progress");
  bar.max = Math.max(job.chunks.total, 1);
  bar.value = job.chunks.done;
  setText("progress-label", `Job ${job.state}: ${job.chunks.done} of ${job.chunks.total} parts`);
}

async function runJob(text) {
  // A job's audio is assembled chunk by chunk: wav or pcm only.
  const chosen = $("format").value;
  const responseFormat = chosen === "pcm" ? "pcm" : "wav";
  const started = performance.now();
  const created = await fetch(JOBS_URL, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(requestBody(text, responseFormat)),
  });
  if (!created.ok) await failFrom(created);
  let job = await created.json();
  const jobUrl = `${JOBS_URL}/${encodeURIComponent(job.id)}`;
  showProgress(job);
  while (!["succeeded", "failed", "cancelled"].includes(job.state)) {
    await new Promise((resolve) => window.setTimeout(resolve, JOB_POLL_MS));
    const polled = await fetch(jobUrl, { cache: "no-store" });
    if (!polled.ok) await failFrom(polled);
    job = await polled.json();
    showProgress(job);
  }
  if (job.state !== "succeeded") {
    const why = job.error && job.error.message ? job.error.message : "no reason given";
    throw new ShownError(`The job ${job.state}: ${why}`, null);
  }
  const audio = await fetch(`${jobUrl}/audio`);
  if (!audio.ok) await failFrom(audio);
  const blob = await audio.blob();
  const latencyMs = performance.now() - started;
  const playable = responseFormat === "pcm" ? wavFromPcm(await blob.arrayBuffer(), job.sample_rate) : blob;
  const seconds = await present(playable, blob, responseFormat);
  showAnswer({
    engine: Object.keys(job.engines).join(", "),
    tier: [...new Set(job.made_by.map((chunk) => chunk.tier))].join(", "),
    voice: job.voice,
    latencyMs,
    seconds,
    sampleRate: job.sample_rate,
    bytes: blob.size,
  });
}

async function onSubmit(event) {
  event.preventDefault();
  clearError();
  const text = $("text").value;
  if (!text.trim()) {
    showError("Type some text to speak.", "input");
    return;
  }
  const form = $("speak-form");
  const button = $("speak");
  button.disabled = true;
  form.setAttribute("aria-busy", "true");
  $("progress-box").hidden = true;
  try {
    const { speech, jobs } = limits();
    if (text.length > speech && jobs) await runJob(text);
    else await speak(text);
  } catch (error) {
    if (error instanceof ShownError) showError(error.message, error.param);
    else showError(`Cannot reach the service: ${error.message}`, null);
  } finally {
    button.disabled = false;
    form.removeAttribute("aria-busy");
  }
}

function start() {
  $("speak-form").addEventListener("submit", onSubmit);
  $("text").addEventListener("input", updateCounter);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("speak-form").requestSubmit();
    }
  });
  updateCounter();
  refreshStatus();
}

document.addEventListener("DOMContentLoaded", start);
