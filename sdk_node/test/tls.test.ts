// TLS: the e2e wrapper also starts a server whose gRPC port speaks only TLS (MINTLEAF_TLS_TARGET,
// with its self-signed certificate in MINTLEAF_CA_FILE).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Code, Mintleaf, MintleafError } from "../src/index.js";
import { apiKey } from "./support.js";

const tlsTarget = process.env["MINTLEAF_TLS_TARGET"] ?? "";
const caFile = process.env["MINTLEAF_CA_FILE"] ?? "";
const tlsKey = process.env["MINTLEAF_TLS_API_KEY"] ?? apiKey;

test("a client trusting the server's CA is served over TLS", async () => {
  assert.ok(tlsTarget && caFile, "MINTLEAF_TLS_TARGET and MINTLEAF_CA_FILE must be set");
  const client = new Mintleaf({ target: tlsTarget, apiKey: tlsKey, ca: readFileSync(caFile) });
  try {
    const agent = await client.agents.createAgent({ agent: { name: "over tls" } });
    const got = await client.agents.getAgent({ id: agent.id });
    assert.equal(got.name, "over tls");
    assert.ok(client.baseUrl.startsWith("https://"));
  } finally {
    client.close();
  }
});

test("a plaintext client of a TLS server is refused", async () => {
  const client = new Mintleaf({ target: tlsTarget, apiKey: tlsKey, timeoutMs: 5000 });
  try {
    await assert.rejects(client.agents.listAgents({}), (err: unknown) => {
      assert.ok(err instanceof MintleafError, String(err));
      // The TLS port drops the cleartext HTTP/2 connection: connect-node reports it as
      // UNAVAILABLE or CANCELED depending on when the drop lands.
      assert.ok([Code.Unavailable, Code.Canceled, Code.Internal].includes(err.code), err.codeName);
      return true;
    });
  } finally {
    client.close();
  }
});
