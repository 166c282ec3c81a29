// The Node clients of the matrix: the openai SDK and the Vercel AI SDK. BRIDGE_URL names the bridge;
// one JSON line per (client, scenario, backend), as bench/clients/py_clients.py prints them.
import OpenAI from "openai";
import { generateText, streamText, tool, stepCountIs, jsonSchema } from "ai";
import { createOpenAI } from "@ai-sdk/openai";

const V1 = `${process.env.BRIDGE_URL}/v1`;
const KEY = "unused-in-open-mode";
const BACKENDS = {
  assistants: ["demo-assistant", "flights-assistant"],
  foundry: ["demo-agent", "flights-agent"],
  endpoint: ["demo-endpoint", "flights-endpoint"],
};
const QUESTION = "How many flights do we have between my cat Mike born date and Easter 2021?";
const BORN = "2015-06-01";
const days = (a, b) => Math.abs(Math.round((Date.parse(b) - Date.parse(a)) / 86400000));
const FLIGHTS = `There are ${days(BORN, "2021-04-04")} flights`;
const FUNCTIONS = {
  my_cat_born_date: () => JSON.stringify({ cat_born_date: BORN }),
  get_flights: ({ date_1, date_2 }) => JSON.stringify({ flights: days(date_1, date_2) }),
};
const CHAT_TOOLS = [
  { type: "function", function: { name: "my_cat_born_date", description: "returns my cat's born date",
    parameters: { type: "object", properties: { cat_name: { type: "string" } }, required: [] } } },
  { type: "function", function: { name: "get_flights", description: "returns the number of flights between two dates",
    parameters: { type: "object", properties: { date_1: { type: "string" }, date_2: { type: "string" } }, required: ["date_1", "date_2"] } } },
];
const RESPONSES_TOOLS = CHAT_TOOLS.map((t) => ({ type: "function", ...t.function }));
const EXPECT = {
  chat: "Echo: hello matrix", chat_stream: "Echo: hello matrix", chat_tools: FLIGHTS, chat_multi_turn: "Echo: second question",
  responses: "Echo: hello matrix", responses_stream: "Echo: hello matrix", responses_tools: FLIGHTS,
  responses_multi_turn: "Echo: second question",
  // The emulator's `/recall` answers with the user messages the agent was given before it.
  conversation: "Recall: first question",
};
const HISTORY = [
  { role: "user", content: "first question" },
  { role: "assistant", content: "Echo: first question" },
  { role: "user", content: "second question" },
];
const call = (name, args) => FUNCTIONS[name](typeof args === "string" ? JSON.parse(args || "{}") : args);

function openaiNode(demo, flights) {
  const client = new OpenAI({ baseURL: V1, apiKey: KEY, maxRetries: 0 });
  const hello = [{ role: "user", content: "hello matrix" }];
  return {
    chat: async () => (await client.chat.completions.create({ model: demo, messages: hello })).choices[0].message.content,
    chat_stream: async () => {
      let text = "";
      for await (const c of await client.chat.completions.create({ model: demo, messages: hello, stream: true })) text += c.choices[0]?.delta?.content ?? "";
      return text;
    },
    chat_tools: async () => {
      const messages = [{ role: "user", content: QUESTION }];
      for (let i = 0; i < 5; i++) {
        const message = (await client.chat.completions.create({ model: flights, messages, tools: CHAT_TOOLS })).choices[0].message;
        if (!message.tool_calls?.length) return message.content;
        messages.push(message);
        for (const c of message.tool_calls) messages.push({ role: "tool", tool_call_id: c.id, content: call(c.function.name, c.function.arguments) });
      }
      throw new Error("too many tool rounds");
    },
    chat_multi_turn: async () => (await client.chat.completions.create({ model: demo, messages: HISTORY })).choices[0].message.content,
    responses: async () => (await client.responses.create({ model: demo, input: "hello matrix" })).output_text,
    responses_stream: async () => {
      const stream = client.responses.stream({ model: demo, input: "hello matrix" });
      let text = "";
      for await (const e of stream) if (e.type === "response.output_text.delta") text += e.delta;
      const final = await stream.finalResponse();
      if (final.output_text !== text) throw new Error(`final ${final.output_text} != deltas ${text}`);
      return text;
    },
    responses_tools: async () => {
      let response = await client.responses.create({ model: flights, input: QUESTION, tools: RESPONSES_TOOLS });
      for (let i = 0; i < 5; i++) {
        const calls = response.output.filter((o) => o.type === "function_call");
        if (!calls.length) return response.output_text;
        const input = calls.map((c) => ({ type: "function_call_output", call_id: c.call_id, output: call(c.name, c.arguments) }));
        response = await client.responses.create({ model: flights, previous_response_id: response.id, input, tools: RESPONSES_TOOLS });
      }
      throw new Error("too many tool rounds");
    },
    responses_multi_turn: async () => {
      const first = await client.responses.create({ model: demo, input: "first question" });
      return (await client.responses.create({ model: demo, previous_response_id: first.id, input: "second question" })).output_text;
    },
    conversation: async () => {
      const conv = await client.conversations.create({ model: demo });  // the route: `model` in the body
      await client.responses.create({ model: demo, input: "first question", conversation: conv.id });
      const second = await client.responses.create({ model: demo, input: "/recall", conversation: conv.id });
      const items = await client.conversations.items.list(conv.id, { order: "asc" });
      if (items.data.length !== 4) throw new Error(`expected 4 items, got ${items.data.length}`);
      await client.conversations.delete(conv.id);
      return second.output_text;
    },
  };
}

function vercel(demo, flights) {
  const provider = createOpenAI({ baseURL: V1, apiKey: KEY });
  const tools = {
    my_cat_born_date: tool({ description: "returns my cat's born date",
      inputSchema: jsonSchema({ type: "object", properties: { cat_name: { type: "string" } } }), execute: async (a) => call("my_cat_born_date", a) }),
    get_flights: tool({ description: "returns the number of flights between two dates",
      inputSchema: jsonSchema({ type: "object", properties: { date_1: { type: "string" }, date_2: { type: "string" } }, required: ["date_1", "date_2"] }),
      execute: async (a) => call("get_flights", a) }),
  };
  const text = async (model, opts) => (await generateText({ model, maxRetries: 0, ...opts })).text;
  const stream = async (model) => {
    const result = streamText({ model, prompt: "hello matrix", maxRetries: 0, onError: () => {} });
    let out = "";
    for await (const part of result.textStream) out += part;
    return out;
  };
  const withTools = (model) => text(model, { prompt: QUESTION, tools, stopWhen: stepCountIs(5) });
  return {
    chat: () => text(provider.chat(demo), { prompt: "hello matrix" }),
    chat_stream: () => stream(provider.chat(demo)),
    chat_tools: () => withTools(provider.chat(flights)),
    chat_multi_turn: () => text(provider.chat(demo), { messages: HISTORY }),
    responses: () => text(provider.responses(demo), { prompt: "hello matrix" }),
    responses_stream: () => stream(provider.responses(demo)),
    responses_tools: () => withTools(provider.responses(flights)),
    responses_multi_turn: () => text(provider.responses(demo), { messages: HISTORY }),
  };
}

const CLIENTS = { "openai-node": openaiNode, "vercel-ai": vercel };
const wanted = new Set(process.argv.slice(2));
for (const [name, build] of Object.entries(CLIENTS)) {
  if (wanted.size && !wanted.has(name)) continue;
  for (const [backend, [demo, flights]] of Object.entries(BACKENDS)) {
    const scenarios = build(demo, flights);
    for (const [scenario, run] of Object.entries(scenarios)) {
      let ok = false, detail = "";
      try {
        const out = String(await run());
        ok = out.includes(EXPECT[scenario]);
        if (!ok) detail = `expected ${JSON.stringify(EXPECT[scenario])}, got ${JSON.stringify(out)}`;
      } catch (err) {
        detail = String(err?.stack ?? err).slice(0, 1500);
      }
      console.log(JSON.stringify({ client: name, scenario, backend, ok, detail }));
    }
  }
}
