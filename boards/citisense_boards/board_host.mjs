// A virtual ESP32 board: everything around the CPU.
//
// Spawned by citisense_boards.virtual_board, which owns the pseudo-terminals:
// two inherited sockets (numbers in the config) carry the REPL console and the
// uplink UART, which the Python side relays to ptys. stdin takes one JSON config line, then JSON control
// lines from the street simulation; stdout reports JSON events (PWM, pins,
// UART bytes for simulated sensors, resets). The CPU runs in a worker
// (board_cpu.mjs); a hard reset terminates it and starts a fresh one, so a
// watchdog can reset a CPU stuck in a loop, as on a real chip. State that
// outlives a CPU reset lives here: sensor registers, RTC time and memory.
import { Worker, MessageChannel } from "node:worker_threads";
import net from "node:net";
import fs from "node:fs";
import readline from "node:readline";
import { compileMicroPython } from "./micropython_wasm.mjs";

const RESETS = {
  // name: [machine.reset_cause(), ESP32 ROM code, ROM name]
  PWRON: [1, 0x1, "POWERON_RESET"],
  WDT: [3, 0x7, "TG0WDT_SYS_RESET"],
  DEEPSLEEP: [4, 0x5, "DEEPSLEEP_RESET"],
  SOFT: [5, 0xc, "SW_CPU_RESET"],
};
const TIMER_WAKE = 4;
// Heap added for the board's own modules (about 20 KiB today), which cost an
// ESP32 nothing as C or frozen modules; firmware does not see it.
const ROM_RESERVE = 40 * 1024;
const MAX_CONSOLE_BACKLOG = 256 * 1024; // a UART with nobody listening just drops bytes
const SOCKET_ERRNO = { ECONNREFUSED: 111, ECONNRESET: 104, ETIMEDOUT: 110, EPIPE: 32, EHOSTUNREACH: 113 };

const lines = readline.createInterface({ input: process.stdin });
const iterator = lines[Symbol.asyncIterator]();
const cfg = JSON.parse((await iterator.next()).value);

const emit = (ev) => process.stdout.write(`${JSON.stringify(ev)}\n`);
const shared = {
  doorbell: new SharedArrayBuffer(4),
  clock: new SharedArrayBuffer(3 * 8),
  analog: new SharedArrayBuffer(40 * 4),
  digital: new SharedArrayBuffer(40),
  i2c: new SharedArrayBuffer(Math.max(1, cfg.i2cImages.length) * 256),
  // What the CPU is doing, for the watchdog's report: [board call index + 1, or 0 while it
  // runs Python; real time of the change; the last call's index + 1 and first argument];
  // see board_api.mjs.
  activity: new SharedArrayBuffer(4 * 8),
};
const doorbell = new Int32Array(shared.doorbell);
const clock = new Float64Array(shared.clock);
const analog = new Int32Array(shared.analog);
const digital = new Int8Array(shared.digital).fill(-1);
const i2c = new Uint8Array(shared.i2c);
const streetMs = () => clock[0] + (Date.now() - clock[1]) * clock[2];
const setClock = (c) => { clock[0] = c.street; clock[1] = c.real; clock[2] = c.speed; };

setClock(cfg.clock);
for (const [pin, uv] of Object.entries(cfg.analog)) analog[pin] = uv;
for (const [pin, level] of Object.entries(cfg.digital)) digital[pin] = level;
for (const image of cfg.i2cImages) i2c.set(Buffer.from(image.hex, "hex"), image.slot * 256);

const wasmModule = await compileMicroPython(cfg.mjsPath);
const romfs = fs.readFileSync(cfg.romfsPath);
const consoleSock = new net.Socket({ fd: cfg.consoleFd });
const uplinkSock = new net.Socket({ fd: cfg.uplinkFd });

let cpu = null;
let rtcOffsetMs = cfg.rtcOffsetMs;
let rtcMemory = "";
let wdt = null;
let boardCalls = []; // _vboard's functions, by the index the CPU reports
let resetting = false;
const sockets = new Map();
const driven = { pwm: new Set(), pins: new Set() };

function toCpu(msg) {
  if (!cpu) return;
  cpu.port.postMessage(msg);
  ringDoorbell();
}
function ringDoorbell() {
  Atomics.add(doorbell, 0, 1);
  Atomics.notify(doorbell, 0);
}

function startCpu(cause, wakeReason = 0) {
  const { port1, port2 } = new MessageChannel();
  const [resetCause, resetCode, resetName] = RESETS[cause];
  const worker = new Worker(new URL("./board_cpu.mjs", import.meta.url), {
    workerData: {
      port: port2, shared, wasmModule, romfs, mjsPath: cfg.mjsPath,
      heapBytes: cfg.heapBytes, romReserve: ROM_RESERVE, limitHeap: cfg.limitHeap, flashDir: cfg.flashDir,
      partitionPath: cfg.partitionPath, partitionBytes: cfg.partitionBytes,
      nvsPath: cfg.nvsPath, wiring: cfg.wiring, wifi: cfg.wifi, uniqueId: cfg.uniqueId,
      resetCause, resetCode, resetName, wakeReason, rtcOffsetMs, rtcMemory,
    },
    transferList: [port2],
  });
  cpu = { worker, port: port1 };
  // What the CPU printed before a reset still leaves the UART, as on a board; the rest of a
  // reset CPU's messages are dropped.
  worker.on("message", (m) => { if (cpu?.worker === worker || m.t === "out") fromCpu(m); });
  worker.on("error", (e) => { if (cpu?.worker === worker) emit({ ev: "fatal", message: String(e?.stack ?? e) }); });
}

async function reset(cause, sleepMs = 0) {
  if (resetting || !cpu) return;
  resetting = true;
  const old = cpu;
  cpu = null;
  if (wdt) clearTimeout(wdt.timer);
  wdt = null;
  await old.worker.terminate();
  for (const s of sockets.values()) s.destroy();
  sockets.clear();
  // The pins float during reset: the lamp driver falls back to its own default.
  for (const pin of driven.pwm) emit({ ev: "pwm", pin, freq: 0, duty: null, t: streetMs() });
  for (const pin of driven.pins) emit({ ev: "pin", pin, value: null, t: streetMs() });
  driven.pwm.clear();
  driven.pins.clear();
  emit({ ev: "reset", cause, t: streetMs() });
  if (sleepMs > 0) await new Promise((r) => setTimeout(r, sleepMs / clock[2]));
  resetting = false;
  startCpu(cause, cause === "DEEPSLEEP" ? TIMER_WAKE : 0);
}

/** Where the CPU was when the watchdog bit, as an ESP32's panic handler prints a backtrace. */
function cpuActivity() {
  const [call, since, last, arg] = new Float64Array(shared.activity);
  const shown = Number.isNaN(arg) ? "" : arg;
  const lastCall = last > 0 ? `, since board call ${boardCalls[last - 1]}(${shown})` : "";
  const name = call > 0 ? `in board call ${boardCalls[call - 1]}` : `running Python${lastCall}`;
  return `${name} for ${Math.round(performance.timeOrigin + performance.now() - since)} ms `
    + "(real time)";
}

function armWatchdog() {
  if (!wdt) return;
  clearTimeout(wdt.timer);
  wdt.timer = setTimeout(() => {
    emit({ ev: "log", message: `watchdog reset: the CPU was ${cpuActivity()}` });
    reset("WDT");
  }, wdt.timeout / clock[2]);
}

function socketOp(m) {
  if (m.op === "connect") {
    const s = net.connect({ host: m.host, port: m.port });
    sockets.set(m.h, s);
    s.on("connect", () => toCpu({ t: "sock", h: m.h, ev: "open" }));
    s.on("data", (data) => toCpu({ t: "sock", h: m.h, ev: "data", data }));
    s.on("end", () => toCpu({ t: "sock", h: m.h, ev: "end" }));
    s.on("error", (e) => toCpu({ t: "sock", h: m.h, ev: "error", errno: SOCKET_ERRNO[e.code] ?? 5 }));
    s.on("close", () => sockets.delete(m.h));
  } else if (m.op === "send") {
    const n = m.data.length;
    sockets.get(m.h)?.write(m.data, () => toCpu({ t: "sock", h: m.h, ev: "sent", n }));
  } else if (m.op === "close") {
    sockets.get(m.h)?.destroy();
    sockets.delete(m.h);
  }
}

function fromCpu(m) {
  switch (m.t) {
    case "out":
      if (consoleSock.writableLength < MAX_CONSOLE_BACKLOG) consoleSock.write(m.data);
      break;
    case "booted":
      emit({ ev: "boot", soft: m.soft, t: streetMs() });
      break;
    case "pin":
      (m.value === null ? driven.pins.delete(m.pin) : driven.pins.add(m.pin));
      emit({ ev: "pin", pin: m.pin, value: m.value, t: m.at });
      break;
    case "pwm":
      (m.freq > 0 ? driven.pwm.add(m.pin) : driven.pwm.delete(m.pin));
      emit({ ev: "pwm", pin: m.pin, freq: m.freq, duty: m.duty, t: m.at });
      break;
    case "i2c_write":
      emit({ ev: "i2c_write", slot: m.slot, reg: m.reg, hex: Buffer.from(m.data).toString("hex") });
      break;
    case "uart":
      if (m.endpoint === "uplink") uplinkSock.write(m.data);
      else emit({ ev: "uart", endpoint: m.endpoint, hex: Buffer.from(m.data).toString("hex"), t: streetMs() });
      break;
    case "sock":
      socketOp(m);
      break;
    case "wdt":
      wdt = { timeout: m.timeout, timer: null };
      armWatchdog();
      break;
    case "wdt_feed":
      armWatchdog();
      break;
    case "reset":
      reset("SOFT");
      break;
    case "deepsleep":
      reset("DEEPSLEEP", m.ms);
      break;
    case "rtc":
      rtcOffsetMs = m.offsetMs;
      break;
    case "rtc_memory":
      rtcMemory = m.hex;
      break;
    case "calls":
      boardCalls = m.names;
      break;
    case "log":
      emit({ ev: "log", message: m.message });
      break;
    case "fatal":
      emit({ ev: "fatal", message: m.message });
      break;
  }
}

function control(op) {
  switch (op.op) {
    case "analog":
      analog[op.pin] = op.uv;
      break;
    case "digital":
      if (digital[op.pin] !== op.level) {
        digital[op.pin] = op.level;
        if (op.level >= 0) toCpu({ t: "edge", pin: op.pin, level: op.level });
      }
      break;
    case "i2c":
      i2c.set(Buffer.from(op.hex, "hex"), op.slot * 256 + op.reg);
      break;
    case "uart":
      toCpu({ t: "uart", endpoint: op.endpoint, data: Buffer.from(op.hex, "hex") });
      break;
    case "clock":
      setClock(op);
      ringDoorbell();
      armWatchdog();
      break;
    case "wifi":
      cfg.wifi = op.wifi;
      toCpu({ t: "wifi", wifi: op.wifi });
      break;
    case "reset":
      reset(op.cause);
      break;
  }
}

consoleSock.on("data", (data) => toCpu({ t: "in", data }));
uplinkSock.on("data", (data) => toCpu({ t: "uart", endpoint: "uplink", data }));
for (const s of [consoleSock, uplinkSock]) s.on("error", () => process.exit(0));
startCpu(cfg.resetCause);
for await (const line of { [Symbol.asyncIterator]: () => iterator }) {
  if (line.trim()) control(JSON.parse(line));
}
process.exit(0);
