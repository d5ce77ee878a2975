// A conversation through client.beta.threads: a thread with a message, a run polled to its end,
// the reply read back; then the one-call form, a thread created and run together.
//
//   BRIDGE_URL=… BRIDGE_TOKEN=… ASSISTANT_ID=asst_… node conversation.mjs "first message" "second"
import { bridgeClient, printResult, setting } from './bridge.mjs';

const client = bridgeClient();
const assistantId = setting('ASSISTANT_ID');
const [first, second] = process.argv.slice(2);

const thread = await client.beta.threads.create({
  messages: [{ role: 'user', content: first }],
  metadata: { client: 'node' },
});
const run = await client.beta.threads.runs.createAndPoll(thread.id, { assistant_id: assistantId });
const page = await client.beta.threads.messages.list(thread.id, { order: 'asc' });
// Auto-pagination one message a page: the SDK follows our cursors (`after`, has_more).
const paged = [];
for await (const message of client.beta.threads.messages.list(thread.id, { order: 'asc', limit: 1 })) {
  paged.push(message.id);
}
const reply = page.data.at(-1);
const retrievedReply = await client.beta.threads.messages.retrieve(reply.id, { thread_id: thread.id });
const retrievedRun = await client.beta.threads.runs.retrieve(run.id, { thread_id: thread.id });
const runs = await client.beta.threads.runs.list(thread.id);

const oneCall = await client.beta.threads.createAndRunPoll({
  assistant_id: assistantId,
  thread: { messages: [{ role: 'user', content: second }] },
});
const oneCallMessages = await client.beta.threads.messages.list(oneCall.thread_id, { order: 'asc' });

printResult({
  thread,
  run,
  messages: page.data,
  pagedIds: paged,
  retrievedReply,
  retrievedRun,
  runIds: runs.data.map((r) => r.id),
  oneCall: { run: oneCall, messages: oneCallMessages.data },
});
