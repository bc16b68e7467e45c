/** Test helper: reads a Server-Sent Events response as it arrives. */

/** One SSE message. */
export interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

/**
 * Yields each message of an SSE body as soon as its blank line arrives;
 * returns when the server closes the stream.
 */
export async function* sseMessages(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const msg: SseMessage = { event: "message", data: "" };
        const data: string[] = [];
        for (const line of block.split("\n")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") msg.event = val;
          else if (field === "data") data.push(val);
          else if (field === "id") msg.id = val;
        }
        msg.data = data.join("\n");
        yield msg;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
