// What every script here shares: a client of the bridge, and one JSON document on stdout.
//
// The scripts read BRIDGE_URL (the bridge's /v1 URL) and BRIDGE_TOKEN (a user's JWT, sent as the
// api key) from the environment, as examples/ do, and print one JSON object for the test to check.
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

export function setting(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

export function bridgeClient(apiKey = setting('BRIDGE_TOKEN')) {
  // No retries: a test sees the first answer, and an error arrives at once.
  return new OpenAI({ baseURL: setting('BRIDGE_URL'), apiKey, maxRetries: 0, timeout: 10_000 });
}

// The runtime and SDK that produced a result, so a test can tell they are the ones it pinned.
export const runtime = { node: process.version, sdk: VERSION };

// How the SDK reported a failed call: the class it raised and the fields it read off our envelope.
export function describeError(error) {
  if (!(error instanceof OpenAI.APIError)) {
    throw error;
  }
  const classes = ['NotFoundError', 'AuthenticationError', 'PermissionDeniedError',
    'BadRequestError', 'ConflictError', 'RateLimitError', 'InternalServerError'];
  return {
    class: error.constructor.name,
    instanceOf: classes.filter((name) => error instanceof OpenAI[name]),
    status: error.status,
    message: error.message,
    code: error.code ?? null,
    param: error.param ?? null,
    type: error.type ?? null,
    error: error.error ?? null,
    requestID: error.requestID ?? null,
  };
}

// Runs `call`, which must fail with an API error, and describes that error.
export async function failure(call) {
  try {
    await call();
  } catch (error) {
    return describeError(error);
  }
  return { class: null, message: 'the call succeeded' };
}

export function printResult(result) {
  process.stdout.write(JSON.stringify({ runtime, ...result }) + '\n');
}
