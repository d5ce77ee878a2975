// Streamed runs through the Node SDK's AssistantStream, which is strict about the order of
// events (one open message and one open step at a time, a terminal run event before the end):
// a reply streamed as it is written, then a tool round trip, streamed both ways, then a thread
// created and run in one streamed call.
//
//   BRIDGE_URL=… BRIDGE_TOKEN=… ASSISTANT_ID=asst_… node stream.mjs "reply message" "tool message"
import { bridgeClient, printResult, setting } from './bridge.mjs';

const client = bridgeClient();
const assistantId = setting('ASSISTANT_ID');
const [replyMessage, toolMessage] = process.argv.slice(2);

// Reads a stream to its end; what the helpers saw, event by event, and what it ended with.
async function consume(stream) {
  const events = [];
  const deltas = [];
  const toolCalls = [];
  stream.on('event', (event) => events.push(event.event));
  stream.on('textDelta', (delta) => deltas.push(delta.value));
  stream.on('toolCallDone', (call) => toolCalls.push(call));
  const run = await stream.finalRun();
  const messages = run.status === 'completed' ? await stream.finalMessages() : [];
  return { events, deltas, toolCalls, run, messages };
}

const thread = await client.beta.threads.create({ messages: [{ role: 'user', content: replyMessage }] });
const reply = await consume(client.beta.threads.runs.stream(thread.id, { assistant_id: assistantId }));

const toolThread = await client.beta.threads.create({ messages: [{ role: 'user', content: toolMessage }] });
const asking = await consume(client.beta.threads.runs.stream(toolThread.id, { assistant_id: assistantId }));
const call = asking.run.required_action.submit_tool_outputs.tool_calls[0];
const answered = await consume(client.beta.threads.runs.submitToolOutputsStream(asking.run.id, {
  thread_id: toolThread.id,
  tool_outputs: [{ tool_call_id: call.id, output: 'rain' }],
}));

const together = await consume(client.beta.threads.createAndRunStream({
  assistant_id: assistantId,
  thread: { messages: [{ role: 'user', content: replyMessage }] },
}));

printResult({ thread, reply, asking, answered, together });
