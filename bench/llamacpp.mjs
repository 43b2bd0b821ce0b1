// llama.cpp peer for bench/run.sh: load a GGUF with llama.cpp (through node-llama-cpp, prebuilt CPU binaries),
// process a prompt of P tokens in one batch, then decode N tokens one at a time (greedy), and print one JSON line
// with llama.cpp's OWN timings (llama_perf_context_print: "prompt eval time" = batches of >1 token, "eval time" =
// single-token decode steps), not JavaScript wall time. A warm-up (8 tokens + 2 steps, then cleared) comes first.
//
// usage: UV_THREADPOOL_SIZE=1 node bench/llamacpp.mjs MODEL.gguf [-t THREADS] [-p 512] [-n 128] [-r REPS] [-b SEQS]
// With -r, the measurement is repeated (history cleared in between) and the best time of each phase is kept.
// With -b B > 1: B sequences of one context (prompt b: ids 3 + ((i*7919 + b*104729) mod (V-3)), as moec bench -b),
// prefilled together, then decoded in lock step (each step: one token of every sequence, which node-llama-cpp
// batches into one llama_decode); llama.cpp counts those B-token batches as "prompt eval", so each phase's time is
// the sum of both counters over that phase, and tokens/s count every sequence.
// UV_THREADPOOL_SIZE=1: otherwise node's libuv pool adds threads per decode step and competes for the cores.
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import fs from "node:fs";

function usage(msg) {
    if (msg) process.stderr.write(`llamacpp.mjs: ${msg}\n`);
    process.stderr.write("usage: node bench/llamacpp.mjs MODEL.gguf [-t THREADS] [-p PROMPT_TOKENS] [-n DECODE_TOKENS] [-r REPS] [-b SEQUENCES]\n");
    process.exit(2);
}

const args = process.argv.slice(2);
let model_path = null, threads = 1, n_prompt = 512, n_gen = 128, reps = 1, n_seq = 1;
for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const num = () => {
        const v = Number(args[++i]);
        if (!Number.isInteger(v) || v < 1 || v > 1 << 20) usage(`${a} needs a positive integer`);
        return v;
    };
    if (a === "-t") threads = num();
    else if (a === "-p") n_prompt = num();
    else if (a === "-n") n_gen = num();
    else if (a === "-r") reps = num();
    else if (a === "-b") n_seq = num();
    else if (a.startsWith("-")) usage(`unknown option ${a}`);
    else if (model_path === null) model_path = a;
    else usage("more than one model");
}
if (!model_path) usage("no model");
if (!fs.existsSync(model_path)) usage(`no such file: ${model_path}`);

// Capture llama.cpp's log: the perf lines and which CPU backend variant was loaded.
const log = [];
const llama = await getLlama({
    gpu: false,
    build: "never",
    maxThreads: threads,
    logLevel: LlamaLogLevel.info,
    logger: (level, message) => { log.push(message); },
});

let model;
try {
    model = await llama.loadModel({ modelPath: model_path, gpuLayers: 0, useMmap: true });
} catch (e) { // say why: llama.cpp's own last log lines
    process.stderr.write(`llamacpp.mjs: llama.cpp cannot load ${model_path}: ${log.filter((l) => /error loading|invalid|failed to load/i.test(l)).slice(-2).join(" | ") || e.message}\n`);
    process.exit(1);
}
const ctx_size = n_seq * (n_prompt + n_gen + 16); // the KV cache is shared by the sequences
const context = await model.createContext({
    contextSize: ctx_size,
    batchSize: n_seq * n_prompt,   // the whole prompt(s) in one batch, like moec bench
    threads: { ideal: threads, min: threads },
    sequences: n_seq,
    flashAttention: false,
    performanceTracking: true,
});
const seq = context.getSequence();
const more = [];
for (let b = 1; b < n_seq; b++) more.push(context.getSequence());

// Perf counters of the context since the last print, parsed from llama_perf_context_print's lines.
async function perf() {
    const start = log.length;
    await context.printTimings(); // prints and resets the counters
    const text = log.slice(start).join("\n");
    const grab = (re) => { const m = text.match(re); return m ? [Number(m[1]), Number(m[2])] : [NaN, NaN]; };
    let [pe_ms, pe_n] = grab(/prompt eval time\s*=\s*([\d.]+) ms\s*\/\s*(\d+) tokens/);
    let [ev_ms, ev_n] = grab(/\beval time\s*=\s*([\d.]+) ms\s*\/\s*(\d+) runs/);
    if (pe_ms === 0) pe_n = 0; // llama.cpp prints a count of at least 1
    if (ev_ms === 0) ev_n = 0;
    return { pe_ms, pe_n, ev_ms, ev_n, text };
}

// A fixed, valid prompt: token ids cycling through the vocabulary's ordinary range (a random model does not care
// what the text is; the ids only decide which embedding rows are read).
// V = the number of tokenizer pieces (= rows of token_embd, which llama.cpp checks at load)
const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
if (!Number.isInteger(vocab) || vocab < 4) {
    process.stderr.write(`llamacpp.mjs: cannot read the vocabulary size of ${model_path}\n`);
    process.exit(1);
}
// Sequence b's prompt (-b): 3 + ((i*7919 + b*104729) mod (V-3)), as moec bench -b; sequence 0's is the prompt.
const seqs = [seq, ...more];
const prompts = seqs.map((_, b) => {
    const ids = [];
    for (let i = 0; i < n_prompt; i++) ids.push(3 + ((i * 7919 + b * 104729) % Math.max(1, vocab - 3)));
    return ids;
});
const prompt = prompts[0];

// Warm-up, as moec bench does: 8 prompt tokens + 2 decode steps per sequence touch the mmap'd weights, then
// forget them.
await Promise.all(seqs.map(async (s, b) => {
    let k = 0;
    for await (const tok of s.evaluate(prompts[b].slice(0, Math.min(8, n_prompt)), { temperature: 0 })) {
        void tok;
        if (++k > 2) break;
    }
}));

let best = null, wall_s = 0;
const tokens = [];
if (n_seq > 1) best = await batched();
for (let r = 0; r < reps && n_seq === 1; r++) {
    await seq.clearHistory();
    await perf(); // reset the counters
    const t0 = process.hrtime.bigint();
    let generated = 0;
    // evaluate() processes the prompt as one batch (logits of the last position), then feeds back each sampled
    // token as a single-token batch: n_gen + 1 iterations give exactly n_gen single-token decode steps.
    const gen = seq.evaluate(prompt, { temperature: 0 });
    for await (const tok of gen) {
        if (r === 0 && tokens.length < Math.min(16, n_gen)) tokens.push(Number(tok));
        if (++generated > n_gen) break;
    }
    wall_s += Number(process.hrtime.bigint() - t0) / 1e9;
    const p = await perf();
    if (!(p.pe_n === n_prompt && p.ev_n === n_gen)) {
        process.stderr.write(`llamacpp.mjs: unexpected counts (prompt ${p.pe_n}, decode ${p.ev_n}); llama.cpp said:\n${p.text}\n`);
        process.exit(1);
    }
    if (!best) best = p;
    best.pe_ms = Math.min(best.pe_ms, p.pe_ms);
    best.ev_ms = Math.min(best.ev_ms, p.ev_ms);
}
const p = best;

// -b: the sequences' prompts in one batch, then n_gen lock-step decode steps of one token per sequence
async function batched() {
    let out = null;
    for (let r = 0; r < reps; r++) {
        await Promise.all(seqs.map((s) => s.clearHistory()));
        await perf();
        const t0 = process.hrtime.bigint();
        const its = seqs.map((s, b) => s.evaluate(prompts[b], { temperature: 0 })[Symbol.asyncIterator]());
        const first = await Promise.all(its.map((it) => it.next()));
        const pp = await perf();
        if (r === 0) tokens.push(Number(first[0].value));
        for (let k = 0; k < n_gen; k++) {
            const step = await Promise.all(its.map((it) => it.next()));
            if (r === 0 && tokens.length < Math.min(16, n_gen)) tokens.push(Number(step[0].value));
        }
        const tg = await perf();
        await Promise.all(its.map((it) => it.return()));
        wall_s += Number(process.hrtime.bigint() - t0) / 1e9;
        const p = { pe_ms: pp.pe_ms + pp.ev_ms, pe_n: pp.pe_n + pp.ev_n, ev_ms: tg.pe_ms + tg.ev_ms, ev_n: tg.pe_n + tg.ev_n,
                    tg_single: tg.ev_n }; // decode tokens that llama.cpp ran alone (not batched with others)
        if (!(p.pe_n === n_seq * n_prompt && p.ev_n === n_seq * n_gen)) {
            process.stderr.write(`llamacpp.mjs: unexpected counts (prompt ${p.pe_n}, decode ${p.ev_n}); llama.cpp said:\n${pp.text}\n${tg.text}\n`);
            process.exit(1);
        }
        if (!out) out = p;
        out.pe_ms = Math.min(out.pe_ms, p.pe_ms);
        out.ev_ms = Math.min(out.ev_ms, p.ev_ms);
    }
    return out;
}
// Which CPU variant of ggml the loader picked for this CPU (haswell = AVX2+FMA+F16C): from our own memory map.
let backend = "";
try { backend = [...new Set(fs.readFileSync("/proc/self/maps", "utf8").match(/libggml-cpu-[a-z0-9_]+/g) ?? [])].join(","); } catch { /* not Linux */ }
const out = {
    engine: "llama.cpp",
    peer: "node-llama-cpp@" + JSON.parse(fs.readFileSync(new URL("./node_modules/node-llama-cpp/package.json", import.meta.url))).version,
    model: model_path,
    threads,
    reps,
    n_vocab: vocab,
    batch: n_seq,
    n_prompt: p.pe_n / n_seq,
    n_gen: p.ev_n / n_seq,
    pp_ms: p.pe_ms,
    tg_ms: p.ev_ms,
    pp_tps: p.pe_n / (p.pe_ms / 1000),
    tg_tps: p.ev_n / (p.ev_ms / 1000),
    wall_s,
    cpu_backend: backend,
    rss_max_mb: process.resourceUsage().maxRSS / 1024,
    ...(n_seq > 1 ? { tg_tokens_unbatched: p.tg_single } : {}),
    tokens,  // the first greedy tokens, to compare with moec bench's (same prompt ids)
};
if (process.env.LLAMACPP_LOG) process.stderr.write(log.join("\n") + "\n");
console.log(JSON.stringify(out));
await context.dispose();
await model.dispose();
await llama.dispose();
