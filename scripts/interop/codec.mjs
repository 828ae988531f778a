// Live codec interop with @waku/sds: reads JSON requests (one per line) on stdin and answers
// each with one JSON line on stdout.
//   {"op":"decode","hex":H}          -> {"decoded":OBJ|null,"reencoded":H|null} or {"error":TEXT}
//   {"op":"generate","count":N,"channel":C,"seed":S} -> N + C lines {"hex":H,"decoded":OBJ}: N random
//       messages built with Message, then C messages sent by a real MessageChannel
// OBJ has the form of messages.json: class, senderId, messageId, channelId, lamportTimestamp
// (decimal string|null), causalHistory, repairRequest, content (hex|null), bloomFilter (hex|null).
import { createInterface } from "node:readline";
import { Message, MessageChannel } from "@waku/sds";

const hex = (b) => (b === undefined ? null : Buffer.from(b).toString("hex"));
const entry = (e) => {
  const o = { messageId: e.messageId ?? "" };
  if (e.retrievalHint !== undefined) o.retrievalHint = hex(e.retrievalHint);
  if (e.senderId !== undefined) o.senderId = e.senderId;
  return o;
};
const toObj = (m) => ({
  class: m === undefined ? null : m.constructor.name,
  senderId: m.senderId,
  messageId: m.messageId,
  channelId: m.channelId,
  lamportTimestamp: m.lamportTimestamp === undefined ? null : m.lamportTimestamp.toString(),
  causalHistory: m.causalHistory.map(entry),
  repairRequest: (m.repairRequest ?? []).map(entry),
  content: hex(m.content),
  bloomFilter: hex(m.bloomFilter),
});

function rng(seed) {
  let s = BigInt(seed) & 0xffffffffffffffffn;
  return () => {
    s = (s + 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
    let z = s;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
    return z ^ (z >> 31n);
  };
}

function* generate(count, seed) {
  const next = rng(seed);
  const int = (n) => Number(next() % BigInt(n));
  const alphabet = ["a", "b", "z", "0", "-", "é", "✓", "参"];
  const str = (max) => Array.from({ length: int(max + 1) }, () => alphabet[int(alphabet.length)]).join("");
  const bytes = (max) => Uint8Array.from({ length: int(max + 1) }, () => int(256));
  const entries = (max) =>
    Array.from({ length: int(max + 1) }, () => {
      const e = { messageId: str(12) };
      if (int(2)) e.retrievalHint = bytes(8);
      if (int(2)) e.senderId = str(6);
      return e;
    });
  for (let i = 0; i < count; i++) {
    const m = new Message(
      str(16), str(8), str(8), entries(3),
      int(3) ? next() : undefined,
      int(2) ? bytes(24) : undefined,
      int(4) ? bytes(32) : undefined,
      entries(2),
    );
    const encoded = m.encode();
    const decoded = Message.decode(encoded);
    // Bytes that are no SDS message (no lamport, no content) decode to undefined: report the
    // fields that were encoded, with class null.
    yield { hex: hex(encoded), decoded: decoded ? toObj(decoded) : { ...toObj(m), class: null } };
  }
}

async function channelMessages(count) {
  const channel = new MessageChannel("live-channel", "alice");
  const out = [];
  for (let i = 0; i < count; i++) {
    const payload = new TextEncoder().encode(`payload-${i}`);
    channel.pushOutgoingMessage(payload, async (m) => {
      const encoded = m.encode();
      out.push({ hex: hex(encoded), decoded: toObj(Message.decode(encoded)) });
      return { success: true, retrievalHint: Uint8Array.from([i, i, i]) };
    });
    await channel.processTasks();
  }
  return out;
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  if (req.op === "decode") {
    try {
      const m = Message.decode(Buffer.from(req.hex, "hex"));
      console.log(JSON.stringify(m === undefined
        ? { decoded: null, reencoded: null }
        : { decoded: toObj(m), reencoded: hex(m.encode()) }));
    } catch (e) {
      console.log(JSON.stringify({ error: String(e) }));
    }
  } else if (req.op === "generate") {
    for (const item of generate(req.count, req.seed)) console.log(JSON.stringify(item));
    for (const item of await channelMessages(req.channel ?? 0)) console.log(JSON.stringify(item));
  } else {
    console.log(JSON.stringify({ error: `unknown op ${req.op}` }));
  }
}
