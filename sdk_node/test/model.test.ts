// The tests that call the model. tests/e2e/test_node_sdk.py scripts the model's answers in this
// order (tests in a file run one after another): keep MODEL_REPLIES there in step with this file.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { ExecutionStatus, fromValue, TransitionType } from "../src/index.js";
import { connect } from "./support.js";

const client = connect();
after(() => client.close());

const storyYaml = `
name: Story
description: Writes a story about an idea.
main:
  - prompt:
      - role: system
        content: You are {{agent.name}}. {{agent.about}}
      - role: user
        content: Write a one-line story about {{_.idea}}.
    unwrap: true
  - return:
      story: $ _
      idea: $ inputs[0].idea
`;

describe("with the model", () => {
  test("a chat turn in a session", async () => {
    const agent = await client.agents.createAgent({
      agent: { name: "Chatty", model: "gpt-4o-mini", about: "Answers briefly." },
    });
    const session = await client.sessions.createSession({ session: { agent: agent.id } });
    assert.deepEqual(session.agents, [agent.id]);

    const response = await client.chat.chat({
      sessionId: session.id,
      messages: [{ role: "user", content: "Hello there" }],
    });
    assert.equal(response.sessionId, session.id);
    assert.equal(response.choices[0]?.message?.role, "assistant");
    assert.equal(response.choices[0]?.message?.content, "Hello from the scripted model");

    const history = await client.sessions.listEntries({ sessionId: session.id });
    assert.deepEqual(
      history.entries.map((e) => [e.message?.role, e.message?.content]),
      [
        ["user", "Hello there"],
        ["assistant", "Hello from the scripted model"],
      ],
    );
  });

  test("a prompt step in a task", async () => {
    const agent = await client.agents.createAgent({
      agent: { name: "Storytelling Agent", model: "gpt-4o-mini", about: "Tells stories." },
    });
    const task = await client.tasks.createTask({ agentId: agent.id, task: { yaml: storyYaml } });
    const execution = await client.executions.createExecution({
      taskId: task.id,
      execution: { input: { idea: "A cat who learns to fly" } },
    });
    const stepTypes: string[] = [];
    const done = await client.executions.waitFor(execution.id, {
      onTransition: (t) => {
        if (t.type === TransitionType.STEP) {
          stepTypes.push(t.stepType);
        }
      },
      timeoutMs: 60_000,
    });
    assert.equal(done.status, ExecutionStatus.SUCCEEDED, done.error);
    assert.deepEqual(fromValue(done.output), {
      story: "Whiskers flapped twice and soared over the rooftops.",
      idea: "A cat who learns to fly",
    });
    assert.equal(stepTypes[0], "prompt");
  });
});
