// `_vboard`: the hardware behind the board's machine, esp32, network, socket,
// select and time modules (written in MicroPython, see esp32-rom/lib).
//
// Functions take and return plain values only; bytes come in as Python bytes
// and go out as hex strings. They never throw into the VM: an exception
// crossing into wasm would corrupt it, so failures are returned as negative
// errno numbers that the Python side raises as OSError.
import crypto from "node:crypto";
import fs from "node:fs";

const EAGAIN = 11, ENODEV = 19, EINVAL = 22, ENOTCONN = 107, ETIMEDOUT = 110;
const EHOSTUNREACH = 113, EINPROGRESS = 115;
const POLLIN = 1, POLLOUT = 4, POLLERR = 8, POLLHUP = 16;
const TICKS_MASK = 0x3fffffff; // MicroPython's ticks period is 2**30
const SEND_WINDOW = 16 * 1024; // bytes a socket may have in flight, like lwIP's send buffer

// ESP32 GPIOs: 6..11 drive the SPI flash, 34..39 are input only.
const GPIOS = new Set([0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39]);
const ADC_PINS = new Set([32, 33, 34, 35, 36, 37, 38, 39, 0, 2, 4, 12, 13, 14, 15, 25, 26, 27]);
const ADC_FULL_SCALE_MV = [950, 1250, 1750, 2450]; // ATTN_0DB, 2_5DB, 6DB, 11DB
const UART_DEFAULT_PINS = [[1, 3], [10, 9], [17, 16]]; // [tx, rx] of UART0..2
const PIN = { IN: 1, OUT: 3, OPEN_DRAIN: 7, PULL_DOWN: 1, PULL_UP: 2, IRQ_RISING: 1, IRQ_FALLING: 2 };
const STAT = { IDLE: 1000, CONNECTING: 1001, GOT_IP: 1010, NO_AP_FOUND: 201, WRONG_PASSWORD: 202 };
const WIFI_CONNECT_MS = 800;

export function makeBoardApi(board, waitEvent) {
  const { cfg } = board;
  const shared = cfg.shared;
  const analogUv = new Int32Array(shared.analog);
  const digital = new Int8Array(shared.digital);
  const i2cRegs = new Uint8Array(shared.i2c);
  const bootMs = board.streetMs();
  // Bytes from Python arrive as (address, length) in the VM's memory and are copied here:
  // a Python object handed to JS stays referenced by its proxy and would never be freed.
  const fromVm = (address, length) =>
    Buffer.from(board.mp._module.HEAPU8.subarray(address, address + length));
  const hex = (bytes) => Buffer.from(bytes).toString("hex");
  const now = () => board.streetMs();

  // ---- waiting ------------------------------------------------------------
  const timers = new Map(); // id -> {deadline, period, periodic, cb}
  const pendingIrqs = [];
  let irqsEnabled = true;

  function fireDue() {
    if (board.inCallback || !irqsEnabled) return;
    board.inCallback = true;
    try {
      while (pendingIrqs.length) {
        const cb = pendingIrqs.shift();
        board.callPython(() => cb());
      }
      const t = now();
      for (const [id, timer] of timers) {
        if (timer.deadline > t) continue;
        if (timer.periodic) timer.deadline = Math.max(timer.deadline + timer.period, t);
        else timers.delete(id);
        board.callPython(() => timer.cb());
      }
    } finally {
      board.inCallback = false;
    }
  }
  function untilNextDeadline() {
    if (!irqsEnabled) return -1;
    if (pendingIrqs.length) return 0;
    let next = -1;
    for (const timer of timers.values()) {
      const left = Math.max(0, timer.deadline - now());
      if (next < 0 || left < next) next = left;
    }
    return next;
  }
  /** Wait up to ms (forever if negative) for `done()`, serving callbacks; false on Ctrl-C. */
  function block(ms, done) {
    const deadline = ms < 0 ? Infinity : now() + ms;
    board.interrupted = false;
    for (;;) {
      board.pollMessages();
      if (board.interrupted) return false;
      fireDue();
      if (done()) return true;
      const left = deadline - now();
      if (left <= 0) return false;
      const timer = untilNextDeadline();
      waitEvent(left === Infinity ? timer : timer < 0 ? left : Math.min(left, timer));
    }
  }
  function haltForever() {
    board.flushOut();
    const bell = new Int32Array(shared.doorbell);
    for (;;) Atomics.wait(bell, 0, Atomics.load(bell, 0));
  }

  // ---- pins -----------------------------------------------------------------
  const pins = new Map(); // gpio -> {mode, pull, out, irq}
  const pinState = (id) => {
    if (!pins.has(id)) pins.set(id, { mode: 0, pull: 0, out: 0, irq: null });
    return pins.get(id);
  };
  const externalLevel = (id, p) => {
    const level = digital[id];
    if (level >= 0) return level;
    return p.pull === PIN.PULL_UP ? 1 : 0;
  };
  function setOutput(id, value) {
    const p = pinState(id);
    value = value ? 1 : 0;
    if (p.out === value) return;
    p.out = value;
    board.post({ t: "pin", pin: id, value, at: now() });
  }
  board.handlers.edge = (m) => {
    const p = pins.get(m.pin);
    if (!p?.irq) return;
    const wanted = m.level ? PIN.IRQ_RISING : PIN.IRQ_FALLING;
    if (p.irq.trigger & wanted) pendingIrqs.push(p.irq.cb);
  };

  // ---- PWM ------------------------------------------------------------------
  const pwms = new Map(); // gpio -> {freq, duty}
  function pwmReport(pin, freq, duty) {
    board.post({ t: "pwm", pin, freq, duty, at: now() });
  }

  // ---- I2C --------------------------------------------------------------------
  const busDevices = (scl, sda) =>
    (cfg.wiring.i2c.find((b) => b.scl === scl && b.sda === sda)?.devices) ?? [];
  const device = (scl, sda, addr) => busDevices(scl, sda).find((d) => d.addr === addr);
  const pointers = new Map(); // device slot -> register pointer

  // ---- UART -----------------------------------------------------------------
  const uarts = new Map(); // handle -> {endpoint, baudOk, rx, rxMax}
  let nextUart = 1;
  const uartFor = (endpoint) => [...uarts.values()].find((u) => u.endpoint === endpoint);
  // A receiver at the wrong baud rate sees framing garbage, one byte per byte sent.
  const garble = (data) => Uint8Array.from(data, (b) => (b ^ 0xa5) | 0x80);
  board.handlers.uart = (m) => {
    const u = uartFor(m.endpoint);
    if (!u) return;
    for (const b of u.baudOk ? m.data : garble(m.data)) {
      if (u.rx.length < u.rxMax) u.rx.push(b);
    }
  };
  function uartTake(u, n, timeout, timeoutChar, line) {
    const got = [];
    let deadline = now() + timeout;
    board.interrupted = false;
    for (;;) {
      board.pollMessages();
      while (u.rx.length && (n < 0 || got.length < n)) {
        const b = u.rx.shift();
        got.push(b);
        if (line && b === 10) return got;
      }
      if ((n >= 0 && got.length >= n) || board.interrupted) return got;
      const left = deadline - now();
      if (left <= 0) return got;
      waitEvent(left);
      if (got.length) deadline = Math.min(deadline, now() + timeoutChar);
    }
  }

  // ---- sockets ----------------------------------------------------------------
  const socks = new Map(); // handle -> {state, rx: Buffer[], rxLen, eof, err, inFlight}
  let nextSock = 1;
  board.handlers.sock = (m) => {
    const s = socks.get(m.h);
    if (!s) return;
    if (m.ev === "open") s.state = "open";
    else if (m.ev === "data") { s.rx.push(Buffer.from(m.data)); s.rxLen += m.data.length; }
    else if (m.ev === "end") s.eof = true;
    else if (m.ev === "sent") s.inFlight -= m.n;
    else if (m.ev === "error") { s.err = m.errno; s.state = "closed"; }
  };
  const isLoopback = (ip) => /^127\.\d+\.\d+\.\d+$/.test(ip);
  function sockTake(s, n) {
    const all = Buffer.concat(s.rx);
    const part = all.subarray(0, n);
    s.rx = part.length < all.length ? [all.subarray(n)] : [];
    s.rxLen -= part.length;
    return hex(part);
  }

  // ---- Wi-Fi ------------------------------------------------------------------
  let wifiEnv = cfg.wifi;
  board.handlers.wifi = (m) => { wifiEnv = m.wifi; };
  const wlan = { active: false, ssid: null, key: null, since: 0 };
  function wlanStatus() {
    if (!wlan.active || wlan.ssid === null) return STAT.IDLE;
    if (now() - wlan.since < WIFI_CONNECT_MS) return STAT.CONNECTING;
    if (!wifiEnv.up || (wifiEnv.ssid !== null && wifiEnv.ssid !== wlan.ssid)) return STAT.NO_AP_FOUND;
    if (wifiEnv.password !== null && wifiEnv.password !== wlan.key) return STAT.WRONG_PASSWORD;
    return STAT.GOT_IP;
  }

  // ---- the "romfs" flash partition: a host file; erased flash reads 0xff --------------
  // NOR flash: a write can only clear bits, an erase sets a whole 4 KiB sector back to 0xff.
  const PART_SECTOR = 4096;
  function partitionFd() {
    if (!fs.existsSync(cfg.partitionPath)) {
      fs.writeFileSync(cfg.partitionPath, Buffer.alloc(cfg.partitionBytes, 0xff));
    }
    return fs.openSync(cfg.partitionPath, "r+");
  }
  function partitionIo(offset, length, io) {
    if (!(offset >= 0 && length >= 0 && offset + length <= cfg.partitionBytes)) return -EINVAL;
    const fd = partitionFd();
    try {
      const data = Buffer.alloc(length);
      fs.readSync(fd, data, 0, length, offset);
      return io(fd, data);
    } finally {
      fs.closeSync(fd);
    }
  }

  // ---- NVS ----------------------------------------------------------------------
  const readNvs = () => (fs.existsSync(cfg.nvsPath) ? JSON.parse(fs.readFileSync(cfg.nvsPath, "utf8")) : {});
  let nvs = readNvs();

  let rtcMemory = Buffer.from(cfg.rtcMemory, "hex");
  let cpuFreq = 160000000;

  const exports = {
    // time
    ticks_ms: () => Math.floor(now() - bootMs) & TICKS_MASK,
    ticks_us: () => Math.floor((now() - bootMs) * 1000) % (TICKS_MASK + 1),
    sleep_ms: (ms) => { board.safePoint(); block(ms, () => false); },
    collect: () => board.safePoint(),
    rtc_set: (epochSeconds, micros) => {
      board.rtcOffsetMs = Number(epochSeconds) * 1000 + micros / 1000 - now();
      board.post({ t: "rtc", offsetMs: board.rtcOffsetMs });
    },
    rtc_memory: () => hex(rtcMemory),
    rtc_memory_set: (address, length) => {
      rtcMemory = fromVm(address, length);
      board.post({ t: "rtc_memory", hex: hex(rtcMemory) });
    },

    // machine
    reset: () => { board.post({ t: "reset" }); haltForever(); },
    soft_reset: () => { board.softResetRequested = true; },
    deepsleep: (ms) => { board.post({ t: "deepsleep", ms }); haltForever(); },
    reset_cause: () => cfg.resetCause,
    wake_reason: () => cfg.wakeReason,
    unique_id: () => cfg.uniqueId,
    freq: (hz) => { if (hz > 0) cpuFreq = hz; return cpuFreq; },
    irq_enable: (on) => { const was = irqsEnabled; irqsEnabled = !!on; return was; },
    urandom: (n) => crypto.randomBytes(n).toString("hex"),
    rom_reserve: () => cfg.romReserve,
    raw_temperature: () => 128 + Math.floor(Math.random() * 3),
    wdt_start: (timeoutMs) => board.post({ t: "wdt", timeout: timeoutMs }),
    wdt_feed: () => board.post({ t: "wdt_feed" }),
    timer_init: (id, periodMs, periodic, cb) => {
      timers.set(id, { deadline: now() + periodMs, period: Math.max(periodMs, 1), periodic: !!periodic, cb });
    },
    timer_deinit: (id) => { timers.delete(id); },

    // pins
    pin_valid: (id, output) => (!GPIOS.has(id) ? -EINVAL : output && id >= 34 ? -ENODEV : 0),
    pin_init: (id, mode, pull, value) => {
      const p = pinState(id);
      if (mode >= 0) p.mode = mode;
      if (pull >= 0) p.pull = pull;
      if (value !== null && value !== undefined) setOutput(id, value);
    },
    pin_read: (id) => {
      const p = pinState(id);
      if (p.mode === PIN.OUT) return p.out;
      if (p.mode === PIN.OPEN_DRAIN && p.out === 0) return 0;
      return externalLevel(id, p);
    },
    pin_write: (id, value) => setOutput(id, value),
    pin_irq: (id, trigger, cb) => { pinState(id).irq = cb ? { trigger, cb } : null; },

    // PWM
    pwm_set: (pin, freq, duty) => {
      pwms.set(pin, { freq, duty });
      pwmReport(pin, freq, duty);
    },
    pwm_deinit: (pin) => {
      if (pwms.delete(pin)) pwmReport(pin, 0, 0);
    },

    // ADC: a 12-bit reading of the voltage at the pin, with a little noise
    adc_valid: (pin) => (ADC_PINS.has(pin) ? 0 : -EINVAL),
    adc_read: (pin, atten) => {
      const fullUv = ADC_FULL_SCALE_MV[atten] * 1000;
      const noise = Math.round((Math.random() - 0.5) * 4);
      return Math.min(4095, Math.max(0, Math.round((analogUv[pin] / fullUv) * 4095) + noise));
    },
    adc_full_scale_mv: (atten) => ADC_FULL_SCALE_MV[atten],

    // I2C, routed by the pins the bus was set up on
    i2c_scan: (scl, sda) => busDevices(scl, sda).map((d) => d.addr).sort((a, b) => a - b).join(","),
    i2c_write: (scl, sda, addr, address, length) => {
      const d = device(scl, sda, addr);
      if (!d) return -ENODEV;
      const bytes = fromVm(address, length);
      if (bytes.length === 0) return 0;
      let ptr = bytes[0];
      for (const b of bytes.subarray(1)) { i2cRegs[d.slot * 256 + ptr] = b; ptr = (ptr + 1) & 0xff; }
      pointers.set(d.slot, ptr);
      if (bytes.length > 1) {
        // A chip that starts measuring when told shows "busy" until the street sends data.
        const [trigger, status, mask] = d.busy ?? [];
        if (d.busy && bytes[0] <= trigger && trigger < bytes[0] + bytes.length - 1) i2cRegs[d.slot * 256 + status] |= mask;
        board.post({ t: "i2c_write", slot: d.slot, reg: bytes[0], data: bytes.slice(1) });
      }
      return bytes.length;
    },
    i2c_read: (scl, sda, addr, n) => {
      const d = device(scl, sda, addr);
      if (!d) return -ENODEV;
      let ptr = pointers.get(d.slot) ?? 0;
      const got = new Uint8Array(n);
      for (let i = 0; i < n; i++) { got[i] = i2cRegs[d.slot * 256 + ptr]; ptr = (ptr + 1) & 0xff; }
      pointers.set(d.slot, ptr);
      return hex(got);
    },

    // UART, routed by its TX/RX pins to what the board wires there
    uart_open: (id, tx, rx, baud, rxbuf) => {
      const [dtx, drx] = UART_DEFAULT_PINS[id] ?? [-1, -1];
      tx = tx < 0 ? dtx : tx;
      rx = rx < 0 ? drx : rx;
      const wire = cfg.wiring.uarts.find((w) => w.tx === tx && w.rx === rx);
      for (const [h, u] of uarts) if (u.id === id) uarts.delete(h);
      const h = nextUart++;
      uarts.set(h, {
        id, endpoint: wire?.endpoint ?? null, baudOk: !wire?.baud || wire.baud === baud,
        rx: [], rxMax: Math.max(rxbuf, 257),
      });
      return h;
    },
    uart_close: (h) => { uarts.delete(h); },
    uart_any: (h) => { board.pollMessages(); return uarts.get(h)?.rx.length ?? 0; },
    uart_write: (h, address, length) => {
      const u = uarts.get(h);
      const bytes = fromVm(address, length);
      if (u?.endpoint) board.post({ t: "uart", endpoint: u.endpoint, data: u.baudOk ? bytes : garble(bytes) });
      return bytes.length;
    },
    uart_read: (h, n, timeout, timeoutChar, line) => {
      const u = uarts.get(h);
      return u ? hex(uartTake(u, n, timeout, timeoutChar, !!line)) : "";
    },

    // sockets: TCP to loopback only, through the board thread
    sock_new: () => {
      const h = nextSock++;
      socks.set(h, { state: "new", rx: [], rxLen: 0, eof: false, err: 0, inFlight: 0 });
      return h;
    },
    sock_connect: (h, ip, port, timeoutMs) => {
      const s = socks.get(h);
      if (wlanStatus() !== STAT.GOT_IP || !isLoopback(ip)) return -EHOSTUNREACH;
      if (s.state !== "new") return -EINVAL;
      s.state = "connecting";
      board.post({ t: "sock", op: "connect", h, host: ip, port });
      if (timeoutMs === 0) return -EINPROGRESS;
      if (!block(timeoutMs, () => s.state !== "connecting")) return -ETIMEDOUT;
      return s.state === "open" ? 0 : -s.err;
    },
    sock_send: (h, address, length, timeoutMs) => {
      const s = socks.get(h);
      if (s.err) return -s.err;
      if (s.state !== "open") return -ENOTCONN;
      if (s.inFlight >= SEND_WINDOW) {
        if (timeoutMs === 0) return -EAGAIN;
        if (!block(timeoutMs, () => s.inFlight < SEND_WINDOW || s.err)) return -ETIMEDOUT;
        if (s.err) return -s.err;
      }
      const bytes = fromVm(address, length); // after the wait: the buffer does not move
      s.inFlight += bytes.length;
      board.post({ t: "sock", op: "send", h, data: bytes });
      return bytes.length;
    },
    sock_recv: (h, n, timeoutMs) => {
      const s = socks.get(h);
      board.pollMessages();
      const ready = () => s.rxLen > 0 || s.eof || s.err !== 0;
      if (!ready()) {
        if (s.state !== "open" && s.state !== "connecting") return -ENOTCONN;
        if (timeoutMs === 0) return -EAGAIN;
        if (!block(timeoutMs, ready)) return -ETIMEDOUT;
      }
      if (s.rxLen > 0) return sockTake(s, n);
      if (s.err) return -s.err;
      return "";
    },
    sock_poll: (h) => {
      const s = socks.get(h);
      board.pollMessages();
      if (!s) return POLLHUP;
      let ev = 0;
      if (s.rxLen > 0 || s.eof || s.err) ev |= POLLIN;
      if (s.state === "open" && s.inFlight < SEND_WINDOW) ev |= POLLOUT;
      if (s.err) ev |= POLLERR;
      if (s.eof) ev |= POLLHUP;
      return ev;
    },
    sock_close: (h) => {
      if (socks.delete(h)) board.post({ t: "sock", op: "close", h });
    },
    stdin_any: () => { board.pollMessages(); return board.input.length; },

    // Wi-Fi station
    wlan_active: (on) => {
      if (on === 0 || on === 1) { wlan.active = !!on; if (!on) wlan.ssid = null; }
      return wlan.active;
    },
    wlan_connect: (ssid, key) => { wlan.ssid = ssid; wlan.key = key; wlan.since = now(); },
    wlan_disconnect: () => { wlan.ssid = null; },
    wlan_status: () => wlanStatus(),
    wlan_rssi: () => wifiEnv.rssi,
    wlan_ssid: () => wifiEnv.ssid ?? wlan.ssid ?? "",

    // the romfs partition (esp32.Partition)
    // Buffers pass by their address in the VM's memory: no copy, no proxy left behind.
    part_read: (offset, address, length) => partitionIo(offset, length, (fd, data) => {
      board.mp._module.HEAPU8.set(data, address);
      return 0;
    }),
    part_write: (offset, address, length) => {
      const incoming = Buffer.from(board.mp._module.HEAPU8.subarray(address, address + length));
      return partitionIo(offset, length, (fd, data) => {
        for (let i = 0; i < data.length; i++) data[i] &= incoming[i];
        fs.writeSync(fd, data, 0, data.length, offset);
        board.mp._module.HEAPU8.set(data, board.flashAddress + offset);
        return 0;
      });
    },
    part_erase: (offset, length) => {
      if (offset % PART_SECTOR || length % PART_SECTOR) return -EINVAL;
      return partitionIo(offset, length, (fd, data) => {
        fs.writeSync(fd, data.fill(0xff), 0, length, offset);
        board.mp._module.HEAPU8.set(data, board.flashAddress + offset);
        return 0;
      });
    },

    // NVS: committed to a host file, like flash
    nvs_get: (ns, key) => nvs[ns]?.[key] ?? null,
    nvs_set: (ns, key, value) => { (nvs[ns] ??= {})[key] = value; },
    nvs_erase: (ns, key) => {
      if (!(nvs[ns] && key in nvs[ns])) return false;
      delete nvs[ns][key];
      return true;
    },
    nvs_commit: () => { fs.writeFileSync(cfg.nvsPath, JSON.stringify(nvs)); },
  };

  // select.poll waits here: it returns once anything arrives (or a callback ran)
  // and poll re-checks its objects.
  exports.wait = (ms) => {
    board.safePoint();
    board.interrupted = false;
    board.pollMessages();
    fireDue();
    if (!board.interrupted && ms !== 0) {
      const timer = untilNextDeadline();
      waitEvent(ms < 0 ? timer : timer < 0 ? ms : Math.min(ms, timer));
      fireDue();
    }
  };

  const guarded = {};
  const activity = new Float64Array(shared.activity);
  const realNow = () => performance.timeOrigin + performance.now(); // Date.now is street time
  activity.set([0, realNow(), 0, NaN]); // a CPU reset inside a board call never left it
  board.post({ t: "calls", names: Object.keys(exports) });
  Object.keys(exports).forEach((name, index) => {
    const fn = exports[name];
    guarded[name] = (...args) => {
      const outer = activity[0]; // a call made from a callback this one runs
      activity[0] = index + 1;
      activity[1] = realNow();
      board.pollMessages();
      try {
        return fn(...args);
      } catch (e) {
        board.post({ t: "log", message: `_vboard.${name}: ${e?.stack ?? e}` });
        return -EINVAL;
      } finally {
        activity[0] = outer;
        activity[1] = realNow();
        activity[2] = index + 1; // the last call, for a report of Python running since
        activity[3] = typeof args[0] === "number" ? args[0] : NaN;
      }
    };
  });

  return {
    exports: guarded,
    fireDue,
    untilNextDeadline,
    softReset() {
      // What a soft reset releases on the ESP32 port: timers, IRQs, PWM, UARTs, sockets.
      timers.clear();
      pendingIrqs.length = 0;
      for (const p of pins.values()) p.irq = null;
      for (const pin of pwms.keys()) pwmReport(pin, 0, 0);
      pwms.clear();
      uarts.clear();
      for (const h of socks.keys()) board.post({ t: "sock", op: "close", h });
      socks.clear();
      nvs = readNvs();
    },
  };
}
