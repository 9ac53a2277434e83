/**
 * Preloaded into a benchmark process (`node --import` this file) by `PROFILE_ALLOCATIONS=1 npm run
 * profile`: samples what the process allocates, garbage included (V8's sampling heap profiler with the
 * objects minor and major collections took kept in the profile; node's --heap-prof keeps only what is
 * still alive at exit), from SAMPLE_ALLOCATIONS_START_MS after start for SAMPLE_ALLOCATIONS_MS, and
 * counts the HTTP requests that process began in that window (diagnostics_channel), so the profile reads
 * as bytes per request. Writes { profile, requests } as JSON to SAMPLE_ALLOCATIONS_OUT.
 */
import { subscribe } from 'node:diagnostics_channel';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const out = process.env.SAMPLE_ALLOCATIONS_OUT;
if (out !== undefined) {
  const startMs = Number(process.env.SAMPLE_ALLOCATIONS_START_MS ?? 8000);
  const lengthMs = Number(process.env.SAMPLE_ALLOCATIONS_MS ?? 10000);
  const session = new Session();
  session.connect();
  const post = (method, params = {}) => new Promise((resolve, reject) => session.post(method, params, (error, result) => (error ? reject(error) : resolve(result))));
  let sampling = false;
  let requests = 0;
  subscribe('http.server.request.start', function countRequest() {
    if (sampling) requests++;
  });
  setTimeout(async function startSampling() {
    await post('HeapProfiler.enable');
    // One sample per 1 KiB allocated on average: a few thousand samples per second at these rates.
    await post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    sampling = true;
    setTimeout(async function stopSampling() {
      sampling = false;
      const { profile } = await post('HeapProfiler.stopSampling');
      writeFileSync(out, JSON.stringify({ profile, requests }));
    }, lengthMs).unref();
  }, startMs).unref();
}
