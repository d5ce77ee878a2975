// Failures as the SDK reports them: another user's thread, a thread that does not exist, a bad token.
//
//   BRIDGE_URL=… BRIDGE_TOKEN=… FOREIGN_THREAD_ID=thread_… MISSING_THREAD_ID=thread_… \
//     ASSISTANT_ID=asst_… node errors.mjs
import { bridgeClient, failure, printResult, setting } from './bridge.mjs';

const client = bridgeClient();
const foreign = setting('FOREIGN_THREAD_ID');
const missing = setting('MISSING_THREAD_ID');
const assistantId = setting('ASSISTANT_ID');

printResult({
  foreign: {
    retrieve: await failure(() => client.beta.threads.retrieve(foreign)),
    listMessages: await failure(() => client.beta.threads.messages.list(foreign)),
    createRun: await failure(() => client.beta.threads.runs.create(foreign, { assistant_id: assistantId })),
  },
  missing: {
    retrieve: await failure(() => client.beta.threads.retrieve(missing)),
  },
  badToken: {
    createThread: await failure(() => bridgeClient('not-a-jwt').beta.threads.create()),
  },
});
