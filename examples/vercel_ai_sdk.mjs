// Use a Gambiarra room from the Vercel AI SDK, through @ai-sdk/openai-compatible.
//
//   npm install ai @ai-sdk/openai-compatible
//   node vercel_ai_sdk.mjs http://localhost:3000 ROOMCODE [MODEL]
//
// The room's OpenAI base URL is http://HUB/rooms/CODE/v1. The model id picks who answers:
// "*" (anyone), a participant id, "model:llama3" (anyone serving that model) or "llama3".
// A protected room's password is the API key (here from $GAMBIARRA_PASSWORD).
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, streamText } from "ai";

const [hub, code, model = "*"] = process.argv.slice(2);
const baseURL = `${hub.replace(/\/$/, "")}/rooms/${code}/v1`;
const apiKey = process.env.GAMBIARRA_PASSWORD || "unused";
const gambiarra = createOpenAICompatible({ name: "gambiarra", baseURL, apiKey });

function check(cond, msg) {
  if (!cond) {
    console.error("FAILED:", msg);
    process.exit(1);
  }
}

// Who can answer (the AI SDK has no model listing; it is plain OpenAI JSON).
const models = await (
  await fetch(`${baseURL}/models`, { headers: { Authorization: `Bearer ${apiKey}` } })
).json();
// Each model once (a name to send), then each participant (its id routes to it).
for (const m of models.data) {
  if (m.gambiarra.participants) console.log(`model ${m.id}: ${m.gambiarra.participants.online} participant(s) serve it`);
  else console.log(`participant ${m.id} serves ${m.gambiarra.model}`);
}
check(models.data.length > 0, "the room has no online participant");

// A plain completion.
const { text } = await generateText({ model: gambiarra(model), prompt: "Say hello in one word." });
console.log("completion:", text);
check(text.length > 0, "empty completion");

// A streamed completion.
const result = streamText({ model: gambiarra(model), prompt: "Count to five." });
let chunks = 0;
let streamed = "";
for await (const delta of result.textStream) {
  chunks += 1;
  streamed += delta;
}
console.log(`stream: ${chunks} chunks: ${JSON.stringify(streamed.slice(0, 60))}`);
check(chunks > 1, "the stream did not arrive in pieces");

// An error the SDK surfaces with the hub's message.
try {
  await generateText({ model: gambiarra("model:no-such-model"), prompt: "hi", maxRetries: 0 });
  check(false, "expected an error for an unknown model");
} catch (e) {
  const message = e.message ?? String(e);
  console.log("error surfaced:", e.statusCode, message);
  check(message.includes("No available participant"), `unexpected error: ${message}`);
}
console.log("vercel ai sdk example: ok");
