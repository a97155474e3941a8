package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// corsPolicy is the --cors-origins setting: exact origins (scheme://host[:port]) or any ("*").
// There is no Access-Control-Allow-Credentials: the API authenticates with a header
// (Authorization or X-Auth-Key) that a page sets itself, never with cookies, so "*" is safe to
// answer literally. Nothing is exposed beyond the CORS-safelisted response headers: the
// Grpc-Metadata-* headers carry the backend's response metadata and stay invisible to pages.
type corsPolicy struct {
	any     bool
	origins map[string]bool
}

const (
	corsMethods = "GET, POST, PUT, PATCH, DELETE"
	corsHeaders = "Authorization, X-Auth-Key, Content-Type, Grpc-Timeout"
	corsMaxAge  = "600"
)

// parseCORSOrigins reads a comma-separated list; "" means CORS off (nil policy).
func parseCORSOrigins(list string) (*corsPolicy, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	p := &corsPolicy{origins: map[string]bool{}}
	for _, raw := range strings.Split(list, ",") {
		origin := strings.TrimSpace(raw)
		switch {
		case origin == "":
			continue
		case origin == "*":
			p.any = true
			continue
		}
		u, err := url.Parse(origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("--cors-origins: %q is not an origin (scheme://host[:port], no path) or *", origin)
		}
		// Browsers send the origin lower-cased (scheme and host are case-insensitive).
		p.origins[strings.ToLower(origin)] = true
	}
	if p.any && len(p.origins) > 0 {
		return nil, fmt.Errorf("--cors-origins: * allows every origin and cannot be combined with a list")
	}
	if !p.any && len(p.origins) == 0 {
		return nil, fmt.Errorf("--cors-origins: no origin in %q", list)
	}
	return p, nil
}

func (p *corsPolicy) allows(origin string) bool {
	return origin != "" && (p.any || p.origins[origin])
}

// cors answers preflight requests itself (204 for an allowed origin, 403 without CORS headers
// otherwise: the browser then refuses the real request) and adds Access-Control-Allow-Origin to
// the responses of allowed origins. Other requests pass through unchanged; a nil policy is the
// handler itself (no CORS headers at all).
func cors(next http.Handler, p *corsPolicy) http.Handler {
	if p == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		h := w.Header()
		if !p.any {
			// The answer depends on Origin, so a shared cache must not hand it to another origin.
			h.Add("Vary", "Origin")
		}
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if preflight {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			if !p.allows(origin) {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			h.Set("Access-Control-Allow-Origin", allowOrigin(p, origin))
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if p.allows(origin) {
			h.Set("Access-Control-Allow-Origin", allowOrigin(p, origin))
		}
		next.ServeHTTP(w, r)
	})
}

func allowOrigin(p *corsPolicy, origin string) string {
	if p.any {
		return "*"
	}
	return origin
}
