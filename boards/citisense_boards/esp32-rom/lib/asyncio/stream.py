# mypy: ignore-errors
# Streams over anything with read/write and poll support: sockets and UARTs.
from . import core


class Stream:
    def __init__(self, s, e=None):
        self.s = s
        self.e = e or {}
        self.out_buf = b""

    def get_extra_info(self, v):
        return self.e[v]

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.close()

    def close(self):
        pass

    async def wait_closed(self):
        self.s.close()

    async def read(self, n=-1):
        data = b""
        while True:
            core._io_queue.queue_read(self.s)
            await core._suspend
            chunk = self.s.read(n)
            if chunk is None:
                continue
            if n >= 0 or not chunk:
                return chunk if n >= 0 else data
            data += chunk

    async def readinto(self, buf):
        core._io_queue.queue_read(self.s)
        await core._suspend
        return self.s.readinto(buf)

    async def readexactly(self, n):
        data = b""
        while n:
            core._io_queue.queue_read(self.s)
            await core._suspend
            chunk = self.s.read(n)
            if chunk is None:
                continue
            if not chunk:
                raise EOFError
            data += chunk
            n -= len(chunk)
        return data

    async def readline(self):
        line = b""
        while True:
            core._io_queue.queue_read(self.s)
            await core._suspend
            part = self.s.readline()
            if part is None:
                continue
            line += part
            if not part or line[-1] == 10:
                return line

    def write(self, buf):
        if not self.out_buf:
            # Write what the stream takes now; drain() sends the rest.
            sent = self.s.write(buf)
            if sent == len(buf):
                return
            if sent is not None:
                buf = buf[sent:]
        self.out_buf += buf

    async def drain(self):
        if not self.out_buf:
            return await core.sleep_ms(0)
        view = memoryview(self.out_buf)
        offset = 0
        while offset < len(view):
            core._io_queue.queue_write(self.s)
            await core._suspend
            sent = self.s.write(view[offset:])
            if sent is not None:
                offset += sent
        self.out_buf = b""


StreamReader = Stream
StreamWriter = Stream


async def open_connection(host, port, ssl=None, server_hostname=None):
    import socket
    from errno import EINPROGRESS

    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as er:
        if er.errno != EINPROGRESS:
            raise er
    core._io_queue.queue_write(s)
    await core._suspend
    stream = Stream(s)
    return stream, stream
