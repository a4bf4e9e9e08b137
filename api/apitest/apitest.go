// Package apitest holds wgkeeper's HTTP API to its OpenAPI description,
// api/openapi.yaml, in tests. Load parses the description and validates it
// as OpenAPI; Spec.Transport wraps the http.RoundTripper of a test's client
// so that every request and answer through it is checked against the
// operation it reaches. Every test that talks to the API through such a
// client is then a test of the description too.
//
// It is for tests only: it links github.com/getkin/kin-openapi, which the
// wgkeeper binary does not.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Spec is a loaded and validated OpenAPI description with a router over
// its paths. It is safe for concurrent use.
type Spec struct {
	// Doc is the description as loaded. Callers must not change it.
	Doc    *openapi3.T
	router routers.Router
}

// Load parses data as an OpenAPI 3 document (YAML or JSON), validates it
// (doc.Validate) and builds a router over its paths. The router matches
// paths on any host: the document's servers name where a daemon listens by
// default, while tests listen on loopback ports of their own. Errors: the
// document does not parse, is not valid OpenAPI, or its paths cannot be
// routed.
func Load(ctx context.Context, data []byte) (*Spec, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI description: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("validate the OpenAPI description: %w", err)
	}
	anyHost := *doc
	anyHost.Servers = nil
	router, err := gorillamux.NewRouter(&anyHost)
	if err != nil {
		return nil, fmt.Errorf("route the OpenAPI description: %w", err)
	}
	return &Spec{Doc: doc, router: router}, nil
}

var (
	filesMu sync.Mutex           // guards files
	files   = map[string]*Spec{} // loaded by File, by path
)

// File loads the description at path once per test binary and returns it;
// a file that cannot be read or loaded fails tb.
func File(tb testing.TB, path string) *Spec {
	tb.Helper()
	filesMu.Lock()
	defer filesMu.Unlock()
	if s, ok := files[path]; ok {
		return s
	}
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := Load(context.Background(), data)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	files[path] = s
	return s
}

// Operations returns every operation of the description as "METHOD
// /path/{param}", sorted.
func (s *Spec) Operations() []string {
	var out []string
	for path, item := range s.Doc.Paths.Map() {
		for method := range item.Operations() {
			out = append(out, method+" "+path)
		}
	}
	sort.Strings(out)
	return out
}

// Exchange is one request and its answer, bodies read.
type Exchange struct {
	Request     *http.Request
	RequestBody []byte
	Status      int
	Header      http.Header
	Body        []byte
}

// unrouted are the answers a request the description has no operation
// for may get, by status: auth comes before routing, then the mux's 404
// and 405.
var unrouted = map[int]string{
	http.StatusUnauthorized:     "Unauthorized",
	http.StatusForbidden:        "Forbidden",
	http.StatusNotFound:         "NoEndpoint",
	http.StatusMethodNotAllowed: "MethodNotAllowed",
}

// Check checks one exchange against the description and returns what does
// not match (nil when all does):
//   - paths /ui and /ui/... are the admin page, not the API: never checked;
//   - a request routed to an operation must get a status that operation
//     lists, with the headers and body (content type and schema) of that
//     response; the request itself is validated too, and one that does not
//     match the operation (a deliberately bad request) must not be answered
//     2xx: it may only get an error;
//   - a request the description has no operation for (a path it lacks, a
//     method the path lacks) must get one of the responses Unauthorized,
//     Forbidden, NoEndpoint (404) or MethodNotAllowed (405) of
//     components.responses, as its status says.
//
// HEAD is checked as GET without a body (the server answers HEAD for every
// GET endpoint).
func (s *Spec) Check(ctx context.Context, x Exchange) error {
	path := x.Request.URL.Path
	if path == "/ui" || strings.HasPrefix(path, "/ui/") {
		return nil
	}
	req := x.Request.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(x.RequestBody))
	head := req.Method == http.MethodHead
	if head {
		req.Method = http.MethodGet
	}
	route, params, err := s.router.FindRoute(req)
	if errors.Is(err, routers.ErrPathNotFound) || errors.Is(err, routers.ErrMethodNotAllowed) {
		return s.checkUnrouted(x, err)
	}
	if err != nil {
		return fmt.Errorf("route %s %s: %w", x.Request.Method, path, err)
	}
	// The router matches the escaped path (a key's "/" comes as %2F);
	// parameters are described by their values.
	for k, v := range params {
		if u, err := url.PathUnescape(v); err == nil {
			params[k] = u
		}
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:                bearerPresent,
		IncludeResponseStatus:             true,
		SkipSettingDefaults:               true,
		RejectWhenRequestBodyNotSpecified: true,
		MultiError:                        true,
		// The message names the field; the body is quoted beside it.
		SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.DisableSchemaErrorDetails()},
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	if reqErr != nil && x.Status/100 == 2 {
		return fmt.Errorf("%s %s was answered %d, but the description rejects the request: %v",
			x.Request.Method, x.Request.URL.RequestURI(), x.Status, reqErr)
	}
	if head {
		if route.Operation.Responses.Status(x.Status) == nil {
			return fmt.Errorf("HEAD %s: status %d is not documented for GET", x.Request.URL.RequestURI(), x.Status)
		}
		return nil
	}
	err = openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 x.Status,
		Header:                 x.Header,
		Body:                   io.NopCloser(bytes.NewReader(x.Body)),
		Options:                opts,
	})
	if err != nil {
		return fmt.Errorf("%s %s answered %d %s: the answer does not match the description: %v",
			x.Request.Method, x.Request.URL.RequestURI(), x.Status, excerpt(x.Body), err)
	}
	return nil
}

// checkUnrouted checks the answer to a request no operation matched.
func (s *Spec) checkUnrouted(x Exchange, routeErr error) error {
	name, ok := unrouted[x.Status]
	switch {
	case !ok:
		return fmt.Errorf("%s %s (%v) was answered %d %s; want 401, 403, 404 or 405",
			x.Request.Method, x.Request.URL.RequestURI(), routeErr, x.Status, excerpt(x.Body))
	case x.Status == http.StatusNotFound && errors.Is(routeErr, routers.ErrMethodNotAllowed):
		return fmt.Errorf("%s %s: the path is documented for other methods, want 405, got 404 %s",
			x.Request.Method, x.Request.URL.RequestURI(), excerpt(x.Body))
	case x.Status == http.StatusMethodNotAllowed && errors.Is(routeErr, routers.ErrPathNotFound):
		return fmt.Errorf("%s %s: the path is not documented, want 404, got 405 %s",
			x.Request.Method, x.Request.URL.RequestURI(), excerpt(x.Body))
	}
	ref := s.Doc.Components.Responses[name]
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("the description has no components.responses.%s", name)
	}
	return checkResponse(ref.Value, name, x)
}

// checkResponse checks headers and a JSON body against a response object.
func checkResponse(r *openapi3.Response, name string, x Exchange) error {
	for h, ref := range r.Headers {
		if ref.Value != nil && ref.Value.Required && x.Header.Get(h) == "" {
			return fmt.Errorf("%s %s answered %d without the header %s that %s requires",
				x.Request.Method, x.Request.URL.RequestURI(), x.Status, h, name)
		}
	}
	mt := r.Content.Get(x.Header.Get("Content-Type"))
	if mt == nil || mt.Schema == nil || mt.Schema.Value == nil {
		return fmt.Errorf("%s %s answered %d with Content-Type %q, which %s does not describe",
			x.Request.Method, x.Request.URL.RequestURI(), x.Status, x.Header.Get("Content-Type"), name)
	}
	var v any
	if err := json.Unmarshal(x.Body, &v); err != nil {
		return fmt.Errorf("%s %s answered %d with a body that is not JSON: %v", x.Request.Method, x.Request.URL.RequestURI(), x.Status, err)
	}
	if err := mt.Schema.Value.VisitJSON(v, openapi3.MultiErrors(), openapi3.DisableSchemaErrorDetails()); err != nil {
		return fmt.Errorf("%s %s answered %d %s: the body does not match %s: %v",
			x.Request.Method, x.Request.URL.RequestURI(), x.Status, excerpt(x.Body), name, err)
	}
	return nil
}

// bearerPresent passes a security requirement of an http bearer scheme
// when the request carries "Authorization: Bearer TOKEN". Whether the token
// is right is the server's to say (401).
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	sc := in.SecurityScheme
	if sc == nil || sc.Type != "http" || !strings.EqualFold(sc.Scheme, "bearer") {
		return fmt.Errorf("security scheme %q is not http bearer", in.SecuritySchemeName)
	}
	auth := in.RequestValidationInput.Request.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return errors.New("no bearer token")
	}
	return nil
}

// excerpt is the start of a body for a message.
func excerpt(b []byte) string {
	const max = 600
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// Transport returns a RoundTripper that sends each request through base
// (nil: http.DefaultTransport), checks the exchange with Check and reports
// a mismatch with tb.Errorf (so it may run on any goroutine). The caller
// gets the answer as the server sent it. A request body is read whole
// before it is sent, an answer's body before it is returned.
func (s *Spec) Transport(tb testing.TB, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{spec: s, tb: tb, base: base}
}

type transport struct {
	spec *Spec
	tb   testing.TB
	base http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read the request body: %w", err)
		}
		body = b
	}
	out := req.Clone(req.Context())
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	resp, err := t.base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read the answer to %s %s: %w", req.Method, req.URL, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	x := Exchange{Request: req, RequestBody: body, Status: resp.StatusCode, Header: resp.Header, Body: data}
	if err := t.spec.Check(context.WithoutCancel(req.Context()), x); err != nil {
		t.tb.Errorf("openapi.yaml: %v", err)
	}
	return resp, nil
}
