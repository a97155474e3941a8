// The README's quick start, type-checked with the SDK (npm run build). Run it against a server:
//   MINTLEAF_TARGET=127.0.0.1:50051 MINTLEAF_API_KEY=ml_... node --import tsx examples/quickstart.ts
import { Mintleaf, ExecutionStatus, fromValue } from "../src/index.js";

const client = new Mintleaf({ target: process.env["MINTLEAF_TARGET"] ?? "127.0.0.1:50051", apiKey: process.env["MINTLEAF_API_KEY"] ?? "" });

// Step 1: an agent
const agent = await client.agents.createAgent({
  agent: {
    name: "Storytelling Agent",
    model: "gpt-4o-mini",
    about: "You are a creative storytelling agent that crafts engaging stories.",
  },
});

// Step 2: a task, given as YAML (or as a JS object: `task: { definition: {...} }`)
const taskYaml = `
name: Story Creator
description: Writes a short story about an idea and gives it a title.
main:
  - prompt:
      - role: system
        content: You are {{agent.name}}. {{agent.about}}
      - role: user
        content: Write a short story about '{{_.idea}}'.
    unwrap: true
  - prompt: "Give a catchy title to this story: {{_}}"
    unwrap: true
  - return:
      title: $ _
      story: $ outputs[0]
`;
const task = await client.tasks.createTask({ agentId: agent.id, task: { yaml: taskYaml } });

// Step 3: execute it and watch every transition as it happens
const execution = await client.executions.createExecution({
  taskId: task.id,
  execution: { input: { idea: "A cat who learns to fly" } },
});
for await (const transition of client.executions.streamTransitions({ executionId: execution.id })) {
  console.log(transition.sequence, transition.stepType, fromValue(transition.output));
}
// The stream ends when the execution ends: read the result.
const result = await client.executions.getExecution({ id: execution.id });
if (result.status === ExecutionStatus.SUCCEEDED) {
  console.log("Task Result:", fromValue(result.output)); // { title: "...", story: "..." }
} else {
  console.error(ExecutionStatus[result.status], result.error);
}

// Step 4: chat with the agent
const session = await client.sessions.createSession({ session: { agent: agent.id } });
const response = await client.chat.chat({
  sessionId: session.id,
  messages: [{ role: "user", content: "Tell me about the cat." }],
});
console.log(response.choices[0]?.message?.content);

client.close();
