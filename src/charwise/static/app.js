// charwise playground: posts the settings to /api/generate and reads server-sent events,
// one per character (EventSource cannot POST, so fetch's stream reader parses the events).
"use strict";
const $ = (id) => document.getElementById(id);
const SHOW = { " ": "␣", "\n": "⏎", "\t": "⇥" };
const show = (c) => SHOW[c] || c;
const pct = (x) => (x >= 0.1 ? (100 * x).toFixed(1) : (100 * x).toFixed(2)) + "%";

let vocab = new Set();
let anyPrime = false;    // a byte model takes any text
let steps = [];          // one event per generated character
let spans = [];
let controller = null;
let hovering = null;     // index of the character under the mouse, if any

function bindSlider(id, fmt) {
  const input = $(id), out = $(id + "-value");
  const update = () => { out.textContent = fmt(Number(input.value)); };
  input.addEventListener("input", update);
  update();
}

async function loadInfo() {
  const res = await fetch("/api/info");
  const info = await res.json();
  const m = info.model;
  const bits = info.best_val_loss == null ? "" :
    ` · best loss ${(info.best_val_loss / Math.LN2).toFixed(3)} bits/char` +
    (info.eval_split === "train" ? " (on its training text)" : " (validation)");
  $("model-info").textContent = `${info.run} · ${m.cell.toUpperCase()} ${m.layers}×${m.hidden_size}` +
    ` · ${info.parameters.toLocaleString("en")} parameters · ${info.vocab.length} characters${bits}`;
  vocab = new Set(info.vocab);
  anyPrime = info.vocab_kind === "bytes";
  $("vocab").textContent = info.vocab.map(show).join(" ");
  const len = $("length");
  len.max = info.limits.max_chars;
  // the controls start at `charwise sample`'s defaults (SamplingParams, generation/params.py)
  const d = info.defaults;
  for (const [id, v] of [["temperature", d.temperature], ["top-p", d.top_p], ["length", d.n]]) {
    $(id).value = String(v);
    $(id).dispatchEvent(new Event("input"));
  }
  checkPrime();
}

// a quote the vocabulary lacks is matched to the form it has (the server does the same)
const QUOTES = { '"': ["\u201c", "\u201d"], "'": ["\u2018", "\u2019"],
  "\u201c": ['"'], "\u201d": ['"'], "\u2018": ["'"], "\u2019": ["'"] };
const known = (c) => vocab.has(c) || (QUOTES[c] || []).some((q) => vocab.has(q));

function checkPrime() {
  const bad = anyPrime ? [] : [...new Set([...$("prime").value].filter((c) => !known(c)))];
  const warn = $("oov");
  warn.hidden = bad.length === 0;
  warn.textContent = bad.length ? `Not in this model's vocabulary: ${bad.map(show).join(" ")}` : "";
  $("generate").disabled = bad.length > 0 || controller !== null;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function showStep(i) {
  const s = steps[i];
  if (!s) return;
  const rows = s.top.map(([c, p, q]) =>
    `<div class="alt${c === s.c ? " chosen" : ""}"><span class="glyph">${esc(show(c))}</span>` +
    `<span class="bar"><i style="width:${(100 * p).toFixed(1)}%"></i></span>` +
    `<span class="pct">${pct(p)}</span></div>`);
  if (!s.top.some(([c]) => c === s.c)) {
    rows.push(`<div class="alt chosen"><span class="glyph">${esc(show(s.c))}</span>` +
      `<span class="bar"><i style="width:${(100 * s.p).toFixed(1)}%"></i></span>` +
      `<span class="pct">${pct(s.p)}</span></div>`);
  }
  $("panel-body").innerHTML =
    `<p class="where">Character ${i + 1}: drew <code>${esc(show(s.c))}</code>, which the model gave ` +
    `${pct(s.p)}</p>${rows.join("")}` +
    `<p class="q">Bars: the model's probabilities. With this temperature and top-p, ` +
    `<code>${esc(show(s.c))}</code> was drawn with probability ${pct(s.q)}.</p>`;
  spans.forEach((el) => el.classList.remove("active"));
  spans[i].classList.add("active");
}

function esc(t) {
  return t.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

// "\n", "\t", "\\" typed in the stop box mean newline, tab, backslash
const ESC = { n: "\n", t: "\t", r: "\r", "\\": "\\" };
const unescape = (t) => t.replace(/\\([ntr\\])/g, (_, c) => ESC[c]);

function addChar(ev) {
  steps.push(ev);
  const el = document.createElement("span");
  el.className = "ch";
  el.textContent = ev.c;
  el.dataset.i = String(ev.i);
  el.style.setProperty("--a", (0.5 * (1 - ev.p)).toFixed(3));
  spans.push(el);
  $("out").appendChild(el);
  if (hovering === null) showStep(steps.length - 1);
}

async function generate() {
  const prime = $("prime").value;
  const body = {
    prime, n: Number($("length").value), temperature: Number($("temperature").value),
    top_p: Number($("top-p").value), delay_ms: Number($("delay").value),
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if ($("stop-at").value !== "") body.stop = [unescape($("stop-at").value)];
  steps = []; spans = []; hovering = null;
  const out = $("out");
  out.innerHTML = "";
  const p = document.createElement("span");
  p.className = "prime";
  p.textContent = prime;
  out.appendChild(p);
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  setStatus("starting…");
  const t0 = performance.now();
  try {
    const res = await fetch("/api/generate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!res.ok) {
      const err = await res.json().catch(() => ({ error: res.statusText }));
      setStatus(`error ${res.status}: ${err.error}`, true);
      return;
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let k;
      while ((k = buf.indexOf("\n\n")) >= 0) {
        const chunk = buf.slice(0, k);
        buf = buf.slice(k + 2);
        for (const line of chunk.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.error) { setStatus(`error: ${ev.error}`, true); return; }
          if (ev.done) {
            if (ev.prime !== undefined) p.textContent = ev.prime;   // the prime as the model read it
            const why = ev.stop != null ? `, stopped at ${JSON.stringify(ev.stop)}` : ev.end ? ", end of item" : "";
            setStatus(`done: ${ev.n} characters in ${ev.seconds.toFixed(2)} s` +
              (ev.note || why ? ` (${[ev.note, why.slice(2)].filter(Boolean).join("; ")})` : ""));
            continue;
          }
          addChar(ev);   // the server trims a stop string itself (its done event's cut is 0)
          const secs = (performance.now() - t0) / 1000;
          setStatus(`generating… ${steps.length} / ${body.n} · ${(steps.length / secs).toFixed(0)} chars/s`);
          out.scrollTop = out.scrollHeight;
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") setStatus(`stopped after ${steps.length} characters`);
    else setStatus(`error: ${e.message}`, true);
  } finally {
    controller = null;
    $("stop").disabled = true;
    checkPrime();
  }
}

window.addEventListener("DOMContentLoaded", () => {
  bindSlider("temperature", (v) => (v === 0 ? "0 (greedy)" : v.toFixed(2)));
  bindSlider("top-p", (v) => v.toFixed(2));
  bindSlider("length", (v) => String(v));
  bindSlider("delay", (v) => `${v} ms/char`);
  $("prime").addEventListener("input", checkPrime);
  $("prime").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("generate").disabled) generate();
  });
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => controller && controller.abort());
  const out = $("out");
  out.addEventListener("mouseover", (e) => {
    const el = e.target.closest(".ch");
    if (!el) return;
    hovering = Number(el.dataset.i);
    showStep(hovering);
  });
  out.addEventListener("mouseleave", () => { hovering = null; });
  loadInfo().catch((e) => setStatus(`cannot load the model info: ${e.message}`, true));
});
