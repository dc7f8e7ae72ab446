// An Emscripten filesystem backed by a host directory: the board's flash.
//
// Files live on the host, so they survive soft and hard resets (each reset
// loads a fresh VM) and tests can inspect them while the board runs. stat
// reports only the file type, like littlefs on an ESP32.
import fs from "node:fs";
import path from "node:path";
import { EMSCRIPTEN_ERRNO } from "./micropython_wasm.mjs";

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const FLASH_BLOCKS = 512; // a 2 MiB filesystem partition of 4 KiB blocks
const BLOCK = 4096;

export function makeHostFS(FS) {
  const fail = (e) => {
    if (e instanceof FS.ErrnoError) throw e;
    throw new FS.ErrnoError(EMSCRIPTEN_ERRNO[e.code] ?? EMSCRIPTEN_ERRNO.EIO);
  };
  const hostPath = (node) => {
    const parts = [];
    for (; node.parent !== node; node = node.parent) parts.push(node.name);
    return path.join(node.mount.opts.root, ...parts.reverse());
  };
  const child = (parent, name) => path.join(hostPath(parent), name);
  // Permission bits stay on the node for Emscripten's access checks.
  const nodeMode = (st) => (st.isDirectory() ? S_IFDIR | 0o777 : S_IFREG | 0o666);
  const usedBlocks = (dir) => {
    let blocks = 0;
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      blocks += entry.isDirectory() ? 1 + usedBlocks(p) : Math.ceil(fs.statSync(p).size / BLOCK);
    }
    return blocks;
  };

  const HOSTFS = {
    mount(mount) {
      return HOSTFS.createNode(null, "/", S_IFDIR | 0o777, 0);
    },
    createNode(parent, name, mode, dev) {
      if (!FS.isDir(mode) && !FS.isFile(mode)) throw new FS.ErrnoError(EMSCRIPTEN_ERRNO.EINVAL);
      const node = FS.createNode(parent, name, mode, dev);
      node.node_ops = HOSTFS.node_ops;
      node.stream_ops = HOSTFS.stream_ops;
      return node;
    },
    node_ops: {
      getattr(node) {
        try {
          const st = fs.statSync(hostPath(node));
          const size = st.isDirectory() ? 0 : st.size;
          return {
            dev: 0, ino: 0, mode: st.isDirectory() ? S_IFDIR : S_IFREG, nlink: 0, uid: 0,
            gid: 0, rdev: 0, size, atime: st.mtime, mtime: st.mtime, ctime: st.mtime,
            blksize: BLOCK, blocks: Math.ceil(size / BLOCK),
          };
        } catch (e) { return fail(e); }
      },
      setattr(node, attr) {
        try {
          if (attr.size !== undefined) fs.truncateSync(hostPath(node), attr.size);
        } catch (e) { fail(e); }
      },
      lookup(parent, name) {
        try {
          return HOSTFS.createNode(parent, name, nodeMode(fs.statSync(child(parent, name))), 0);
        } catch (e) { return fail(e); }
      },
      mknod(parent, name, mode, dev) {
        try {
          if (FS.isDir(mode)) fs.mkdirSync(child(parent, name));
          else fs.closeSync(fs.openSync(child(parent, name), "a"));
          return HOSTFS.createNode(parent, name, mode, dev);
        } catch (e) { return fail(e); }
      },
      rename(node, newDir, newName) {
        try {
          fs.renameSync(hostPath(node), child(newDir, newName));
        } catch (e) { fail(e); }
        try { FS.hashRemoveNode(FS.lookupNode(newDir, newName)); } catch { /* not cached */ }
        node.name = newName;
      },
      unlink(parent, name) {
        try { fs.unlinkSync(child(parent, name)); } catch (e) { fail(e); }
      },
      rmdir(parent, name) {
        try { fs.rmdirSync(child(parent, name)); } catch (e) { fail(e); }
      },
      readdir(node) {
        try { return [".", "..", ...fs.readdirSync(hostPath(node)).sort()]; } catch (e) { return fail(e); }
      },
      statfs(root) {
        const free = Math.max(0, FLASH_BLOCKS - usedBlocks(root));
        return { bsize: BLOCK, frsize: BLOCK, blocks: FLASH_BLOCKS, bfree: free, bavail: free, namelen: 255 };
      },
    },
    stream_ops: {
      open(stream) {
        if (!FS.isFile(stream.node.mode)) return;
        // Creation and truncation were done by Emscripten through mknod and setattr.
        try { stream.hostFd = fs.openSync(hostPath(stream.node), stream.flags & (3 | fs.constants.O_APPEND)); } catch (e) { fail(e); }
      },
      close(stream) {
        if (stream.hostFd !== undefined) fs.closeSync(stream.hostFd);
      },
      read(stream, buffer, offset, length, position) {
        try { return fs.readSync(stream.hostFd, buffer, offset, length, position); } catch (e) { return fail(e); }
      },
      write(stream, buffer, offset, length, position) {
        try { return fs.writeSync(stream.hostFd, buffer, offset, length, position); } catch (e) { return fail(e); }
      },
      llseek(stream, offset, whence) {
        let position = offset;
        if (whence === 1) position += stream.position;
        else if (whence === 2 && stream.hostFd !== undefined) position += fs.fstatSync(stream.hostFd).size;
        if (position < 0) throw new FS.ErrnoError(EMSCRIPTEN_ERRNO.EINVAL);
        return position;
      },
    },
  };
  return HOSTFS;
}
