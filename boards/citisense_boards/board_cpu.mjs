// The CPU of a virtual ESP32: a worker thread running the MicroPython VM.
//
// Everything here is synchronous, as on a real chip: main.py may run
// `asyncio.run(main())` forever and the REPL only answers once it returns or
// is interrupted. The board thread (board_host.mjs) owns all I/O; it posts
// messages to this thread and rings a doorbell (Atomics) that wakes the CPU
// from its waits. The CPU picks messages up synchronously with
// receiveMessageOnPort at its wait points and at every call into `_vboard`.
import fs from "node:fs";
import { workerData, parentPort, receiveMessageOnPort } from "node:worker_threads";
import {
  loadMicroPython, useCompiledModule, findCallDepthWord, collectAtSafePoint, limitHeap,
  setTicksSource,
} from "./micropython_wasm.mjs";
import { makeHostFS } from "./hostfs.mjs";
import { makeBoardApi } from "./board_api.mjs";

const cfg = workerData;
useCompiledModule(cfg.wasmModule);
const doorbell = new Int32Array(cfg.shared.doorbell);
const clock = new Float64Array(cfg.shared.clock); // street anchor ms, real anchor ms, speed
const realNow = Date.now.bind(Date);
const streetMs = () => clock[0] + (realNow() - clock[1]) * clock[2];

const CTRL_A = 1;
const CTRL_B = 2;
const CTRL_D = 4;
const CTRL_E = 5;
const RAW_PASTE_WINDOW = 256;
const RAW_BANNER = "raw REPL; CTRL-B to exit";
const RAW_PASTE_REQUEST = [CTRL_E, 0x41, CTRL_A];

const board = {
  cfg,
  streetMs,
  rtcOffsetMs: cfg.rtcOffsetMs,
  post: (msg) => parentPort.postMessage(msg),
  mp: null,
  input: [], // console bytes not yet consumed by the REPL or sys.stdin
  interrupted: false, // Ctrl-C seen since the last wait started
  softResetRequested: false,
  inCallback: false,
  handlers: {}, // message type -> handler, filled by the board API
};
// The VM's own clock functions (time.time(), localtime) read the board's RTC; its ticks
// count street time from power-on, whatever the RTC is set to, as an ESP32's do.
Date.now = () => Math.floor(streetMs() + board.rtcOffsetMs);
const poweredOnMs = streetMs();
setTicksSource(() => Math.floor(streetMs() - poweredOnMs));

// ---- console output -------------------------------------------------------
let out = [];
let lastByte = 0;
let mute = false;
let capture = null;
let hideNext = []; // bytes the REPL is about to print that the console must not show

function emit(byte) {
  if (mute) return;
  if (hideNext.length) {
    if (hideNext.shift() === byte) return;
    hideNext = [];
  }
  // Print output is cooked like a board's UART console: "\n" becomes "\r\n".
  if (byte === 10 && lastByte !== 13) out.push(13);
  out.push(byte);
  lastByte = byte;
  if (capture) capture.push(byte);
  if (out.length >= 1024) flushOut();
}
/** Protocol bytes: no cooking. */
function emitRaw(bytes) {
  out.push(...bytes);
  lastByte = bytes[bytes.length - 1];
  flushOut();
}
function flushOut() {
  if (out.length === 0) return;
  board.post({ t: "out", data: Uint8Array.from(out) });
  out = [];
}
board.flushOut = flushOut;
board.print = (text) => { for (const b of Buffer.from(text)) emit(b); };

// ---- messages and waiting -------------------------------------------------
let seenBell = Atomics.load(doorbell, 0);

function takeInput(bytes) {
  const M = board.mp?._module;
  for (const b of bytes) {
    if (M && b === M._mp_hal_get_interrupt_char()) {
      M._mp_sched_keyboard_interrupt();
      board.interrupted = true;
    } else {
      board.input.push(b);
    }
  }
}
board.handlers.in = (m) => takeInput(m.data);

/** Pick up pending messages; cheap when the doorbell has not rung. */
function pollMessages() {
  const bell = Atomics.load(doorbell, 0);
  if (bell === seenBell) return;
  seenBell = bell;
  for (let m = receiveMessageOnPort(cfg.port); m; m = receiveMessageOnPort(cfg.port)) {
    board.handlers[m.message.t]?.(m.message);
  }
}
board.pollMessages = pollMessages;

/** Block until a message arrives or `simMs` of street time pass (forever if negative). */
function waitEvent(simMs) {
  flushOut();
  const bell = Atomics.load(doorbell, 0);
  if (bell !== seenBell) return pollMessages();
  if (simMs < 0) Atomics.wait(doorbell, 0, bell);
  else Atomics.wait(doorbell, 0, bell, Math.max(0, simMs / clock[2]));
  pollMessages();
}

// ---- the VM -----------------------------------------------------------------
let depthWord = -1;
let noop = null;

/**
 * Let the port collect garbage now if it wants to (see micropython_wasm.mjs).
 * Not inside an IRQ or timer callback: JS called it, and that call path holds
 * objects where the collector does not look.
 */
board.safePoint = () => {
  if (noop && !board.inCallback) callPython(() => collectAtSafePoint(board.mp, depthWord, noop));
};

/** Call into Python from JS; a Ctrl-C landing there must still reach the main code. */
function callPython(fn) {
  try {
    fn();
  } catch (e) {
    if (e?.name !== "PythonError") throw e;
    if (e.type === "KeyboardInterrupt") board.mp._module._mp_sched_keyboard_interrupt();
    else board.print(`${e.message}\n`);
  }
}
board.callPython = callPython;

const api = makeBoardApi(board, waitEvent);

function stdinRead(stream, buffer, offset, length) {
  // sys.stdin blocks for the first byte like a UART, then takes what is there.
  while (board.input.length === 0) {
    board.interrupted = false;
    api.fireDue();
    if (board.interrupted) return 0;
    waitEvent(api.untilNextDeadline());
  }
  let n = 0;
  while (n < length && board.input.length) buffer[offset + n++] = board.input.shift();
  return n;
}

/**
 * The flash the VM maps as its ROMFS segment, read at every (soft) boot: first the "romfs"
 * partition, as on an ESP32 built with ROMFS (segment 0 is that partition, so
 * vfs.rom_ioctl(2, 0) starts with it), then the board's own ROM image, mounted at /rom.
 */
function mappedFlash() {
  const partition = fs.existsSync(cfg.partitionPath)
    ? fs.readFileSync(cfg.partitionPath)
    : Buffer.alloc(cfg.partitionBytes, 0xff);
  return Buffer.concat([partition, Buffer.from(cfg.romfs)]);
}

// An ESP32 port mounts a valid image at the partition's start on /rom; here /rom holds
// the board's modules (C modules on a real board), so that mount is replaced.
const MOUNT_BOARD_ROM = `import vfs
try:
    vfs.umount('/rom')
except OSError:
    pass
vfs.mount(vfs.VfsRom(memoryview(vfs.rom_ioctl(2, 0))[${cfg.partitionBytes}:]), '/rom')
import uctypes
_flash_address = uctypes.addressof(vfs.rom_ioctl(2, 0))
del uctypes
import sys
if '/rom/lib' not in sys.path:  # the port adds it only when it mounted /rom itself
    sys.path.append('/rom/lib')
del vfs, sys`;

async function loadVm() {
  const mp = await loadMicroPython(cfg.mjsPath, {
    heapBytes: cfg.heapBytes + cfg.romReserve, // the ROM modules' share: see _board_boot.py
    romfs: mappedFlash(),
    stdout: (b) => emit(b[0]),
    stderr: (b) => emit(b[0]),
    stdin: () => null, // makes /dev/stdin a device; its read is replaced below
  });
  board.mp = mp;
  const FS = mp.FS;
  FS.getDevice(FS.lookupPath("/dev/stdin").node.rdev).stream_ops.read = stdinRead;
  FS.mkdir("/flash");
  FS.mount(makeHostFS(FS), { root: cfg.flashDir }, "/flash");
  mp.registerJsModule("_vboard", api.exports);
  if (depthWord < 0) depthWord = findCallDepthWord(mp); // static memory: same in every VM
  if (cfg.limitHeap) limitHeap(mp, cfg.heapBytes + cfg.romReserve);
  mp.runPython(MOUNT_BOARD_ROM);
  // Flash writes show in the mapped partition at once, as after an ESP32's cache flush.
  board.flashAddress = mp.globals.get("_flash_address");
  mp.runPython("del _flash_address");
  mp.runPython("__import__('_board_boot')\n__import__('sys').modules.pop('_board_boot')");
  noop = mp.pyimport("micropython").opt_level;
}

/** Run boot.py or main.py like pyexec_file_if_exists; false if it failed. */
function runScript(name) {
  flushOut();
  let ok = false;
  callPython(() => { ok = board.mp.pyimport("_board_run").run(name); });
  return ok && !board.softResetRequested;
}

// ---- the REPL ---------------------------------------------------------------
let rawMode = false; // the REPL mode survives soft resets, as on a board

function processChar(c) {
  const watching = !rawMode && c === CTRL_A;
  if (watching) capture = [];
  const r = board.mp.replProcessChar(c);
  if (watching) {
    rawMode = Buffer.from(capture).toString("latin1").includes(RAW_BANNER);
    capture = null;
  } else if (rawMode && c === CTRL_B) {
    rawMode = false;
  }
  return r;
}

/**
 * Raw-paste mode, device side. The port's event-driven raw REPL announces
 * raw-paste but then waits for bytes from a HAL input nothing feeds, hanging
 * the VM, so the protocol is served here: grant windows of RAW_PASTE_WINDOW
 * bytes with \x01 until the host's \x04, acknowledge it with \x04, then hand
 * the code to the raw REPL as if typed, hiding its "OK" (raw-paste has none).
 */
function rawPaste() {
  if (!rawMode || board.input[0] !== CTRL_E) return false;
  while (board.input.length < RAW_PASTE_REQUEST.length) waitEvent(-1);
  if (!RAW_PASTE_REQUEST.every((b, i) => board.input[i] === b)) return false;
  board.input.splice(0, RAW_PASTE_REQUEST.length);
  board.print("R\x01");
  emitRaw([RAW_PASTE_WINDOW & 0xff, RAW_PASTE_WINDOW >> 8]);
  const code = [];
  for (let taken = 0; ;) {
    while (board.input.length === 0) waitEvent(-1);
    const c = board.input.shift();
    if (c === CTRL_D) break;
    code.push(c);
    if (++taken % RAW_PASTE_WINDOW === 0) emitRaw([CTRL_A]);
  }
  emitRaw([CTRL_D]);
  for (const c of code) board.mp.replProcessChar(c);
  hideNext = [...Buffer.from("OK")];
  return board.mp.replProcessChar(CTRL_D);
}

/** Serve the REPL until a soft reset. */
function repl() {
  if (rawMode) {
    mute = true;
    board.mp.replInit();
    mute = false;
    board.mp.replProcessChar(CTRL_A);
  } else {
    board.mp.replInit();
  }
  for (;;) {
    let n = 0;
    while (board.input.length && n++ < 256) {
      const pasted = rawPaste();
      if (pasted !== false) {
        if (pasted !== 0 || board.softResetRequested) return;
        continue;
      }
      if (processChar(board.input.shift()) !== 0 || board.softResetRequested) return;
    }
    if (board.input.length) { pollMessages(); continue; }
    api.fireDue();
    if (board.softResetRequested) return;
    if (board.input.length === 0) waitEvent(api.untilNextDeadline());
  }
}

async function main() {
  board.print(`rst:0x${cfg.resetCode.toString(16)} (${cfg.resetName}),boot:0x13 (SPI_FAST_FLASH_BOOT)\n`);
  for (let boot = 0; ; boot++) {
    if (boot > 0) {
      board.print("MPY: soft reboot\n");
      flushOut();
      api.softReset();
    }
    board.softResetRequested = false;
    await loadVm();
    board.post({ t: "booted", soft: boot > 0 });
    // As on the ESP32 port, main.py runs only after boot.py succeeded and only
    // when the REPL is in friendly mode (mpremote's soft resets skip it).
    if (runScript("boot.py") && !rawMode) runScript("main.py");
    if (!board.softResetRequested) repl();
    flushOut();
  }
}

main().catch((e) => {
  flushOut();
  board.post({ t: "fatal", message: String(e?.stack ?? e) });
});
