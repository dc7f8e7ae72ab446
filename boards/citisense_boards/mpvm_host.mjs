// Host process for the official MicroPython WebAssembly port.
//
// Speaks JSON lines on stdin/stdout so Python (citisense_boards.mpvm) can run
// code on the real MicroPython VM. One request per line:
//   {"op": "boot", "heap": <bytes>}          fresh VM, empty filesystem
//   {"op": "put", "path": "/lib/x.py", "b64": "..."}   write a file (dirs created)
//   {"op": "run", "code": "..."}             run code, reply with captured output
// Reply: {"ok": true, "out": "..."} or {"ok": false, "out": "...", "error": "traceback"}.
//
// argv[2] is the absolute path of micropython.mjs from the pinned npm package; argv[3], if
// given (with node --expose-gc), runs Node's collector every argv[3] ms: Python objects
// that JS proxies hold (one per await on a JS promise) are released only then.
// The VM comes from micropython_wasm.mjs: OSError carries board errno numbers.
import { createInterface } from "node:readline";
import { loadMicroPython } from "./micropython_wasm.mjs";

let mp = null;
let out = [];

// Work a finished run left on Node's event loop (a VM's pending asyncio tasks) must not
// kill the host and with it every later run: report it on stderr and carry on.
process.on("unhandledRejection", (e) => process.stderr.write(`mpvm host: unhandled rejection: ${e}\n`));
process.on("uncaughtException", (e) => process.stderr.write(`mpvm host: uncaught exception: ${e}\n`));

// With linebuffer off the port hands over raw output bytes; keep them as bytes
// so multi-byte UTF-8 and partial lines survive.
function collect(chunk) {
  if (typeof chunk === "number") out.push(Buffer.from([chunk]));
  else if (typeof chunk === "string") out.push(Buffer.from(chunk, "utf8"));
  else out.push(Buffer.from(chunk));
}
const captured = () => Buffer.concat(out).toString("utf8");

async function boot(heap) {
  out = [];
  mp = await loadMicroPython(process.argv[2], { heapBytes: heap, stdout: collect, stderr: collect });
  mp.runPython("import sys\nsys.path.append('/lib')");
}

function mkdirs(path) {
  const parts = path.split("/").filter(Boolean);
  let dir = "";
  for (const part of parts.slice(0, -1)) {
    dir += "/" + part;
    try { mp.FS.mkdir(dir); } catch (e) { /* exists */ }
  }
}

async function handle(req) {
  if (req.op === "boot") {
    await boot(req.heap);
    return { ok: true, out: "" };
  }
  if (mp === null) return { ok: false, out: "", error: "VM not booted" };
  if (req.op === "put") {
    mkdirs(req.path);
    mp.FS.writeFile(req.path, Buffer.from(req.b64, "base64"));
    return { ok: true, out: "" };
  }
  if (req.op === "run") {
    out = [];
    try {
      await mp.runPythonAsync(req.code);
      return { ok: true, out: captured() };
    } catch (e) {
      return { ok: false, out: captured(), error: String(e && e.message ? e.message : e) };
    }
  }
  return { ok: false, out: "", error: `unknown op ${req.op}` };
}

if (process.argv[3] && globalThis.gc) setInterval(globalThis.gc, Number(process.argv[3])).unref();

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  let reply;
  try {
    reply = await handle(JSON.parse(line));
  } catch (e) {
    reply = { ok: false, out: "", error: `host error: ${e}` };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
