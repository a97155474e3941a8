// Command mintleaf-gateway is Mintleaf's REST bridge: a grpc-gateway v2 reverse proxy that turns the
// google.api.http routes of proto/mintleaf/v1 (AIP style under /v1, plus Julep's routes) into calls
// on the Python gRPC server.
//
// Design notes (alternatives rejected):
//   - One shared grpc.ClientConn for every service and the health check, not the generated
//     Register*FromEndpoint helpers, which dial one connection per service (nine here).
//   - JSON uses the proto field names (snake_case, as Julep's REST API) rather than protojson's
//     lowerCamelCase; input accepts both spellings. Every field is emitted, unset messages as null,
//     so a response always has the same shape. Unknown input fields are rejected (400), not
//     silently dropped: a typo in a field name should not look like success.
//   - Server streams are newline-delimited JSON (application/x-ndjson), one {"result": ...} or
//     {"error": Status} object a line (grpc-gateway's format), not SSE: no framing to parse and
//     curl shows it as is.
//   - The HTTP server has no write timeout (it would cut transition streams); unary calls carry the
//     client's Grpc-Timeout header as a deadline when given, and the backend enforces its own.
//   - PATCH without ?update_mask gets the body's top-level field names as its mask (patchMask).
//     grpc-gateway's own derivation goes down to leaf paths (metadata.a), which the backend
//     rejects: it updates whole top-level fields.
//   - Errors are grpc-gateway's google.rpc.Status JSON with the backend's details kept; errors
//     raised in the gateway itself (bad JSON, unknown route, backend down) get an ErrorInfo too, so
//     every error has a machine-readable reason.
//   - TLS is opt-in on both sides, plaintext stays the default (the backend is usually on loopback).
//     --grpc-ca replaces the system roots instead of adding to them (tls.go). The HTTPS certificate
//     is loaded once at start-up, not reloaded on rotation: restart to pick up a new one.
//   - CORS is off unless --cors-origins is given (cors.go); preflights are answered by the gateway,
//     not forwarded, and no credentials mode: authentication is a header, never a cookie.
//   - Bad start-up settings (unknown flag, bad env value, a CA file that is missing or holds no
//     certificate, --tls-cert without --tls-key, ...) exit 2 with one line on stderr, before
//     anything listens; runtime failures (the port is taken) exit 1 through log.Fatal.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	// errdetails also registers ErrorInfo/BadRequest, so protojson can print the backend's details.
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	mintleafv1 "mintleaf.dev/gateway/gen/mintleaf/v1"
	"mintleaf.dev/gateway/openapi"
)

// config is what the flags (or their environment variables) set.
type config struct {
	grpcTarget    string
	listen        string
	maxBodyBytes  int64
	maxMsgBytes   int
	shutdownGrace time.Duration

	grpcTLS        bool   // TLS to the backend with the system roots
	grpcCA         string // PEM CA bundle to trust for the backend; implies TLS
	grpcServerName string // name checked in the backend's certificate instead of the target host
	tlsCert        string // HTTPS certificate (PEM, chain allowed); with tlsKey
	tlsKey         string
	corsOrigins    string // comma-separated origins or "*"; "" = no CORS
}

// prepared is what run needs beyond the flags: everything that reads files or validates values,
// done before anything listens so that a mistake is a start-up error.
type prepared struct {
	backendCreds credentials.TransportCredentials
	listenerTLS  *tls.Config // nil: plain HTTP
	cors         *corsPolicy // nil: no CORS headers
}

// usageError is a bad flag, environment variable or file named by one: exit 2, one line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.SetPrefix("mintleaf-gateway: ")
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	var p prepared
	if err == nil {
		p, err = prepare(cfg)
	}
	if err != nil {
		// The flag package has already printed its own error and the usage for a bad flag.
		var usage usageError
		if errors.As(err, &usage) {
			fmt.Fprintf(os.Stderr, "mintleaf-gateway: %v\n", err)
		}
		os.Exit(2)
	}
	if err := run(cfg, p); err != nil {
		log.Fatal(err)
	}
}

// prepare reads the certificate files and the CORS list; every error is a usageError.
func prepare(cfg config) (prepared, error) {
	var p prepared
	var err error
	if p.backendCreds, err = backendCredentials(cfg); err != nil {
		return p, usageError{err}
	}
	if p.listenerTLS, err = listenerTLS(cfg); err != nil {
		return p, usageError{err}
	}
	if p.cors, err = parseCORSOrigins(cfg.corsOrigins); err != nil {
		return p, usageError{err}
	}
	return p, nil
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("mintleaf-gateway", flag.ContinueOnError)
	var cfg config
	fs.StringVar(&cfg.grpcTarget, "grpc", envOr("MINTLEAF_GRPC_TARGET", "127.0.0.1:50051"),
		"gRPC server address (env MINTLEAF_GRPC_TARGET)")
	fs.StringVar(&cfg.listen, "listen", envOr("MINTLEAF_REST_LISTEN", "127.0.0.1:8080"),
		"HTTP listen address; port 0 picks a free port (env MINTLEAF_REST_LISTEN)")
	maxBody, err := strconv.ParseInt(envOr("MINTLEAF_REST_MAX_BODY_BYTES", "16777216"), 10, 64)
	if err != nil {
		return cfg, usageError{fmt.Errorf("MINTLEAF_REST_MAX_BODY_BYTES: %w", err)}
	}
	grpcTLS, err := strconv.ParseBool(envOr("MINTLEAF_GRPC_TLS", "false"))
	if err != nil {
		return cfg, usageError{fmt.Errorf("MINTLEAF_GRPC_TLS: %w", err)}
	}
	fs.BoolVar(&cfg.grpcTLS, "grpc-tls", grpcTLS,
		"connect to the gRPC server over TLS, trusting the system roots (env MINTLEAF_GRPC_TLS)")
	fs.StringVar(&cfg.grpcCA, "grpc-ca", os.Getenv("MINTLEAF_GRPC_CA"),
		"PEM CA certificate(s) to trust for the gRPC server instead of the system roots; implies TLS (env MINTLEAF_GRPC_CA)")
	fs.StringVar(&cfg.grpcServerName, "grpc-server-name", os.Getenv("MINTLEAF_GRPC_SERVER_NAME"),
		"name to verify in the gRPC server's certificate instead of the --grpc host (env MINTLEAF_GRPC_SERVER_NAME)")
	fs.StringVar(&cfg.tlsCert, "tls-cert", os.Getenv("MINTLEAF_REST_TLS_CERT"),
		"serve HTTPS with this PEM certificate (chain allowed); needs --tls-key (env MINTLEAF_REST_TLS_CERT)")
	fs.StringVar(&cfg.tlsKey, "tls-key", os.Getenv("MINTLEAF_REST_TLS_KEY"),
		"PEM private key of --tls-cert (env MINTLEAF_REST_TLS_KEY)")
	fs.StringVar(&cfg.corsOrigins, "cors-origins", os.Getenv("MINTLEAF_REST_CORS_ORIGINS"),
		"comma-separated origins allowed by CORS (https://app.example), or *; empty: no CORS (env MINTLEAF_REST_CORS_ORIGINS)")
	fs.Int64Var(&cfg.maxBodyBytes, "max-body-bytes", maxBody,
		"largest accepted request body (env MINTLEAF_REST_MAX_BODY_BYTES)")
	// The server's own limit (limits.max_message_bytes) is 16 MiB; grpc-go's default receive limit
	// of 4 MiB would otherwise fail large list pages that the server is willing to send.
	fs.IntVar(&cfg.maxMsgBytes, "max-message-bytes", 16<<20, "largest gRPC message sent or received")
	fs.DurationVar(&cfg.shutdownGrace, "shutdown-grace", 10*time.Second,
		"how long in-flight requests (streams included) may run after SIGTERM/SIGINT")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, usageError{fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	return cfg, nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func run(cfg config, p prepared) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	conn, err := grpc.NewClient(cfg.grpcTarget,
		grpc.WithTransportCredentials(p.backendCreds),
		grpc.WithUserAgent("mintleaf-gateway"),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cfg.maxMsgBytes),
			grpc.MaxCallSendMsgSize(cfg.maxMsgBytes),
		),
	)
	if err != nil {
		return fmt.Errorf("grpc client for %s: %w", cfg.grpcTarget, err)
	}
	defer conn.Close()

	gw, err := newGatewayMux(ctx, conn)
	if err != nil {
		return err
	}
	marshaler := newMarshaler()
	root := http.NewServeMux()
	root.Handle("GET /healthz", healthHandler(healthpb.NewHealthClient(conn), cfg.grpcTarget))
	root.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.Document)
	})
	root.Handle("/", limitBody(patchMask(gw, marshaler), marshaler, cfg.maxBodyBytes))

	srv := &http.Server{
		Handler:           cors(root, p.cors),
		TLSConfig:         p.listenerTLS,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute, // whole request incl. body; responses are not limited
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.Default(),
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.listen, err)
	}
	// Tests and scripts wait for this line and read the real port from it (--listen host:0).
	scheme, backend := "http", "plaintext"
	if p.listenerTLS != nil {
		scheme = "https"
	}
	if cfg.grpcTLS || cfg.grpcCA != "" {
		backend = "tls"
	}
	fmt.Printf("mintleaf-gateway listening on %s (%s; grpc backend %s, %s)\n", ln.Addr(), scheme, cfg.grpcTarget, backend)

	served := make(chan error, 1)
	go func() {
		if p.listenerTLS != nil {
			served <- srv.ServeTLS(ln, "", "") // the certificate is in srv.TLSConfig
		} else {
			served <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stop() // a second signal now kills the process the default way
	log.Printf("shutting down (grace %s)", cfg.shutdownGrace)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Streams still open at the end of the grace period are cut; clients resume them with
		// after_sequence.
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// newGatewayMux registers every service of mintleaf.v1 on one mux over one connection.
func newGatewayMux(ctx context.Context, conn *grpc.ClientConn) (*runtime.ServeMux, error) {
	mux := runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(incomingHeaderMatcher),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, newMarshaler()),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithStreamErrorHandler(func(_ context.Context, err error) *status.Status {
			return status.Convert(withErrorInfo(err))
		}),
	)
	registers := []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		mintleafv1.RegisterAgentServiceHandler,
		mintleafv1.RegisterUserServiceHandler,
		mintleafv1.RegisterToolServiceHandler,
		mintleafv1.RegisterSessionServiceHandler,
		mintleafv1.RegisterChatServiceHandler,
		mintleafv1.RegisterDocServiceHandler,
		mintleafv1.RegisterTaskServiceHandler,
		mintleafv1.RegisterExecutionServiceHandler,
		mintleafv1.RegisterSecretServiceHandler,
	}
	for _, register := range registers {
		if err := register(ctx, mux, conn); err != nil {
			return nil, fmt.Errorf("register handlers: %w", err)
		}
	}
	return mux, nil
}

// incomingHeaderMatcher forwards Julep's X-Auth-Key as `x-auth-key` metadata, plus grpc-gateway's
// defaults (permanent HTTP headers as grpcgateway-<name>).
func incomingHeaderMatcher(key string) (string, bool) {
	switch textproto.CanonicalMIMEHeaderKey(key) {
	case "X-Auth-Key":
		return "x-auth-key", true
	case "Authorization":
		// runtime.AnnotateContext always forwards it as plain `authorization` (ahead of any other
		// header); the default matcher would add a second copy of the key as
		// grpcgateway-authorization, which nobody reads.
		return "", false
	}
	return runtime.DefaultHeaderMatcher(key)
}

// ndjsonMarshaler is grpc-gateway's protojson marshaler with the stream content type set to
// newline-delimited JSON (the delimiter itself is JSONPb's "\n").
type ndjsonMarshaler struct {
	*runtime.JSONPb
}

// StreamContentType implements runtime.StreamContentType.
func (ndjsonMarshaler) StreamContentType(any) string { return "application/x-ndjson" }

func newMarshaler() runtime.Marshaler {
	return ndjsonMarshaler{&runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{
			UseProtoNames:   true,
			EmitUnpopulated: true,
		},
		UnmarshalOptions: protojson.UnmarshalOptions{
			DiscardUnknown: false,
		},
	}}
}

// errorHandler is grpc-gateway's (google.rpc.Status as JSON, HTTP code from the gRPC code, details
// kept) with an ErrorInfo added to errors that have no details, so every REST error carries a
// machine-readable reason as the backend's own errors do.
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	var custom *runtime.HTTPStatusError
	if errors.As(err, &custom) { // routing errors (404/405) keep their HTTP code
		err = &runtime.HTTPStatusError{HTTPStatus: custom.HTTPStatus, Err: withErrorInfo(custom.Err)}
	} else {
		err = withErrorInfo(err)
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// withErrorInfo adds ErrorInfo{reason: <code name>, domain: gateway.mintleaf.dev} to a status
// without details: errors raised by the gateway itself (malformed JSON, unknown route, backend
// unreachable). The backend's errors always carry details and pass unchanged.
func withErrorInfo(err error) error {
	st := status.Convert(err)
	if st.Code() == codes.OK || len(st.Proto().GetDetails()) > 0 {
		return err
	}
	enriched, derr := st.WithDetails(&errdetails.ErrorInfo{
		Reason: rpccode.Code(st.Code()).String(),
		Domain: "gateway.mintleaf.dev",
	})
	if derr != nil {
		return err
	}
	return enriched.Err()
}

// patchMask sets update_mask, when a PATCH request names none, to the top-level fields of its JSON
// body. grpc-gateway would otherwise derive the mask itself down to leaf paths, so a body such as
// {"metadata": {"a": 1}} became the mask metadata.a, which the backend refuses (it updates whole
// top-level fields). id, created_at and updated_at are left out: a client that sends back a
// resource it read must not be refused for echoing them.
func patchMask(next http.Handler, m runtime.Marshaler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query := r.URL.Query()
		if r.Method != http.MethodPatch || query.Has("update_mask") || query.Has("updateMask") {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			writeStatus(w, m, http.StatusRequestEntityTooLarge, status.New(codes.ResourceExhausted, err.Error()))
			return
		} else if err != nil {
			writeStatus(w, m, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error()))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var fields map[string]json.RawMessage
		if json.Unmarshal(body, &fields) == nil && len(fields) > 0 {
			paths := make([]string, 0, len(fields))
			for name := range fields {
				switch path := protoName(name); path {
				case "id", "created_at", "updated_at":
				default:
					paths = append(paths, path)
				}
			}
			sort.Strings(paths)
			query.Set("update_mask", strings.Join(paths, ","))
			r.URL.RawQuery = query.Encode()
		}
		next.ServeHTTP(w, r)
	})
}

// protoName turns a protojson lowerCamelCase name into the proto (snake_case) name; proto names
// pass unchanged. Mintleaf's field names are lower snake_case, so the mapping is exact.
func protoName(jsonName string) string {
	var b strings.Builder
	for _, c := range jsonName {
		if c >= 'A' && c <= 'Z' {
			b.WriteByte('_')
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	return b.String()
}

// limitBody refuses bodies over max bytes: up front with 413 when Content-Length says so, and with
// grpc-gateway's 400 when a chunked body runs over while being read.
func limitBody(next http.Handler, m runtime.Marshaler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			st := status.Newf(codes.ResourceExhausted, "request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, max)
			writeStatus(w, m, http.StatusRequestEntityTooLarge, st)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}

// writeStatus answers with st as JSON (plus an ErrorInfo), for errors raised outside the mux.
func writeStatus(w http.ResponseWriter, m runtime.Marshaler, httpCode int, st *status.Status) {
	st = status.Convert(withErrorInfo(st.Err()))
	buf, err := m.Marshal(st.Proto())
	if err != nil {
		http.Error(w, st.Message(), httpCode)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpCode)
	_, _ = w.Write(buf)
}

// healthHandler reports the backend's grpc.health.v1 status (overall, or ?service=<full name>):
// 200 when SERVING, 404 for a service the backend does not know, 503 otherwise (including when the
// backend cannot be reached), so a load balancer takes the gateway out along with its backend.
func healthHandler(client healthpb.HealthClient, target string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: r.URL.Query().Get("service")})
		code, state, detail := http.StatusOK, resp.GetStatus().String(), ""
		if st := status.Convert(err); st.Code() == codes.NotFound {
			code, state, detail = http.StatusNotFound, "SERVICE_UNKNOWN", st.Message()
		} else if err != nil {
			code, state, detail = http.StatusServiceUnavailable, "UNREACHABLE", st.Message()
		} else if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			code = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"status": state, "backend": target, "error": detail})
	})
}
