// Live exchange between a real @waku/sds MessageChannel ("alice") and `sds peer --profile spec`
// ("bob") through pipes. Usage: node exchange.mjs PATH_TO_SDS
// Prints one JSON object with what each side observed; the Rust test asserts on it.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { Message, MessageChannel, MessageChannelEvent } from "@waku/sds";

const hex = (b) => Buffer.from(b).toString("hex");
const peer = spawn(process.argv[2], [
  "peer", "--participant", "bob", "--profile", "spec", "--store", "none",
  "--repair-t-min", "0", "--repair-t-max", "1",
], { stdio: ["pipe", "pipe", "inherit"] });
const lines = createInterface({ input: peer.stdout })[Symbol.asyncIterator]();
async function bob(command) {
  peer.stdin.write(command + "\n");
  const { value } = await lines.next();
  const reply = JSON.parse(value);
  if (!reply.ok) throw new Error(`${command}: ${reply.error}`);
  return reply;
}
const bobEvents = (reply, kind) => reply.events.filter((e) => e.event === kind).map((e) => e.messageId);

const alice = new MessageChannel("live", "alice", { enableRepair: true });
const seen = { delivered: [], acknowledged: [] };
alice.addEventListener(MessageChannelEvent.InMessageDelivered, (e) => seen.delivered.push(e.detail));
alice.addEventListener(MessageChannelEvent.OutMessageAcknowledged, (e) => seen.acknowledged.push(e.detail));

async function aliceSends(text) {
  let wire;
  alice.pushOutgoingMessage(new TextEncoder().encode(text), async (m) => {
    wire = m.encode();
    return { success: true };
  });
  await alice.processTasks();
  return { id: MessageChannel.getMessageId(new TextEncoder().encode(text)), wire };
}
async function aliceReceives(hexBytes) {
  const m = Message.decode(Buffer.from(hexBytes, "hex"));
  if (!m) throw new Error("alice cannot decode bob's message");
  alice.pushIncomingMessage(m, undefined);
  await alice.processTasks();
}

const out = {};
// 1. alice -> bob, out of order: a3 first, then a1, a2.
const a = [];
for (const t of ["a1", "a2", "a3"]) a.push(await aliceSends(t));
out.aliceIds = a.map((x) => x.id);
const r3 = await bob(`unwrap ${hex(a[2].wire)}`);
out.firstKind = r3.kind;
out.firstMissing = r3.missingDeps.map((d) => d.messageId);
const bobReady = [];
for (const x of [a[0], a[1]]) bobReady.push(...bobEvents(await bob(`unwrap ${hex(x.wire)}`), "messageReady"));
out.bobDelivered = bobReady;

// 2. bob -> alice: b1 cites a1..a3, so alice's messages are acknowledged; alice delivers b1.
const b1 = await bob(`wrap live b1 ${hex(new TextEncoder().encode("from bob"))}`);
await aliceReceives(b1.bytes);
out.aliceDelivered = [...seen.delivered];
out.aliceAcknowledged = [...seen.acknowledged];

// 3. alice's next message cites b1: bob's message is acknowledged.
const a4 = await aliceSends("a4");
out.bobAcknowledged = bobEvents(await bob(`unwrap ${hex(a4.wire)}`), "messageSent");

// 4. Repair: bob never gets a5; a6 cites it; bob asks with its next message and alice, the
//    original sender, rebroadcasts a5 at once.
const a5 = await aliceSends("a5");
const a6 = await aliceSends("a6");
const r6 = await bob(`unwrap ${hex(a6.wire)}`);
out.a5 = a5.id;
out.bobMissing = r6.missingDeps.map((d) => d.messageId);
const b2 = await bob(`wrap live b2 ${hex(new TextEncoder().encode("bob again"))}`);
await aliceReceives(b2.bytes);
const rebroadcast = [];
await alice.sweepRepairIncomingBuffer(async (m) => {
  rebroadcast.push(hex(m.encode()));
  return true;
});
out.rebroadcastCount = rebroadcast.length;
const afterRepair = [];
for (const w of rebroadcast) afterRepair.push(...bobEvents(await bob(`unwrap ${w}`), "messageReady"));
out.bobDeliveredAfterRepair = afterRepair;
out.bobHistory = (await bob("history live")).history;

peer.stdin.write("quit\n");
peer.stdin.end();
console.log(JSON.stringify(out));
