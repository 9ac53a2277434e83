/**
 * nginx as the reference proxy: one worker, proxy_pass with header injection, upstream keepalive,
 * access log on (buffered: an audit trail of sorts, as Airlock writes one). Response buffering is off
 * because a proxy for LLM APIs must pass server-sent events through as they arrive (Airlock streams
 * too). Returns null, with the reason, when nginx is not installed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, waitForPort } from './wait-for-port.js';

export interface Nginx {
  readonly url: string;
  readonly pid: number;
  stop(): Promise<void>;
}

export async function startNginx(dir: string, upstreamPort: number): Promise<Nginx | string> {
  const binary = ['/usr/sbin/nginx', 'nginx'].find((candidate) => spawnSync(candidate, ['-v']).error === undefined);
  if (binary === undefined) return 'nginx is not installed (apt-get install -y nginx): the nginx row is skipped';
  const port = await freePort();
  mkdirSync(join(dir, 'temp'), { recursive: true });
  const runAsRoot = process.getuid?.() === 0 ? 'user root;' : '';
  const conf = `
${runAsRoot}
worker_processes 1;
daemon off;
master_process on;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 8192; }
http {
  access_log ${join(dir, 'access.log')} combined buffer=64k flush=1s;
  client_body_temp_path ${join(dir, 'temp')};
  proxy_temp_path ${join(dir, 'temp')};
  fastcgi_temp_path ${join(dir, 'temp')};
  uwsgi_temp_path ${join(dir, 'temp')};
  scgi_temp_path ${join(dir, 'temp')};
  keepalive_requests 1000000;
  upstream bench_upstream {
    server 127.0.0.1:${upstreamPort};
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer nginx-injected-key";
      proxy_buffering off;
    }
  }
}
`;
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  const child: ChildProcess = spawn(binary, ['-p', dir, '-c', file, '-e', join(dir, 'error.log')], { stdio: 'ignore' });
  await waitForPort(port, 'nginx');
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid as number,
    async stop() {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGQUIT');
      await exited;
    },
  };
}
