/**
 * Mintleaf Node SDK: one authenticated gRPC connection and a typed client per service.
 *
 * Design note. The messages and service descriptors are generated from proto/ by protoc-gen-es
 * (src/gen, never edited by hand); this module only adds what every caller needs: the API key on
 * every call, errors with the server's details decoded (MintleafError), JS-value helpers for
 * google.protobuf.Value fields, and waiting for an execution by streaming its transitions.
 * The clients are plain Connect clients (`createClient(Service, transport)`): requests are plain
 * objects (`{ agent: { name: "Ada" } }`), responses typed messages. Rejected: a hand-written
 * Julep-style method per RPC (`agents.create(...)`): it would duplicate the contract and drift from
 * it; and @grpc/grpc-js with ts-proto: callback style, no typed async iterators for streams.
 *
 *     import { Mintleaf } from "@mintleaf/sdk";
 *     const client = new Mintleaf({ target: "127.0.0.1:50051", apiKey: process.env.MINTLEAF_API_KEY! });
 *     const agent = await client.agents.createAgent({ agent: { name: "Ada" } });
 */

import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { BadRequestSchema, ErrorInfoSchema, type ErrorInfo } from "./gen/google/rpc/error_details_pb.js";
import { AgentService } from "./gen/mintleaf/v1/agents_pb.js";
import { ChatService } from "./gen/mintleaf/v1/chat_pb.js";
import { DocService } from "./gen/mintleaf/v1/docs_pb.js";
import {
  ExecutionService,
  ExecutionStatus,
  TransitionType,
  type Execution,
  type Transition,
} from "./gen/mintleaf/v1/executions_pb.js";
import { SecretService } from "./gen/mintleaf/v1/secrets_pb.js";
import { SessionService } from "./gen/mintleaf/v1/sessions_pb.js";
import { TaskService } from "./gen/mintleaf/v1/tasks_pb.js";
import { ToolService } from "./gen/mintleaf/v1/tools_pb.js";
import { UserService } from "./gen/mintleaf/v1/users_pb.js";

// Everything a caller needs comes from this one module: the contract's messages, enums and
// services, the protobuf helpers, and the well-known types used by the contract.
export * from "./gen/mintleaf/v1/agents_pb.js";
export * from "./gen/mintleaf/v1/chat_pb.js";
export * from "./gen/mintleaf/v1/docs_pb.js";
export * from "./gen/mintleaf/v1/executions_pb.js";
export * from "./gen/mintleaf/v1/secrets_pb.js";
export * from "./gen/mintleaf/v1/sessions_pb.js";
export * from "./gen/mintleaf/v1/tasks_pb.js";
export * from "./gen/mintleaf/v1/tools_pb.js";
export * from "./gen/mintleaf/v1/users_pb.js";
export {
  BadRequestSchema,
  ErrorInfoSchema,
  type BadRequest,
  type BadRequest_FieldViolation,
  type ErrorInfo,
} from "./gen/google/rpc/error_details_pb.js";
export { clone, create, equals, fromBinary, fromJson, isMessage, toBinary, toJson } from "@bufbuild/protobuf";
export type { JsonObject, JsonValue, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
export {
  FieldMaskSchema,
  StructSchema,
  TimestampSchema,
  ValueSchema,
  timestampDate,
  timestampFromDate,
  timestampNow,
  type FieldMask,
  type Struct,
  type Timestamp,
  type Value,
} from "@bufbuild/protobuf/wkt";
export { Code, ConnectError, type CallOptions, type Client, type Interceptor } from "@connectrpc/connect";

/** Options of a Mintleaf client. */
export interface MintleafOptions {
  /** The server's gRPC address as host:port (default "127.0.0.1:50051"). */
  target?: string;
  /** The server's base URL, e.g. "http://127.0.0.1:50051"; wins over `target`. */
  baseUrl?: string;
  /** API key, sent as `authorization: Bearer <key>` on every call (an empty key sends none). */
  apiKey: string;
  /** Default deadline of every call in milliseconds (none by default; streams may run long). */
  timeoutMs?: number;
  /** Extra Connect interceptors, run after the SDK's own (auth, error decoding). */
  interceptors?: Interceptor[];
  /** Speak TLS to `target` (a server started with tls_cert_file/tls_key_file), trusting the
   * system's CAs; a `baseUrl` of "https://..." does the same. */
  tls?: boolean;
  /** PEM CA certificate(s) to trust instead of the system's; implies `tls`. */
  ca?: string | Buffer;
}

/** A field the server rejected, from google.rpc.BadRequest. */
export interface FieldViolation {
  /** The field's path in the request, e.g. "agent.name". */
  field: string;
  /** What is wrong with it. */
  description: string;
}

/**
 * An error returned by the server, with its google.rpc.Status details decoded: the ErrorInfo
 * reason (UPPER_SNAKE, e.g. "AGENT_NOT_FOUND") and BadRequest field violations.
 *
 * It is a ConnectError (`err instanceof ConnectError` holds, `err.code` is a `Code`), so code
 * written against plain Connect clients keeps working. Every call of a Mintleaf client rejects
 * with one; `MintleafError.from(err)` converts any other caught value.
 */
export class MintleafError extends ConnectError {
  /** ErrorInfo.reason, or "" when the server sent none. */
  readonly reason: string;
  /** The decoded ErrorInfo (reason, domain, metadata), when present. */
  readonly errorInfo: ErrorInfo | undefined;
  /** Every field violation of every BadRequest detail. */
  readonly violations: FieldViolation[];

  private constructor(source: ConnectError) {
    super(source.rawMessage, source.code, source.metadata, undefined, source.cause ?? source);
    this.details = source.details;
    this.errorInfo = source.findDetails(ErrorInfoSchema)[0];
    this.reason = this.errorInfo?.reason ?? "";
    this.violations = source
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
  }

  /** Wraps any caught value (a MintleafError is returned as is). */
  static override from(reason: unknown): MintleafError {
    if (reason instanceof MintleafError) {
      return reason;
    }
    return new MintleafError(ConnectError.from(reason));
  }

  // ConnectError's own check recognises any error named "ConnectError"; narrow it to this class.
  // (The name stays "ConnectError" so Connect's internals keep our errors as they are.)
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && Object.prototype.isPrototypeOf.call(MintleafError.prototype, value);
  }

  /** The code's name, e.g. "InvalidArgument" (Connect's Code enum). */
  get codeName(): string {
    return Code[this.code];
  }

  /** The description of the violation of `field`, or undefined when the field was not named. */
  violation(field: string): string | undefined {
    return this.violations.find((v) => v.field === field)?.description;
  }
}

/** The ExecutionService client plus `waitFor`. */
export type ExecutionsClient = Client<typeof ExecutionService> & {
  /** See waitForExecution. */
  waitFor(id: string, options?: WaitOptions): Promise<Execution>;
};

/** A client of the Mintleaf server: one typed Connect client per service over one HTTP/2 connection. */
export class Mintleaf {
  readonly agents: Client<typeof AgentService>;
  readonly users: Client<typeof UserService>;
  readonly tools: Client<typeof ToolService>;
  readonly tasks: Client<typeof TaskService>;
  readonly executions: ExecutionsClient;
  readonly sessions: Client<typeof SessionService>;
  readonly chat: Client<typeof ChatService>;
  readonly docs: Client<typeof DocService>;
  readonly secrets: Client<typeof SecretService>;
  /** The URL the client talks to, e.g. "http://127.0.0.1:50051". */
  readonly baseUrl: string;
  private readonly sessionManager: Http2SessionManager;

  constructor(options: MintleafOptions) {
    const secure = options.tls === true || options.ca !== undefined;
    this.baseUrl = options.baseUrl ?? toBaseUrl(options.target ?? "127.0.0.1:50051", secure);
    // Our own session manager so that close() can end the connection (and let the process exit).
    this.sessionManager = new Http2SessionManager(
      this.baseUrl,
      undefined,
      options.ca === undefined ? undefined : { ca: options.ca },
    );
    const transport = createGrpcTransport({
      baseUrl: this.baseUrl,
      sessionManager: this.sessionManager,
      interceptors: [decodeErrors, bearer(options.apiKey), ...(options.interceptors ?? [])],
      ...(options.timeoutMs === undefined ? {} : { defaultTimeoutMs: options.timeoutMs }),
    });
    this.agents = createClient(AgentService, transport);
    this.users = createClient(UserService, transport);
    this.tools = createClient(ToolService, transport);
    this.tasks = createClient(TaskService, transport);
    const executions = createClient(ExecutionService, transport);
    this.executions = Object.assign(executions, {
      waitFor: (id: string, opts?: WaitOptions) => waitForExecution(executions, id, opts),
    });
    this.sessions = createClient(SessionService, transport);
    this.chat = createClient(ChatService, transport);
    this.docs = createClient(DocService, transport);
    this.secrets = createClient(SecretService, transport);
  }

  /** Closes the connection; calls still running fail. */
  close(): void {
    this.sessionManager.abort();
  }
}

function toBaseUrl(target: string, secure: boolean): string {
  return target.includes("://") ? target : `${secure ? "https" : "http"}://${target}`;
}

function bearer(apiKey: string): Interceptor {
  return (next) => async (req) => {
    if (apiKey) {
      req.header.set("authorization", `Bearer ${apiKey}`);
    }
    return next(req);
  };
}

// Errors of unary calls reject the call; errors of a stream surface while iterating it: both become
// MintleafErrors.
const decodeErrors: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    if (!res.stream) {
      return res;
    }
    return { ...res, message: rethrowDecoded(res.message) };
  } catch (err) {
    throw MintleafError.from(err);
  }
};

async function* rethrowDecoded<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (err) {
    throw MintleafError.from(err);
  }
}

/** google.protobuf.Value from a plain JS (JSON) value: `{ input: toValue({ answer: 42 }) }`. */
export function toValue(value: JsonValue): Value {
  return fromJson(ValueSchema, value);
}

/** A plain JS (JSON) value from a google.protobuf.Value field; undefined when the field is unset. */
export function fromValue(value: Value | undefined): JsonValue | undefined {
  return value === undefined ? undefined : toJson(ValueSchema, value);
}

/** Options of waitForExecution. */
export interface WaitOptions {
  /** Also return when the execution pauses for the client (AWAITING_INPUT). */
  untilAwaitingInput?: boolean;
  /** Called with every transition, in sequence order, as it happens. */
  onTransition?: (transition: Transition) => void | Promise<void>;
  /** Replay starts after this sequence number (default 0: every transition). */
  afterSequence?: bigint;
  /** Gives up (rejecting with a Canceled error) when this signal aborts. */
  signal?: AbortSignal;
  /** Gives up after this many milliseconds. */
  timeoutMs?: number;
}

const TERMINAL: ReadonlySet<ExecutionStatus> = new Set([
  ExecutionStatus.SUCCEEDED,
  ExecutionStatus.FAILED,
  ExecutionStatus.CANCELLED,
]);

/**
 * Follows an execution's transitions (StreamTransitions, replayed from the start then live) until it
 * ends, or pauses when `untilAwaitingInput`, and returns the execution as it is then (its `output`
 * or `error` set). A stream that breaks off is resumed after the last transition seen.
 */
export async function waitForExecution(
  executions: Client<typeof ExecutionService>,
  id: string,
  options: WaitOptions = {},
): Promise<Execution> {
  const signals = [options.signal, options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs)];
  const present = signals.filter((s): s is AbortSignal => s !== undefined);
  const signal = present.length === 0 ? undefined : AbortSignal.any(present);
  const call = signal === undefined ? {} : { signal };
  const done = (ex: Execution): boolean =>
    TERMINAL.has(ex.status) || (options.untilAwaitingInput === true && ex.status === ExecutionStatus.AWAITING_INPUT);
  let after = options.afterSequence ?? 0n;
  for (;;) {
    let paused = false;
    for await (const t of executions.streamTransitions({ executionId: id, afterSequence: after }, call)) {
      after = t.sequence;
      await options.onTransition?.(t);
      if (options.untilAwaitingInput && t.type === TransitionType.WAIT) {
        paused = true;
        break;
      }
    }
    let ex = await executions.getExecution({ id }, call);
    // The stream only ends on its own when the execution has ended, so every transition was seen.
    if (TERMINAL.has(ex.status) && !paused) {
      return ex;
    }
    if (paused) {
      // A WAIT transition may be visible a moment before the status; other branches may still run.
      for (let i = 0; i < 20 && !done(ex); i++) {
        await sleep(50, signal);
        ex = await executions.getExecution({ id }, call);
      }
      if (done(ex) && !TERMINAL.has(ex.status)) {
        return ex;
      }
      // Terminal after the pause: loop once more so the remaining transitions are delivered.
    } else {
      await sleep(100, signal); // the stream broke off: resume after the last transition seen
    }
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(MintleafError.from(new ConnectError("wait aborted", Code.Canceled)));
      return;
    }
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(MintleafError.from(new ConnectError("wait aborted", Code.Canceled)));
      },
      { once: true },
    );
  });
}
