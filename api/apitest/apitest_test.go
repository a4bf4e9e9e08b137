package apitest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// thingsSpec is a small description with what Check relies on: a bearer
// scheme, a path parameter with a pattern, a query enum, a required
// response header, and the components.responses for unrouted requests.
const thingsSpec = `openapi: 3.0.3
info:
  title: things
  version: "1"
servers:
  - url: http://127.0.0.1:8470
security:
  - bearer: []
paths:
  /things/{key}:
    parameters:
      - name: key
        in: path
        required: true
        schema:
          type: string
          pattern: '^[a-z/]{3}=$'
    get:
      parameters:
        - name: color
          in: query
          schema:
            type: string
            enum:
              - red
      responses:
        "200":
          description: the thing
          headers:
            Location:
              required: true
              schema:
                type: string
          content:
            application/json:
              schema:
                type: object
                additionalProperties: false
                required:
                  - name
                properties:
                  name:
                    type: string
                  since:
                    type: string
                    format: date-time
                    nullable: true
        "400":
          $ref: '#/components/responses/Error'
components:
  securitySchemes:
    bearer:
      type: http
      scheme: bearer
  responses:
    Error:
      description: an error
      content:
        application/json:
          schema:
            $ref: '#/components/schemas/Error'
    Unauthorized:
      $ref: '#/components/responses/Error'
    Forbidden:
      $ref: '#/components/responses/Error'
    NoEndpoint:
      $ref: '#/components/responses/Error'
    MethodNotAllowed:
      description: not allowed
      headers:
        Allow:
          required: true
          schema:
            type: string
      content:
        application/json:
          schema:
            $ref: '#/components/schemas/Error'
  schemas:
    Error:
      type: object
      additionalProperties: false
      required:
        - code
      properties:
        code:
          type: string
`

func TestCheck(t *testing.T) {
	spec, err := Load(context.Background(), []byte(thingsSpec))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(spec.Operations()); got != "[GET /things/{key}]" {
		t.Fatalf("operations %s", got)
	}
	const ok = ""
	for _, c := range []struct {
		name, method, target, auth string
		status                     int
		header                     string // Location or Allow
		body                       string
		want                       string // part of the error; ok for none
	}{
		{"matches", "GET", "/things/abc=", "Bearer x", 200, "/things/abc=", `{"name":"a","since":null}`, ok},
		{"escaped path parameter", "GET", "/things/a%2Fc=", "Bearer x", 200, "/x", `{"name":"a"}`, ok},
		{"a field it does not describe", "GET", "/things/abc=", "Bearer x", 200, "/x", `{"name":"a","extra":1}`, "extra"},
		{"a required field missing", "GET", "/things/abc=", "Bearer x", 200, "/x", `{}`, "name"},
		{"a null it does not allow", "GET", "/things/abc=", "Bearer x", 200, "/x", `{"name":null}`, "name"},
		{"not a date-time", "GET", "/things/abc=", "Bearer x", 200, "/x", `{"name":"a","since":"yesterday"}`, "since"},
		{"a required header missing", "GET", "/things/abc=", "Bearer x", 200, "", `{"name":"a"}`, "Location"},
		{"a status it does not list", "GET", "/things/abc=", "Bearer x", 418, "", `{"code":"teapot"}`, "status"},
		{"a bad request answered 400", "GET", "/things/abc=?color=blue", "Bearer x", 400, "", `{"code":"bad"}`, ok},
		{"a bad request answered 200", "GET", "/things/abc=?color=blue", "Bearer x", 200, "/x", `{"name":"a"}`, "rejects the request"},
		{"a bad path parameter answered 200", "GET", "/things/abcd", "Bearer x", 200, "/x", `{"name":"a"}`, "rejects the request"},
		{"no token answered 200", "GET", "/things/abc=", "", 200, "/x", `{"name":"a"}`, "rejects the request"},
		{"no endpoint, 404", "GET", "/nothing", "Bearer x", 404, "", `{"code":"not_found"}`, ok},
		{"no endpoint, 200", "GET", "/nothing", "Bearer x", 200, "", `{}`, "want 401, 403, 404 or 405"},
		{"no endpoint, 405", "GET", "/nothing", "Bearer x", 405, "GET", `{"code":"x"}`, "want 404"},
		{"another method, 405", "PUT", "/things/abc=", "Bearer x", 405, "GET", `{"code":"method_not_allowed"}`, ok},
		{"another method, 404", "PUT", "/things/abc=", "Bearer x", 404, "", `{"code":"not_found"}`, "want 405"},
		{"405 without Allow", "PUT", "/things/abc=", "Bearer x", 405, "", `{"code":"method_not_allowed"}`, "Allow"},
		{"an unrouted body it does not describe", "GET", "/nothing", "Bearer x", 404, "", `{"code":"not_found","x":1}`, "x"},
		{"HEAD is GET without a body", "HEAD", "/things/abc=", "Bearer x", 200, "/x", ``, ok},
		{"the admin page is not checked", "GET", "/ui/anything", "", 200, "", `<html>`, ok},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, "http://127.0.0.1:1234"+c.target, nil)
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			h := http.Header{"Content-Type": {"application/json"}}
			if c.header != "" {
				if c.status == 405 {
					h.Set("Allow", c.header)
				} else {
					h.Set("Location", c.header)
				}
			}
			err := spec.Check(context.Background(), Exchange{Request: req, Status: c.status, Header: h, Body: []byte(c.body)})
			switch {
			case c.want == ok && err != nil:
				t.Fatalf("error %v, want none", err)
			case c.want != ok && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one naming %q", err, c.want)
			}
		})
	}
}

// recorder is a testing.TB that keeps what Errorf reports.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}

// TestTransport: the wrapped client gets the answer as sent, and a
// mismatch is reported to the test.
func TestTransport(t *testing.T) {
	spec, err := Load(context.Background(), []byte(thingsSpec))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", r.URL.Path)
		if r.URL.Query().Get("color") == "blue" {
			io.WriteString(w, `{"name":"a","color":"blue"}`)
			return
		}
		io.WriteString(w, `{"name":"a"}`)
	}))
	defer srv.Close()
	rec := &recorder{TB: t}
	cl := &http.Client{Transport: spec.Transport(rec, srv.Client().Transport)}
	get := func(target string) string {
		req, _ := http.NewRequest("GET", srv.URL+target, strings.NewReader(""))
		req.Header.Set("Authorization", "Bearer x")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if b := get("/things/abc="); b != `{"name":"a"}` || len(rec.errs) != 0 {
		t.Fatalf("good answer: body %q, reported %q", b, rec.errs)
	}
	if b := get("/things/abc=?color=blue"); b != `{"name":"a","color":"blue"}` || len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "rejects the request") {
		t.Fatalf("bad request answered 200: body %q, reported %q", b, rec.errs)
	}
}
