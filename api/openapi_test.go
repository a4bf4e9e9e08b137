package api

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/wgkeeper/wgkeeper/api/apitest"
	"github.com/wgkeeper/wgkeeper/config"
)

// TestOpenAPI: openapi.yaml is valid OpenAPI (kin-openapi loads and
// validates it), written in block style, names the default listen address
// as its server, documents exactly the routes served, and its errors
// exactly: ErrorCode is every code the server has, each error response
// lists only codes of its own status, and every code is in some response.
// That each answer matches it is checked by every test that talks to the
// API (see specClient).
func TestOpenAPI(t *testing.T) {
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := apitest.Load(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	doc := spec.Doc

	// Block style: a flow mapping or sequence ends an unquoted value at
	// its first comma ({description: a, b} makes "b" a key).
	flow := regexp.MustCompile(`^\s*(- |[^:#'"]+:\s+)[{\[]`)
	for i, line := range strings.Split(string(data), "\n") {
		v := strings.TrimSpace(line)
		if flow.MatchString(line) && !strings.HasSuffix(v, "{}") && !strings.HasSuffix(v, "[]") {
			t.Errorf("openapi.yaml:%d is in flow style; write it in block style: %s", i+1, v)
		}
	}

	if want := "http://" + config.DefaultAPIListen; len(doc.Servers) == 0 || doc.Servers[0].URL != want || doc.Servers[0].Description == "" {
		t.Errorf("servers: want first %s with a description, the default api.listen", want)
	}

	served := routePatterns()
	sort.Strings(served)
	if documented := spec.Operations(); !slices.Equal(documented, served) {
		t.Errorf("openapi.yaml and the routes differ:\ndocumented:\n  %s\nserved:\n  %s",
			strings.Join(documented, "\n  "), strings.Join(served, "\n  "))
	}

	var known, listed []string
	for c := range Codes {
		known = append(known, c)
	}
	for _, v := range doc.Components.Schemas["ErrorCode"].Value.Enum {
		listed = append(listed, fmt.Sprint(v))
	}
	sort.Strings(known)
	sort.Strings(listed)
	if !slices.Equal(listed, known) {
		t.Errorf("ErrorCode enum %v, codes served %v", listed, known)
	}

	// Each error response names its codes in error.code's enum; each code
	// must have the response's status.
	used := map[string]bool{}
	check := func(where string, status int, r *openapi3.Response) {
		for _, c := range errorCodes(t, where, r) {
			if Codes[c] != status {
				t.Errorf("%s: code %s has status %d, not %d", where, c, Codes[c], status)
			}
			used[c] = true
		}
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for code, ref := range op.Responses.Map() {
				status, err := strconv.Atoi(code)
				if err != nil {
					t.Errorf("%s %s: response %q is not a status", method, path, code)
					continue
				}
				if status >= 400 {
					check(fmt.Sprintf("%s %s %d", method, path, status), status, ref.Value)
				}
			}
		}
	}
	for name, status := range map[string]int{"NoEndpoint": 404, "MethodNotAllowed": 405} {
		check("components.responses."+name, status, doc.Components.Responses[name].Value)
	}
	for _, c := range known {
		if !used[c] {
			t.Errorf("no response of openapi.yaml carries the code %s", c)
		}
	}
}

// errorCodes returns the enum of error.code in a JSON error response.
func errorCodes(t *testing.T, where string, r *openapi3.Response) []string {
	t.Helper()
	mt := r.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		t.Errorf("%s: no application/json schema", where)
		return nil
	}
	e := mt.Schema.Value.Properties["error"]
	if e == nil || e.Value.Properties["code"] == nil || len(e.Value.Properties["code"].Value.Enum) == 0 {
		t.Errorf("%s: no enum of error.code", where)
		return nil
	}
	var out []string
	for _, v := range e.Value.Properties["code"].Value.Enum {
		out = append(out, fmt.Sprint(v))
	}
	return out
}
