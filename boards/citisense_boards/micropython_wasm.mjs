// Loads the official MicroPython WebAssembly port with the corrections a board needs.
//
// 1. errno: the port's filesystem raises Emscripten (WASI) errno numbers, e.g.
//    ENOENT = 44, while MicroPython's errno module and every real board use the
//    Linux numbers (ENOENT = 2). The syscall imports are wrapped so OSError
//    carries board numbers and tools such as mpremote recognise them.
// 2. heap limit: this port grows its GC heap with malloc whenever it is full, so
//    `heapsize` alone limits nothing. `limitHeap` stops wasm memory from
//    growing and fills the free malloc space, leaving only a small slack for the
//    JS glue: the GC heap can then never grow, as on an ESP32 without PSRAM.
// 3. garbage collection: the port collects only when control returns to JS at
//    the top level, because a collection deeper in C could miss roots held in
//    wasm locals. A board runs its firmware inside main.py forever, so
//    `collectAtSafePoint` lets a collection happen from a JS call made by
//    Python code at a point where every live object is reachable from the
//    Python stack (asyncio's idle wait, time.sleep, gc.collect()).
// 4. ticks: the port's own millisecond ticks (asyncio's C task queue stamps new
//    tasks with them) are Date.now() minus its start, so setting the clock would
//    move them. An ESP32's ticks count from boot whatever its RTC is set to:
//    `setTicksSource` lets a board supply them.
import { pathToFileURL } from "node:url";

// Emscripten errno -> Linux errno, for every value the filesystem can produce.
const ERRNO = new Map([
  [63, 1], [44, 2], [71, 3], [27, 4], [29, 5], [60, 6], [1, 7], [45, 8], [8, 9],
  [12, 10], [6, 11], [48, 12], [2, 13], [21, 14], [10, 16], [20, 17], [75, 18],
  [43, 19], [54, 20], [31, 21], [28, 22], [41, 23], [33, 24], [59, 25], [74, 26],
  [22, 27], [51, 28], [70, 29], [69, 30], [34, 31], [64, 32], [18, 33], [68, 34],
  [37, 36], [52, 38], [55, 39], [32, 40],
]);
const boardErrno = (e) => ERRNO.get(e) ?? e;

// Emscripten FS error codes by name, for filesystems written in JS.
export const EMSCRIPTEN_ERRNO = {
  EPERM: 63, ENOENT: 44, EIO: 29, EBADF: 8, EACCES: 2, EBUSY: 10, EEXIST: 20,
  EXDEV: 75, ENOTDIR: 54, EISDIR: 31, EINVAL: 28, EMFILE: 33, ENOSPC: 51,
  ENAMETOOLONG: 37, ENOTEMPTY: 55, ELOOP: 32,
};

let growthAllowed = true;
let compiled = null;
let ticksSource = null;

/** Where the port's own ticks come from (milliseconds; null: Date.now() since start). */
export function setTicksSource(source) {
  ticksSource = source;
}

function wrapImports(imports) {
  const env = imports.env;
  for (const [name, fn] of Object.entries(env)) {
    if (name.startsWith("__syscall_")) {
      env[name] = (...args) => {
        const r = fn(...args);
        return r < 0 ? -boardErrno(-r) : r;
      };
    }
  }
  const wasi = imports.wasi_snapshot_preview1;
  for (const [name, fn] of Object.entries(wasi)) {
    if (name.startsWith("fd_")) wasi[name] = (...args) => boardErrno(fn(...args));
  }
  const ticks = env.mp_js_ticks_ms;
  if (ticks) env.mp_js_ticks_ms = () => (ticksSource ? ticksSource() : ticks());
  const resize = env.emscripten_resize_heap;
  env.emscripten_resize_heap = (size) => (growthAllowed ? resize(size) : 0);
}

const originalInstantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async (source, imports) => {
  // env and wasi_snapshot_preview1 are the same object in Emscripten output.
  if (imports?.env && !imports.env.__board_wrapped) {
    wrapImports(imports);
    imports.env.__board_wrapped = true;
  }
  if (source instanceof WebAssembly.Module) return originalInstantiate(source, imports);
  compiled ??= await WebAssembly.compile(source);
  return { module: compiled, instance: await originalInstantiate(compiled, imports) };
};

/** Reuse a module compiled in another thread (workers boot faster). */
export function useCompiledModule(module) {
  compiled = module;
}

export async function compileMicroPython(mjsPath) {
  const { readFile } = await import("node:fs/promises");
  compiled ??= await WebAssembly.compile(await readFile(new URL("micropython.wasm", pathToFileURL(mjsPath))));
  return compiled;
}

/** Load a fresh MicroPython VM. Options: heapBytes, romfs, stdout, stderr (byte callbacks), stdin. */
export async function loadMicroPython(mjsPath, options) {
  const { loadMicroPython: load } = await import(pathToFileURL(mjsPath).href);
  growthAllowed = true;
  const mp = await load({
    heapsize: options.heapBytes,
    linebuffer: false,
    stdout: options.stdout,
    stderr: options.stderr,
    stdin: options.stdin,
    romfs: options.romfs,
  });
  return mp;
}

/** Freeze the GC heap at its initial size (call once the VM is set up). */
export function limitHeap(mp, heapBytes) {
  const M = mp._module;
  // The GC adds at least as much heap as it already has: a slack below that never fits.
  const slack = Math.min(64 * 1024, heapBytes >> 1);
  growthAllowed = false;
  const reserve = M._malloc(slack);
  for (let size = M.HEAPU8.length; size >= 512; size >>= 1) {
    while (M._malloc(size) !== 0) { /* keep it: nobody may use this memory */ }
  }
  M._free(reserve);
}

/**
 * Find the port's external call depth counter: a word in static memory that
 * reads 0 at the top level and n inside n nested JS->Python entries.
 */
export function findCallDepthWord(mp) {
  const M = mp._module;
  const probe = M._malloc(16);
  M._free(probe);
  const words = probe >> 2;
  const snaps = [];
  const snap = () => snaps.push(new Uint32Array(M.HEAPU8.buffer, 0, words).slice());
  snap();
  mp.registerJsModule("_depth_probe", {
    enter: (inner) => { snap(); if (inner) inner(); },
  });
  mp.runPython(
    "import _depth_probe as p\n" +
    "p.enter(lambda: p.enter(lambda: p.enter(None)))\n" +
    "del p\nimport sys\ndel sys.modules['_depth_probe']",
  );
  const found = [];
  for (let i = 0; i < words; i++) {
    if (snaps.every((s, depth) => s[i] === depth)) found.push(i);
  }
  if (found.length !== 1) throw new Error(`call depth word not unique: ${found.length} candidates`);
  return found[0];
}

/** Run a (trivial) Python callable as if from the top level so a pending collection happens. */
export function collectAtSafePoint(mp, depthWord, pyCallable) {
  const words = new Uint32Array(mp._module.HEAPU8.buffer);
  const depth = words[depthWord];
  words[depthWord] = 0;
  try {
    pyCallable();
  } finally {
    words[depthWord] = depth;
  }
}
