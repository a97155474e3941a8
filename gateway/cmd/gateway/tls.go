package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// backendCredentials are the transport credentials of the one gRPC connection (API calls and the
// health check alike): plaintext unless --grpc-tls, --grpc-ca or their env variables ask for TLS.
// A CA file replaces the system roots rather than adding to them: a private CA is the case it is
// for, and trusting the public roots too would accept any publicly issued certificate for the name.
func backendCredentials(cfg config) (credentials.TransportCredentials, error) {
	if !cfg.grpcTLS && cfg.grpcCA == "" {
		if cfg.grpcServerName != "" {
			return nil, errors.New("--grpc-server-name needs --grpc-tls or --grpc-ca (the backend connection is plaintext)")
		}
		return insecure.NewCredentials(), nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.grpcServerName}
	if cfg.grpcCA != "" {
		pem, err := os.ReadFile(cfg.grpcCA)
		if err != nil {
			return nil, fmt.Errorf("--grpc-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--grpc-ca %s: no PEM certificate in the file", cfg.grpcCA)
		}
		tc.RootCAs = pool
	} // else nil RootCAs: the system roots
	// An empty ServerName is filled in by grpc-go from the target's host (an IP address is checked
	// against the certificate's IP SANs).
	return credentials.NewTLS(tc), nil
}

// listenerTLS loads the HTTPS certificate (--tls-cert/--tls-key) once at start-up; nil when both are
// unset. Loading here rather than in ServeTLS turns a bad file into a start-up error (exit 2) before
// the listening line is printed.
func listenerTLS(cfg config) (*tls.Config, error) {
	switch {
	case cfg.tlsCert == "" && cfg.tlsKey == "":
		return nil, nil
	case cfg.tlsCert == "":
		return nil, errors.New("--tls-key needs --tls-cert (both or neither)")
	case cfg.tlsKey == "":
		return nil, errors.New("--tls-cert needs --tls-key (both or neither)")
	}
	pair, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	// http.Server.ServeTLS adds "h2" to NextProtos, so HTTPS clients get HTTP/2 as well as 1.1.
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}, nil
}
