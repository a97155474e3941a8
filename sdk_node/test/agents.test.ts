import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import {
  AgentSchema,
  Code,
  ConnectError,
  create,
  fromValue,
  MintleafError,
  Mintleaf,
  StructSchema,
  toJson,
  toValue,
  ValueSchema,
  fromJson,
  type Agent,
} from "../src/index.js";
import { connect, runTag, target } from "./support.js";

const client = connect();
after(() => client.close());

/** Runs `call`, asserting it rejects with a MintleafError of `code`; returns the error. */
async function rejection(call: () => Promise<unknown>, code: Code): Promise<MintleafError> {
  try {
    await call();
  } catch (err) {
    assert.ok(err instanceof MintleafError, `expected a MintleafError, got ${String(err)}`);
    assert.ok(err instanceof ConnectError, "a MintleafError is a ConnectError");
    assert.equal(err.code, code, `expected ${Code[code]}, got ${err.codeName}: ${err.rawMessage}`);
    return err;
  }
  assert.fail(`expected ${Code[code]}, the call succeeded`);
}

describe("agents", () => {
  test("create, get, update with a field mask, delete", async () => {
    const created = await client.agents.createAgent({
      agent: {
        name: "Storytelling Agent",
        model: "gpt-4o-mini",
        about: "Crafts engaging stories.",
        instructions: ["be brief", "be kind"],
        defaultSettings: { temperature: 0.5 },
        metadata: { team: "docs", tier: 2 },
      },
    });
    assert.match(created.id, /^[0-9a-f-]{36}$/);
    assert.ok(created.createdAt !== undefined);

    const got = await client.agents.getAgent({ id: created.id });
    assert.equal(got.name, "Storytelling Agent");
    assert.deepEqual(got.instructions, ["be brief", "be kind"]);
    assert.deepEqual(got.defaultSettings, { temperature: 0.5 });
    assert.deepEqual(got.metadata, { team: "docs", tier: 2 });

    // Only `about` is in the mask: the other fields sent are ignored.
    const updated = await client.agents.updateAgent({
      agent: { id: created.id, about: "Writes comics too.", model: "ignored" },
      updateMask: { paths: ["about"] },
    });
    assert.equal(updated.about, "Writes comics too.");
    assert.equal(updated.model, "gpt-4o-mini");
    assert.equal(updated.name, "Storytelling Agent");

    await client.agents.deleteAgent({ id: created.id });
    const gone = await rejection(() => client.agents.getAgent({ id: created.id }), Code.NotFound);
    assert.equal(gone.reason, "AGENT_NOT_FOUND");
  });

  test("list pages through every agent in creation order", async () => {
    const tag = runTag();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await client.agents.createAgent({ agent: { name: `a${i}`, metadata: { run: tag, i } } })).id);
    }
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await client.agents.listAgents({ pageSize: 2, pageToken, metadataFilter: { run: tag } });
      assert.ok(page.agents.length <= 2);
      seen.push(...page.agents.map((a: Agent) => a.id));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "");
    assert.deepEqual(seen, ids);
    assert.equal(pages, 3);
  });

  test("a bad field is INVALID_ARGUMENT naming the field", async () => {
    const err = await rejection(
      () => client.agents.createAgent({ agent: { name: "ok", canonicalName: "9bad" } }),
      Code.InvalidArgument,
    );
    assert.equal(err.reason, "INVALID_ARGUMENT");
    assert.ok(err.violation("agent.canonical_name"), JSON.stringify(err.violations));
    assert.equal(err.codeName, "InvalidArgument");

    const empty = await rejection(() => client.agents.createAgent({ agent: { name: "" } }), Code.InvalidArgument);
    assert.deepEqual(
      empty.violations.map((v) => v.field),
      ["agent.name"],
    );
  });

  test("a missing or wrong API key is UNAUTHENTICATED", async () => {
    for (const apiKey of ["", "ml_not_a_real_key"]) {
      const anonymous = new Mintleaf({ target, apiKey });
      try {
        const err = await rejection(() => anonymous.agents.listAgents({}), Code.Unauthenticated);
        assert.ok(err.reason !== "", "every error carries an ErrorInfo reason");
      } finally {
        anonymous.close();
      }
    }
  });

  test("errors of a stream are MintleafErrors too", async () => {
    await rejection(async () => {
      for await (const _ of client.executions.streamTransitions({ executionId: "not-a-uuid" })) {
        assert.fail("no transition expected");
      }
    }, Code.InvalidArgument);
  });
});

describe("Struct and Value", () => {
  const nested = {
    s: "text",
    n: 1.5,
    i: -3,
    b: true,
    z: null,
    list: [1, "two", false, null, { deep: ["x"] }],
    obj: { empty: {}, none: [] },
  };

  test("a JS object stored in a Struct field comes back the same", async () => {
    const agent = await client.agents.createAgent({ agent: { name: "structs", metadata: nested } });
    assert.deepEqual(agent.metadata, nested);
    assert.deepEqual((await client.agents.getAgent({ id: agent.id })).metadata, nested);
  });

  test("toValue and fromValue are inverse and canonical", () => {
    for (const value of [nested, [1, 2], "s", 0, true, null]) {
      const v = toValue(value);
      assert.deepEqual(fromValue(v), value);
      assert.deepEqual(toJson(ValueSchema, v), value);
      assert.deepEqual(toJson(ValueSchema, fromJson(ValueSchema, value)), value);
    }
    assert.equal(fromValue(undefined), undefined);
    assert.deepEqual(toValue(3).kind, { case: "numberValue", value: 3 });
    const struct = create(StructSchema, { fields: { a: toValue("b") } });
    assert.deepEqual(toJson(StructSchema, struct), { a: "b" });
    assert.deepEqual(toJson(AgentSchema, create(AgentSchema, { name: "x", metadata: { k: [1] } })), {
      name: "x",
      metadata: { k: [1] },
    });
  });
});
