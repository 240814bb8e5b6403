// charwise web export: the model's step and sampler in plain JavaScript (typed arrays), run in
// this page. The maths is PyTorch's (nn.LSTM gates i, f, g, o; nn.GRU r, z, n with
// n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); nn.RNN tanh; charwise's CharTransformer with its
// KV cache and sliding window), the sampler is charwise's
// (generation/sampler.py: temperature, top-k, then top-p, inverse-CDF draw; temperature 0, or below the
// floor desc.greedy_below, = argmax).
// Products run in WebAssembly SIMD (float32 sums, as torch's) where the browser has it, else in
// plain JavaScript (float64 sums); either way the page agrees with torch's float32 to ~1e-6.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);

  function fatal(msg) {
    const el = $("fatal");
    el.textContent = msg;
    el.hidden = false;
    $("model-info").textContent = "this browser cannot run the model";
    $("generate").disabled = true;
  }

  // ------------------------------------------------------------------ what the page needs
  const missing = [];
  if (typeof Float32Array === "undefined" || typeof Float64Array === "undefined" ||
      typeof Int8Array === "undefined" || typeof DataView === "undefined") missing.push("typed arrays");
  if (typeof atob !== "function") missing.push("base64 decoding (atob)");
  if (typeof JSON === "undefined") missing.push("JSON");
  if (typeof Promise === "undefined") missing.push("promises");
  if (typeof performance === "undefined" || typeof performance.now !== "function") missing.push("performance.now");
  if (missing.length) {
    fatal("This browser lacks what the page needs to run the model: " + missing.join(", ") +
          ". Open the file in a current Chrome, Firefox, Safari or Edge.");
    return;
  }

  // ------------------------------------------------------------------ weights
  function f16ToF32(h) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, f = h & 1023;
    if (e === 0) return s * f * 5.960464477539063e-8;          // subnormal: f * 2^-24
    if (e === 31) return f ? NaN : s * Infinity;
    return s * (1 + f / 1024) * Math.pow(2, e - 15);
  }

  function decodeWeights(desc, b64) {
    const bin = atob(b64.replace(/\s+/g, ""));
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const buf = bytes.buffer, little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    const dv = new DataView(buf);
    const T = {};
    for (const t of desc.tensors) {
      const n = t.shape.reduce((a, b) => a * b, 1), out = new Float32Array(n);
      if (t.dtype === "f32") {
        if (little) out.set(new Float32Array(buf, t.offset, n));
        else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(t.offset + 4 * i, true);
      } else if (t.dtype === "f16") {
        for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(t.offset + 2 * i, true));
      } else if (t.dtype === "i8") {
        const q = new Int8Array(buf, t.offset, n), rows = t.shape[0], cols = n / rows;
        for (let r = 0; r < rows; r++) {
          const s = dv.getFloat32(t.scale + 4 * r, true);
          for (let j = 0; j < cols; j++) out[r * cols + j] = q[r * cols + j] * s;   // rounds to f32 as numpy does
        }
      } else throw new Error("unknown tensor type " + t.dtype);
      T[t.name] = out;
    }
    return T;
  }

  // out[r] = bias[r] + W[r, :] . x   (W row-major rows x cols), sums in float64
  function matvec(W, rows, cols, x, out, add) {
    for (let r = 0, o = 0; r < rows; r++, o += cols) {
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0, j = 0;
      for (; j + 3 < cols; j += 4) {
        s0 += W[o + j] * x[j]; s1 += W[o + j + 1] * x[j + 1];
        s2 += W[o + j + 2] * x[j + 2]; s3 += W[o + j + 3] * x[j + 3];
      }
      for (; j < cols; j++) s0 += W[o + j] * x[j];
      out[r] = (add ? out[r] : 0) + ((s0 + s1) + (s2 + s3));
    }
  }
  const sigmoid = (x) => 1 / (1 + Math.exp(-x));

  // The same product in WebAssembly SIMD (f32x4; ~5x the plain loop in V8), where the browser
  // has it: matvec(W, rows, cols, x, out) adds W x to out, pointers into one float32 memory,
  // cols a multiple of 8 (rows are zero-padded). A hand-assembled 200-byte module, base64 (its
  // source: matvec_wasm() in charwise/webexport.py); without it the plain loop above runs.
  const WASM = "{{WASM}}";
  function wasmEngine() {
    if (/[?&]engine=js\b/.test(location.search)) return null;
    try {
      if (typeof WebAssembly !== "object") return null;
      const bytes = Uint8Array.from(atob(WASM), (c) => c.charCodeAt(0));
      return WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
    } catch (e) { return null; }
  }

  // Products W x for a set of matrices: returns one function per matrix, f(x, out) adds W x
  // to out (Float64Arrays).
  function products(mats) {
    const mod = wasmEngine();
    if (!mod) return { engine: "JavaScript", fns: mats.map((m) => (x, out) => matvec(m.W, m.rows, m.cols, x, out, true)) };
    const pad = (n) => (n + 7) & ~7;
    const cols = Math.max(...mats.map((m) => pad(m.cols))), rows = Math.max(...mats.map((m) => m.rows));
    let floats = cols + rows;
    const at = mats.map((m) => { const o = floats; floats += m.rows * pad(m.cols); return o; });
    const mem = new WebAssembly.Memory({ initial: Math.ceil((4 * floats) / 65536) + 1 });
    const mv = new WebAssembly.Instance(mod, { env: { mem } }).exports.matvec;
    const F = new Float32Array(mem.buffer), X = F.subarray(0, cols), O = F.subarray(cols, cols + rows);
    mats.forEach((m, i) => {
      const pc = pad(m.cols);
      for (let r = 0; r < m.rows; r++) F.set(m.W.subarray(r * m.cols, (r + 1) * m.cols), at[i] + r * pc);
    });
    const fns = mats.map((m, i) => {
      const pc = pad(m.cols), o = O.subarray(0, m.rows);
      return (x, out) => {
        X.fill(0, m.cols, pc);
        X.set(x.length === m.cols ? x : x.subarray(0, m.cols));
        o.set(out);
        mv(4 * at[i], m.rows, pc, 0, 4 * cols);
        out.set(o);
      };
    });
    return { engine: "WebAssembly SIMD", fns };
  }

  // One layer's state update per cell (charwise.cells lists these names): gi = W_ih x + b_ih and
  // gh = W_hh h + b_hh, each G*H long in torch's gate order; h (and c) updated in place.
  const CELL_UPDATES = {
    lstm(gi, gh, H, h, c) {
      for (let j = 0; j < H; j++) {
        const i = sigmoid(gi[j] + gh[j]), f = sigmoid(gi[H + j] + gh[H + j]);
        const g = Math.tanh(gi[2 * H + j] + gh[2 * H + j]), o = sigmoid(gi[3 * H + j] + gh[3 * H + j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * Math.tanh(c[j]);
      }
    },
    gru(gi, gh, H, h) {
      for (let j = 0; j < H; j++) {
        const r = sigmoid(gi[j] + gh[j]), z = sigmoid(gi[H + j] + gh[H + j]);
        const n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
        h[j] = (1 - z) * n + z * h[j];
      }
    },
    rnn(gi, gh, H, h) {
      for (let j = 0; j < H; j++) h[j] = Math.tanh(gi[j] + gh[j]);
    },
  };

  class Model {
    constructor(desc, T) {
      this.desc = desc;
      const cell = desc.cell, L = desc.layers, H = desc.hidden, E = desc.embed;
      const V = desc.vocab.length, G = desc.gates;          // charwise.cells's gate count
      if (!CELL_UPDATES[cell]) throw new Error("this page cannot step a " + cell);
      Object.assign(this, { cell, L, H, E, V, G });
      this.wih = []; this.whh = []; this.bih = []; this.bhh = [];
      for (let k = 0; k < L; k++) {
        this.wih.push(T["rnn.weight_ih_l" + k]); this.whh.push(T["rnn.weight_hh_l" + k]);
        this.bih.push(T["rnn.bias_ih_l" + k]); this.bhh.push(T["rnn.bias_hh_l" + k]);
      }
      this.headW = T["head.weight"]; this.headB = T["head.bias"];
      // Embedding folded into layer 0's input projection: table[v] = W_ih0 embed[v] + b_ih0
      // (computed once from the weights the page holds, so quantization is simulated exactly).
      const emb = T["embed.weight"], GH = G * H;
      this.table = new Float64Array(V * GH);
      const row = new Float64Array(GH), e = new Float64Array(E);
      for (let v = 0; v < V; v++) {
        for (let j = 0; j < E; j++) e[j] = emb[v * E + j];
        matvec(this.wih[0], GH, E, e, row, false);
        for (let j = 0; j < GH; j++) this.table[v * GH + j] = row[j] + this.bih[0][j];
      }
      this.gi = new Float64Array(GH); this.gh = new Float64Array(GH);
      this.logits = new Float64Array(V);
      // the per-step products: W_hh (every layer), W_ih (layers above the first), the head
      const mats = [];
      for (let k = 0; k < L; k++) mats.push({ W: this.whh[k], rows: GH, cols: H });
      for (let k = 1; k < L; k++) mats.push({ W: this.wih[k], rows: GH, cols: H });
      mats.push({ W: this.headW, rows: V, cols: H });
      const p = products(mats);
      this.engine = p.engine;
      this.mvHH = p.fns.slice(0, L);
      this.mvIH = [null, ...p.fns.slice(L, 2 * L - 1)];
      this.mvHead = p.fns[2 * L - 1];
    }
    zeroState() {
      const s = { h: [], c: [] };
      for (let k = 0; k < this.L; k++) {
        s.h.push(new Float64Array(this.H));
        if (this.cell === "lstm") s.c.push(new Float64Array(this.H));   // the cell state
      }
      return s;
    }
    // One character in, state updated in place; returns this.logits (reused buffer).
    step(id, s) {
      const { H, G, L, cell } = this, GH = G * H, gi = this.gi, gh = this.gh;
      let inp = null;
      for (let k = 0; k < L; k++) {
        if (k === 0) gi.set(this.table.subarray(id * GH, (id + 1) * GH));
        else { gi.set(this.bih[k]); this.mvIH[k](inp, gi); }
        gh.set(this.bhh[k]);
        const h = s.h[k];
        this.mvHH[k](h, gh);
        CELL_UPDATES[cell](gi, gh, H, h, s.c[k]);
        inp = h;
      }
      this.logits.set(this.headB);
      this.mvHead(inp, this.logits);
      return this.logits;
    }
  }

  // ------------------------------------------------------------------ the Transformer
  // CharTransformer.step (charwise/transformer.py) one character at a time: embedding (+ learned
  // positions), pre-norm blocks (LayerNorm eps 1e-5; causal multi-head attention over a KV cache,
  // q and k turned by RoPE for rotary positions; a tanh-GELU MLP), ln_f, the head. A char takes
  // the next window slot; when all `context` slots are full the window slides as the model's does:
  // the last keep = context // 2 chars are re-encoded from slot 0, then the new char follows.
  function layerNorm(x, w, b, out) {
    const n = x.length;
    let m = 0, v = 0;
    for (let i = 0; i < n; i++) m += x[i];
    m /= n;
    for (let i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    const r = 1 / Math.sqrt(v / n + 1e-5);
    for (let i = 0; i < n; i++) out[i] = (x[i] - m) * r * w[i] + b[i];
  }
  const GELU_C = Math.sqrt(2 / Math.PI);
  const gelu = (x) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + 0.044715 * x * x * x)));

  class Transformer {
    constructor(desc, T) {
      const W = desc.width, L = desc.layers, nh = desc.heads, d = W / nh, C = desc.context;
      const V = desc.vocab.length, f32 = Math.fround;
      Object.assign(this, { desc, W, L, nh, d, C, V, keep: desc.keep });
      this.emb = T["embed.weight"]; this.pos = T["pos.weight"] || null;
      const mats = [];
      this.blocks = [];
      for (let k = 0; k < L; k++) {
        const t = (n) => T["blocks." + k + "." + n];
        this.blocks.push({ ln1: [t("ln1.weight"), t("ln1.bias")], ln2: [t("ln2.weight"), t("ln2.bias")],
                           qkvB: t("qkv.bias"), outB: t("attn_out.bias"), fcB: t("fc.bias"), mlpB: t("mlp_out.bias") });
        mats.push({ W: t("qkv.weight"), rows: 3 * W, cols: W }, { W: t("attn_out.weight"), rows: W, cols: W },
                  { W: t("fc.weight"), rows: 4 * W, cols: W }, { W: t("mlp_out.weight"), rows: W, cols: 4 * W });
      }
      mats.push({ W: T["head.weight"], rows: V, cols: W });
      const p = products(mats);
      this.engine = p.engine;
      this.blocks.forEach((b, k) => { [b.qkv, b.out, b.fc, b.mlp] = p.fns.slice(4 * k, 4 * k + 4); });
      this.mvHead = p.fns[4 * L];
      this.lnf = [T["ln_f.weight"], T["ln_f.bias"]]; this.headB = T["head.bias"];
      // RoPE's angles in float32, as torch computes them: slot * 10000^(-2i/d)
      this.inv = desc.positions === "rotary" ? Float64Array.from({ length: d / 2 }, (_, i) => f32(Math.pow(10000, f32(-2 * i / d)))) : null;
      this.h = new Float64Array(W); this.x = new Float64Array(W); this.qkv = new Float64Array(3 * W);
      this.y = new Float64Array(W); this.f = new Float64Array(4 * W); this.att = new Float64Array(C);
      this.logits = new Float64Array(V);
    }
    zeroState() {
      const s = { k: [], v: [], tokens: new Int32Array(this.C), n: 0 };
      for (let k = 0; k < this.L; k++) { s.k.push(new Float64Array(this.C * this.W)); s.v.push(new Float64Array(this.C * this.W)); }
      return s;
    }
    rope(a, off, slot) {             // turn each head's (i, i + d/2) pairs of a[off .. off + W)
      const { d, nh, inv } = this, half = d / 2, f32 = Math.fround;
      for (let hd = 0; hd < nh; hd++) {
        for (let i = 0, o = off + hd * d; i < half; i++) {
          const ang = f32(slot * inv[i]), c = f32(Math.cos(ang)), s = f32(Math.sin(ang));
          const x0 = a[o + i], x1 = a[o + i + half];
          a[o + i] = x0 * c - x1 * s; a[o + i + half] = x1 * c + x0 * s;
        }
      }
    }
    attend(q, K, Vc, n, y) {          // y = softmax(q . K[0..n] / sqrt(d)) V[0..n], head by head
      const { W, d, nh, att } = this, scale = 1 / Math.sqrt(d);
      for (let hd = 0; hd < nh; hd++) {
        const o = hd * d;
        let m = -Infinity, sum = 0;
        for (let j = 0; j <= n; j++) {
          let s = 0;
          for (let i = 0; i < d; i++) s += q[o + i] * K[j * W + o + i];
          att[j] = s * scale; if (att[j] > m) m = att[j];
        }
        for (let j = 0; j <= n; j++) { att[j] = Math.exp(att[j] - m); sum += att[j]; }
        for (let i = 0; i < d; i++) {
          let s = 0;
          for (let j = 0; j <= n; j++) s += att[j] * Vc[j * W + o + i];
          y[o + i] = s / sum;
        }
      }
    }
    // `id` into the next slot: its keys and values join the cache; leaves the last block's output
    // in this.h when `full` (a re-encoded char needs only its keys and values)
    encode(id, s, full) {
      const { W, L, h, x, qkv, y, f } = this, n = s.n;
      for (let j = 0; j < W; j++) h[j] = this.emb[id * W + j] + (this.pos ? this.pos[n * W + j] : 0);
      for (let k = 0; k < L; k++) {
        const b = this.blocks[k], K = s.k[k], Vc = s.v[k];
        layerNorm(h, b.ln1[0], b.ln1[1], x);
        qkv.set(b.qkvB); b.qkv(x, qkv);
        if (this.inv) { this.rope(qkv, 0, n); this.rope(qkv, W, n); }
        K.set(qkv.subarray(W, 2 * W), n * W); Vc.set(qkv.subarray(2 * W), n * W);
        if (!full && k === L - 1) break;
        this.attend(qkv, K, Vc, n, y);
        x.set(b.outB); b.out(y, x);
        for (let j = 0; j < W; j++) h[j] += x[j];
        layerNorm(h, b.ln2[0], b.ln2[1], x);
        f.set(b.fcB); b.fc(x, f);
        for (let j = 0; j < 4 * W; j++) f[j] = gelu(f[j]);
        x.set(b.mlpB); b.mlp(f, x);
        for (let j = 0; j < W; j++) h[j] += x[j];
      }
      s.tokens[n] = id; s.n = n + 1;
    }
    // One character in, the cache updated in place; returns this.logits (reused buffer).
    step(id, s) {
      const { C, keep } = this;
      if (s.n === C) {
        const kept = s.tokens.slice(C - keep);
        s.n = 0;
        for (const t of kept) this.encode(t, s, false);
      }
      this.encode(id, s, true);
      layerNorm(this.h, this.lnf[0], this.lnf[1], this.x);
      this.logits.set(this.headB);
      this.mvHead(this.x, this.logits);
      return this.logits;
    }
  }

  // The models that are not a stack of CELL_UPDATES layers, by cell name (charwise.cells lists
  // these names: kind "attention"); every other cell runs in Model.
  const MODEL_STEPS = {
    transformer: Transformer,
  };

  // ------------------------------------------------------------------ sampler
  // Seeded PRNG: mulberry32, two draws per uniform double in [0, 1) (53 bits).
  function rng(seed) {
    let a = seed >>> 0;
    const next = () => {
      a = (a + 0x6D2B79F5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (t ^ (t >>> 14)) >>> 0;
    };
    return () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
  }

  function softmax(z) {
    let m = -Infinity;
    for (let i = 0; i < z.length; i++) if (z[i] > m) m = z[i];
    const p = new Float64Array(z.length);
    let s = 0;
    for (let i = 0; i < z.length; i++) { p[i] = Math.exp(z[i] - m); s += p[i]; }
    for (let i = 0; i < z.length; i++) p[i] /= s;
    return p;
  }

  // filter_probs in generation/sampler.py: temperature, top-k, then the smallest top-p prefix.
  function filterProbs(logits, temperature, topK, topP) {
    const V = logits.length, z = new Float64Array(V);
    for (let i = 0; i < V; i++) z[i] = logits[i] / temperature;
    if (topK && topK < V) {
      const kth = Array.from(z).sort((a, b) => b - a)[topK - 1];
      for (let i = 0; i < V; i++) if (z[i] < kth) z[i] = -Infinity;
    }
    let p = softmax(z);
    if (topP && topP < 1) {
      const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a] || a - b);
      const keep = new Uint8Array(V);
      let cum = 0;
      for (const i of order) { if (cum < topP) keep[i] = 1; cum += p[i]; }
      let s = 0;
      for (let i = 0; i < V; i++) { if (!keep[i]) p[i] = 0; s += p[i]; }
      for (let i = 0; i < V; i++) p[i] /= s;
    }
    return p;
  }

  function argmax(x) {
    let best = 0;
    for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
    return best;
  }

  function draw(logits, rand, temperature, topK, topP) {
    if (temperature === 0) return { id: argmax(logits), q: null };
    const p = filterProbs(logits, temperature, topK, topP);
    let total = 0;
    for (let i = 0; i < p.length; i++) total += p[i];
    const u = rand() * total;
    let cum = 0, id = 0;
    for (let i = 0; i < p.length; i++) { cum += p[i]; if (cum <= u) id = i + 1; else break; }
    id = Math.min(id, p.length - 1);
    return { id, q: p[id] };
  }

  function top5(p) {
    const idx = [];
    for (let i = 0; i < p.length; i++) {
      if (idx.length < 5 || p[i] > p[idx[idx.length - 1]]) {
        idx.push(i);
        idx.sort((a, b) => p[b] - p[a] || a - b);
        if (idx.length > 5) idx.pop();
      }
    }
    return idx;
  }

  // ------------------------------------------------------------------ a generation, as a generator
  // Yields one record per character: { c, id, p (the model's probability), q (after the
  // sampling settings), top: [[char, p], ...] }.
  function* run(model, prime, opts) {
    const vocab = model.desc.vocab, idOf = new Map(vocab.map((c, i) => [c, i]));
    // below the model's temperature floor (settings/options.py's GREEDY_BELOW) sampling is greedy
    const temperature = opts.temperature < (model.desc.greedy_below || 0) ? 0 : opts.temperature;
    const rand = rng(opts.seed);
    const s = model.zeroState();
    let logits;
    const chars = [...prime];
    if (chars.length === 0) {
      const counts = model.desc.char_counts || vocab.map(() => 1);
      logits = Float64Array.from(counts, (n) => Math.log(Math.max(n, 1e-12)));
    } else {
      for (const ch of chars) {
        if (!idOf.has(ch)) throw new Error("not in the vocabulary: " + JSON.stringify(ch));
        logits = model.step(idOf.get(ch), s);
      }
    }
    let text = "";
    for (let i = 0; i < opts.n; i++) {
      const { id, q } = draw(logits, rand, temperature, opts.topK, opts.topP);
      const p = softmax(logits), c = vocab[id];
      text += c;
      yield { c, id, p: p[id], q: q === null ? 1 : q, top: top5(p).map((j) => [vocab[j], p[j]]) };
      if (opts.stop && text.endsWith(opts.stop)) return;
      if (i + 1 < opts.n) logits = model.step(id, s);
    }
  }

  // ------------------------------------------------------------------ the page
  const SHOW = { " ": "␣", "\n": "⏎", "\t": "⇥" };
  const show = (c) => SHOW[c] || c;
  const pct = (x) => (x >= 0.1 ? (100 * x).toFixed(1) : (100 * x).toFixed(2)) + "%";
  const esc = (t) => t.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

  let model = null, steps = [], spans = [], hovering = null, running = null;

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", !!isError);
  }

  function checkPrime() {
    const known = new Set(model.desc.vocab);
    const bad = [...new Set([...$("prime").value].filter((c) => !known.has(c)))];
    $("oov").hidden = bad.length === 0;
    $("oov").textContent = bad.length ? "Not in this model's vocabulary: " + bad.map(show).join(" ") : "";
    $("generate").disabled = bad.length > 0 || running !== null;
  }

  function showStep(i) {
    const s = steps[i];
    if (!s) return;
    const row = (c, p) => `<div class="alt${c === s.c ? " chosen" : ""}"><span class="glyph">${esc(show(c))}</span>` +
      `<span class="bar"><i style="width:${(100 * p).toFixed(1)}%"></i></span><span class="pct">${pct(p)}</span></div>`;
    const rows = s.top.map(([c, p]) => row(c, p));
    if (!s.top.some(([c]) => c === s.c)) rows.push(row(s.c, s.p));
    $("panel-body").innerHTML =
      `<p class="where">Character ${i + 1}: drew <code>${esc(show(s.c))}</code>, which the model gave ${pct(s.p)}</p>` +
      rows.join("") +
      `<p class="q">Bars: the model's probabilities. With these settings, <code>${esc(show(s.c))}</code> ` +
      `was drawn with probability ${pct(s.q)}.</p>`;
    for (const el of document.querySelectorAll("#out .ch.active")) el.classList.remove("active");
    spans[i].classList.add("active");
  }

  function readOptions() {
    const num = (id) => $(id).value.trim() === "" ? null : Number($(id).value);
    const n = num("length"), seed = num("seed"), topK = num("top-k");
    if (!(Number.isInteger(n) && n >= 1 && n <= 1000000)) throw new Error("length must be a whole number from 1 to 1,000,000");
    if (seed !== null && !(Number.isInteger(seed) && seed >= 0)) throw new Error("seed must be a whole number >= 0");
    if (topK !== null && !(Number.isInteger(topK) && topK >= 0)) throw new Error("top-k must be a whole number (0 or empty = all)");
    return {
      n, topK: topK || null, topP: Number($("top-p").value), temperature: Number($("temperature").value),
      seed: seed === null ? Math.floor(Math.random() * 4294967296) : seed, stop: $("stop-at").value,
    };
  }

  function generate() {
    let opts;
    try { opts = readOptions(); } catch (e) { setStatus(e.message, true); return; }
    const prime = $("prime").value;
    steps = []; spans = []; hovering = null;
    const out = $("out");
    out.textContent = "";
    const p = document.createElement("span");
    p.className = "prime";
    p.textContent = prime;
    out.appendChild(p);
    const gen = run(model, prime, opts), t0 = performance.now();
    const token = { stopped: false };
    running = token;
    $("generate").disabled = true;
    $("stop").disabled = false;
    const finish = (msg, err) => {
      running = null;
      $("stop").disabled = true;
      checkPrime();
      setStatus(msg, err);
    };
    const chunk = () => {
      if (token.stopped) { finish(`stopped after ${steps.length} characters (seed ${opts.seed})`); return; }
      const frag = document.createDocumentFragment(), until = performance.now() + 30;
      let done = false;
      try {
        while (performance.now() < until) {
          const r = gen.next();
          if (r.done) { done = true; break; }
          const ev = r.value, el = document.createElement("span");
          steps.push(ev);
          el.className = "ch";
          el.textContent = ev.c;
          el.dataset.i = String(steps.length - 1);
          el.style.setProperty("--a", (0.5 * (1 - ev.p)).toFixed(3));
          spans.push(el);
          frag.appendChild(el);
        }
      } catch (e) { finish("error: " + e.message, true); return; }
      out.appendChild(frag);
      out.scrollTop = out.scrollHeight;
      if (hovering === null && steps.length) showStep(steps.length - 1);
      const secs = (performance.now() - t0) / 1000, rate = (steps.length / Math.max(secs, 1e-3)).toFixed(0);
      if (done) finish(`done: ${steps.length} characters in ${secs.toFixed(2)} s (${rate} chars/s, seed ${opts.seed})`);
      else { setStatus(`generating… ${steps.length} / ${opts.n} · ${rate} chars/s`); setTimeout(chunk, 0); }
    };
    setStatus("generating…");
    setTimeout(chunk, 0);
  }

  function describe(d) {
    const bits = d.best_val_loss == null ? "" : ` · best loss ${(d.best_val_loss / Math.LN2).toFixed(3)} bits/char` +
      (d.eval_split === "train" ? " (on its training text)" : " (validation)");
    const q = d.quantize === "none" ? "float32 weights" : d.quantize + " weights";
    const shape = d.context ? `TRANSFORMER ${d.layers} blocks × ${d.width}, ${d.heads} heads, context ${d.context}`
      : `${d.cell.toUpperCase()} ${d.layers}×${d.hidden}`;
    return `${d.run} · ${shape} · ${d.parameters.toLocaleString("en")} parameters` +
      ` · ${d.vocab.length} characters · ${q}${bits}`;
  }

  function init() {
    let desc;
    try {
      desc = JSON.parse($("charwise-model").textContent);
      model = new (MODEL_STEPS[desc.cell] || Model)(desc, decodeWeights(desc, $("charwise-weights").textContent));
    } catch (e) {
      fatal("The model in this page could not be read (" + e.message + "); the file may be damaged or cut short.");
      return;
    }
    $("model-info").textContent = describe(desc) + " · " + model.engine;
    $("vocab").textContent = desc.vocab.map(show).join(" ");
    const prime = $("prime");
    if (!prime.value) {
      const guess = ["The ", "ROMEO:", "Mr Bennet", "the ", "a "].find((t) => [...t].every((c) => desc.vocab.includes(c)));
      prime.value = guess || desc.vocab[0];
    }
    // the controls start at `charwise sample`'s defaults (SamplingParams, generation/params.py)
    const d = desc.defaults || {};
    for (const [id, v] of [["temperature", d.temperature], ["top-p", d.top_p], ["length", d.n], ["top-k", d.top_k]]) {
      if (v != null) $(id).value = String(v);
    }
    for (const [id, fmt] of [["temperature", (v) => v.toFixed(2)], ["top-p", (v) => v.toFixed(2)]]) {
      const input = $(id), upd = () => { $(id + "-value").textContent = fmt(Number(input.value)); };
      input.addEventListener("input", upd);
      upd();
    }
    prime.addEventListener("input", checkPrime);
    $("generate").addEventListener("click", generate);
    $("stop").addEventListener("click", () => { if (running) running.stopped = true; });
    $("out").addEventListener("mouseover", (e) => {
      const el = e.target.closest(".ch");
      if (el) { hovering = Number(el.dataset.i); showStep(hovering); }
    });
    $("out").addEventListener("mouseleave", () => { hovering = null; });
    checkPrime();
    setStatus("ready: the model runs in this page");

    // For scripts and tests: the same model without the page's UI.
    window.charwise = {
      desc, model, engine: model.engine,
      // prime + n characters and each step's probability of the drawn character
      generate(prime, n, o) {
        o = Object.assign({ temperature: 1, topK: null, topP: null, seed: 0, stop: "" }, o || {}, { n });
        const recs = [...run(model, prime, o)];
        return { text: prime + recs.map((r) => r.c).join(""), p: recs.map((r) => r.p) };
      },
      // softmax of the logits after each character of `text` (teacher forcing)
      probs(text) {
        const idOf = new Map(desc.vocab.map((c, i) => [c, i])), s = model.zeroState(), rows = [];
        for (const ch of text) rows.push(Array.from(softmax(model.step(idOf.get(ch), s))));
        return rows;
      },
      // greedy steps per second, no page updates
      bench(n) {
        const s = model.zeroState();
        let id = 0;
        const t0 = performance.now();
        for (let i = 0; i < n; i++) id = argmax(model.step(id, s));
        return n / ((performance.now() - t0) / 1000);
      },
    };
    window.charwiseReady = true;
  }

  init();
})();
