// An independent client: grpc-js with the protos loaded at run time from protos/, none of
// Handoff's Python code. Makes the calls named on stdin (JSON) and prints each status code.
import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";
import { readFileSync } from "node:fs";

const plan = JSON.parse(readFileSync(0, "utf8"));
const definition = loader.loadSync(plan.protos, {
  includeDirs: [plan.include],
  keepCase: true,
  defaults: true,
});
const root = grpc.loadPackageDefinition(definition);

function service(path) {
  let node = root;
  for (const part of path.split(".")) node = node[part];
  return new node(plan.target, grpc.credentials.createInsecure());
}

function call(client, method, request, token) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return new Promise((resolve) => {
    client[method](request, metadata, { deadline: Date.now() + 10000 }, (error, reply) => {
      resolve(error ? { code: error.code, details: error.details } : { code: 0, reply });
    });
  });
}

const results = [];
for (const step of plan.calls) {
  const client = service(step.service);
  results.push(await call(client, step.method, step.request, step.token));
  client.close();
}
console.log(JSON.stringify(results));
