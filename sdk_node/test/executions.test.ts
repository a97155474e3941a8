import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { Code, ExecutionStatus, fromValue, MintleafError, toValue, TransitionType, type Transition } from "../src/index.js";
import { connect } from "./support.js";

const client = connect();
after(() => client.close());

const sumsYaml = `
name: Sums
description: Adds the numbers it is given, then doubles the total.
input_schema:
  type: object
  required: [numbers]
main:
  - evaluate:
      total: $ sum(_.numbers)
  - evaluate:
      doubled: $ _.total * 2
  - return:
      total: $ outputs[0].total
      doubled: $ _.doubled
      who: $ inputs[0].who
`;

const askYaml = `
name: Ask
main:
  - wait_for_input:
      info: {question: "$ 'Name for ' + _.thing + '?'"}
  - return:
      answer: $ _.name
`;

describe("tasks and executions", () => {
  test("a task from YAML runs to its output, transitions streamed to the end", async () => {
    const agent = await client.agents.createAgent({ agent: { name: "Runner" } });
    const task = await client.tasks.createTask({ agentId: agent.id, task: { yaml: sumsYaml } });
    assert.equal(task.name, "Sums");
    assert.equal(task.version, 1);

    const execution = await client.executions.createExecution({
      taskId: task.id,
      execution: { input: { numbers: [1, 2, 3.5], who: "Ada" } },
    });

    // The seed's loop: every transition, replayed then live, until the execution ends.
    const streamed: Transition[] = [];
    for await (const transition of client.executions.streamTransitions({ executionId: execution.id })) {
      streamed.push(transition);
    }
    assert.deepEqual(
      streamed.map((t) => t.sequence),
      streamed.map((_, i) => BigInt(i + 1)),
    );
    assert.equal(streamed[0]?.type, TransitionType.INIT);
    assert.equal(streamed.at(-1)?.type, TransitionType.FINISH);
    const steps = streamed.filter((t) => t.type === TransitionType.STEP).map((t) => t.stepType);
    assert.deepEqual(steps.slice(0, 2), ["evaluate", "evaluate"]);

    const done = await client.executions.getExecution({ id: execution.id });
    assert.equal(done.status, ExecutionStatus.SUCCEEDED, done.error);
    assert.deepEqual(fromValue(done.output), { total: 6.5, doubled: 13, who: "Ada" });
    assert.equal(done.transitionCount, BigInt(streamed.length));

    // waitFor on an ended execution replays it and returns the same result.
    const seen: bigint[] = [];
    const again = await client.executions.waitFor(execution.id, { onTransition: (t) => void seen.push(t.sequence) });
    assert.equal(again.status, ExecutionStatus.SUCCEEDED);
    assert.deepEqual(fromValue(again.output), fromValue(done.output));
    assert.equal(seen.length, streamed.length);
  });

  test("input not matching the input schema is INVALID_ARGUMENT", async () => {
    const agent = await client.agents.createAgent({ agent: { name: "Runner" } });
    const task = await client.tasks.createTask({ agentId: agent.id, task: { yaml: sumsYaml } });
    await assert.rejects(
      client.executions.createExecution({ taskId: task.id, execution: { input: { who: "nobody" } } }),
      (err: unknown) => err instanceof MintleafError && err.code === Code.InvalidArgument && err.reason !== "",
    );
  });

  test("wait_for_input pauses the execution until ResumeExecution", async () => {
    const agent = await client.agents.createAgent({ agent: { name: "Asker" } });
    const task = await client.tasks.createTask({ agentId: agent.id, task: { yaml: askYaml } });
    const execution = await client.executions.createExecution({
      taskId: task.id,
      execution: { input: { thing: "cat" } },
    });

    const waiting = await client.executions.waitFor(execution.id, { untilAwaitingInput: true, timeoutMs: 30_000 });
    assert.equal(waiting.status, ExecutionStatus.AWAITING_INPUT, waiting.error);
    assert.equal(waiting.waits.length, 1);
    const wait = waiting.waits[0]!;
    assert.equal(wait.kind, "wait_for_input");
    assert.deepEqual(fromValue(wait.info), { question: "Name for cat?" });

    await client.executions.resumeExecution({ id: execution.id, waitId: wait.id, input: toValue({ name: "Tom" }) });

    const types: TransitionType[] = [];
    const done = await client.executions.waitFor(execution.id, {
      onTransition: (t) => void types.push(t.type),
      timeoutMs: 30_000,
    });
    assert.equal(done.status, ExecutionStatus.SUCCEEDED, done.error);
    assert.deepEqual(fromValue(done.output), { answer: "Tom" });
    assert.ok(types.includes(TransitionType.WAIT) && types.includes(TransitionType.RESUME), String(types));
    assert.equal(types.at(-1), TransitionType.FINISH);
  });
});
