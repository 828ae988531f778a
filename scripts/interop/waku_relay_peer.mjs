// A js-waku relay peer for the live Waku framing test of sds-libp2p: libp2p over TCP (noise,
// yamux) with js-waku's relay (@waku/relay's gossipsub set-up: /vac/waku/relay/2.0.0, unsigned,
// SHA-256 message ids, its message validator). It relays between whoever connects, and reports.
// Usage: node waku_relay_peer.mjs PUBSUB_TOPIC CONTENT_TOPIC
// Prints `listening MULTIADDR`, then `peer PEER_ID` per connection and `recv PAYLOAD_HEX` per
// WakuMessage received on CONTENT_TOPIC. Reads `send PAYLOAD_HEX` lines and publishes them;
// exits when its input ends.
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { tcp } from "@libp2p/tcp";
import { createDecoder, createEncoder } from "@waku/core";
import { wakuGossipSub, wakuRelay } from "@waku/relay";
import { createLibp2p } from "libp2p";
import readline from "node:readline";

// Some of libp2p's helpers call Promise.withResolvers, which node has only from version 22.
Promise.withResolvers ??= function () {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
};

const [pubsubTopic, contentTopic] = process.argv.slice(2);
const hex = (b) => Buffer.from(b).toString("hex");

const libp2p = await createLibp2p({
  addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
  transports: [tcp()],
  connectionEncryption: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    pubsub: wakuGossipSub({ allowPublishToZeroTopicPeers: true }),
  },
});
const relay = wakuRelay([pubsubTopic])(libp2p);
libp2p.addEventListener("peer:connect", (e) => console.log(`peer ${e.detail.toString()}`));
relay.subscribe([createDecoder(contentTopic, pubsubTopic)], (m) => {
  console.log(`recv ${hex(m.payload)}`);
});
console.log(`listening ${libp2p.getMultiaddrs()[0].toString()}`);

const encoder = createEncoder({ contentTopic, pubsubTopic });
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const [op, arg] = line.trim().split(" ");
  if (op === "send") {
    const result = await relay.send(encoder, { payload: new Uint8Array(Buffer.from(arg, "hex")) });
    const mesh = relay.gossipSub.getMeshPeers(pubsubTopic).length;
    const subscribers = relay.gossipSub.getSubscribers(pubsubTopic).length;
    console.log(`sent ${result.successes.length} ${result.failures.length} mesh ${mesh} subscribers ${subscribers}`);
  }
}
await libp2p.stop();
