// A real redis-server (Debian's package) for the cluster suites, started by the test on a unix
// socket in a fresh temporary directory (and, with { tcp: true }, on a free 127.0.0.1 port as
// well), without persistence, and stopped by it: stop() / kill() (SIGKILL) / pause() (SIGSTOP,
// a Redis that stops answering) / resume() / restart() (same socket and port again). Only the
// process started here is ever signalled. publishRaw() sends a PUBLISH with arbitrary bytes
// over RESP, for hostile messages.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { withTimeout, sleep } from './server.mjs';

const started = new Set();
process.on('exit', () => {
  for (const r of started) {
    try {
      r.proc?.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** A free TCP port on 127.0.0.1 (bound, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export class Redis {
  static async start({ tcp = false } = {}) {
    const r = new Redis();
    r.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulsec-redis-'));
    r.socket = path.join(r.dir, 'redis.sock');
    r.port = tcp ? await freePort() : 0;
    started.add(r);
    await r._spawn();
    return r;
  }

  /** unix:// URL (every node can use it). */
  get url() {
    return `unix://${this.socket}`;
  }

  /** redis:// URL with a host name (resolved by the server off its loop). */
  get tcpUrl() {
    return `redis://localhost:${this.port}/0`;
  }

  async _spawn() {
    const args = [
      '--port', String(this.port), '--bind', '127.0.0.1',
      '--unixsocket', this.socket, '--unixsocketperm', '700',
      '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', this.dir,
      '--loglevel', 'warning',
    ];
    this.proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.log = '';
    this.proc.stdout.on('data', (d) => (this.log += d));
    this.proc.stderr.on('data', (d) => (this.log += d));
    this.exited = new Promise((resolve) => this.proc.once('exit', resolve));
    await withTimeout(
      (async () => {
        for (;;) {
          if (this.proc.exitCode !== null) throw new Error(`redis-server exited: ${this.log}`);
          if (await this.ping()) return;
          await sleep(20);
        }
      })(),
      10000,
      'redis-server answering PING',
    );
  }

  /** Sends raw RESP (a Buffer) on a fresh connection; resolves with the first reply line. */
  raw(bytes, ms = 2000) {
    return new Promise((resolve) => {
      const c = net.connect(this.socket);
      let out = Buffer.alloc(0);
      const done = (v) => {
        clearTimeout(t);
        c.destroy();
        resolve(v);
      };
      const t = setTimeout(() => done(null), ms);
      c.on('error', () => done(null));
      c.on('connect', () => c.write(bytes));
      c.on('data', (d) => {
        out = Buffer.concat([out, d]);
        if (out.includes('\r\n')) done(out.toString('latin1'));
      });
    });
  }

  async ping() {
    if (!fs.existsSync(this.socket)) return false;
    return (await this.raw(Buffer.from('PING\r\n'), 500)) === '+PONG\r\n';
  }

  /** PUBLISH channel message, both arbitrary bytes; resolves with the receiver count. */
  async publishRaw(channel, message) {
    const c = Buffer.from(channel);
    const m = Buffer.isBuffer(message) ? message : Buffer.from(message);
    const cmd = Buffer.concat([
      Buffer.from(`*3\r\n$7\r\nPUBLISH\r\n$${c.length}\r\n`), c,
      Buffer.from(`\r\n$${m.length}\r\n`), m, Buffer.from('\r\n'),
    ]);
    const reply = await this.raw(cmd);
    return reply && reply.startsWith(':') ? Number(reply.slice(1)) : -1;
  }

  /** Clients currently subscribed to `channel` (PUBSUB NUMSUB). */
  async numsub(channel) {
    const c = Buffer.from(channel);
    const reply = await new Promise((resolve) => {
      const s = net.connect(this.socket);
      let out = '';
      s.on('error', () => resolve(null));
      s.on('connect', () => s.write(Buffer.concat([Buffer.from(`*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n$${c.length}\r\n`), c, Buffer.from('\r\n')])));
      s.on('data', (d) => {
        out += d;
        const m = /:(\d+)\r\n$/.exec(out);
        if (m) {
          s.destroy();
          resolve(Number(m[1]));
        }
      });
    });
    return reply;
  }

  kill() {
    this.proc.kill('SIGKILL');
    return this.exited;
  }

  pause() {
    this.proc.kill('SIGSTOP');
  }

  resume() {
    this.proc.kill('SIGCONT');
  }

  /** Starts it again on the same socket and port (after kill()). */
  async restart() {
    await this.exited;
    await this._spawn();
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGCONT');
      this.proc.kill('SIGTERM');
      await this.exited;
    }
    started.delete(this);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
