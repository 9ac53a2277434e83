/**
 * Feeds `input` to a streaming transformer (the redactors, the SSE layer) in the pieces `cuts` marks
 * (each taken modulo the input's length, deduplicated, in order), then ends it: what a client would
 * receive, for the property tests that compare any chunking with one pass over the whole.
 */
export interface ChunkedStream {
  push(chunk: Buffer): Buffer;
  end(): Buffer;
}

export function pushInChunks(stream: ChunkedStream, input: Buffer, cuts: readonly number[]): Buffer {
  const out: Buffer[] = [];
  let previous = 0;
  for (const cut of [...new Set(cuts.map((c) => c % (input.length + 1)))].sort((a, b) => a - b)) {
    out.push(stream.push(input.subarray(previous, cut)));
    previous = cut;
  }
  out.push(stream.push(input.subarray(previous)), stream.end());
  return Buffer.concat(out);
}
