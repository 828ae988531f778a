// Encodes and decodes WakuMessage envelopes with js-waku (@waku/core, @waku/proto), for the
// Waku framing test of sds-libp2p. One request per input line, one answer line per request:
//   encoder PAYLOAD_HEX CONTENT_TOPIC TIMESTAMP_MS  -> hex of @waku/core's encoder output
//   proto PAYLOAD_HEX CONTENT_TOPIC TIMESTAMP_NS META_HEX|-  -> hex of @waku/proto's encoding
//   decode HEX  -> PAYLOAD_HEX CONTENT_TOPIC VERSION TIMESTAMP_NS EPHEMERAL
import { createDecoder, createEncoder } from "@waku/core";
import { proto_message } from "@waku/proto";
import { createRoutingInfo } from "@waku/utils";
import readline from "node:readline";

const routingInfo = createRoutingInfo({ clusterId: 0 }, { shardId: 0 });
const hex = (b) => Buffer.from(b).toString("hex");
const bytes = (h) => new Uint8Array(Buffer.from(h, "hex"));

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const [op, ...args] = line.trim().split(" ");
  if (op === "encoder") {
    const [payload, contentTopic, ms] = args;
    const encoder = createEncoder({ contentTopic, routingInfo });
    const wire = await encoder.toWire({ payload: bytes(payload), timestamp: new Date(Number(ms)) });
    console.log(`${hex(wire)} ${encoder.pubsubTopic}`);
  } else if (op === "proto") {
    const [payload, contentTopic, ns, meta] = args;
    const wire = proto_message.WakuMessage.encode({
      payload: bytes(payload),
      contentTopic,
      version: 0,
      timestamp: BigInt(ns),
      meta: meta === "-" ? undefined : bytes(meta),
      ephemeral: false,
    });
    console.log(hex(wire));
  } else if (op === "decode") {
    const wire = bytes(args[0]);
    const raw = proto_message.WakuMessage.decode(wire);
    const decoder = createDecoder(raw.contentTopic, routingInfo);
    const m = await decoder.fromProtoObj(routingInfo.pubsubTopic, await decoder.fromWireToProtoObj(wire));
    console.log(
      [hex(m.payload), m.contentTopic, m.version, raw.timestamp.toString(), m.ephemeral].join(" ")
    );
  } else {
    console.log(`error unknown request ${op}`);
  }
}
