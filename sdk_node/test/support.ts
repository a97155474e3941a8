// Shared by the tests: a client for the server named by MINTLEAF_TARGET / MINTLEAF_API_KEY (the e2e
// test tests/e2e/test_node_sdk.py starts one with a scripted model and sets both).
import { randomUUID } from "node:crypto";

import { Mintleaf, type MintleafOptions } from "../src/index.js";

export const target = process.env["MINTLEAF_TARGET"] ?? "127.0.0.1:50051";
export const apiKey = process.env["MINTLEAF_API_KEY"] ?? "";

/** A client with the test key (or the options given instead). */
export function connect(options: Partial<MintleafOptions> = {}): Mintleaf {
  return new Mintleaf({ target, apiKey, ...options });
}

/** A tag unique to this run, to find the resources a test made among others of the same key. */
export function runTag(): string {
  return randomUUID();
}
