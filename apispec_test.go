package main

import (
	"net/http"
	"testing"

	"github.com/wgkeeper/wgkeeper/api/apitest"
)

// specClient returns a copy of c whose every request to the daemon's API
// and its answer are checked against api/openapi.yaml; a mismatch fails t.
func specClient(t testing.TB, c *http.Client) *http.Client {
	t.Helper()
	cc := *c
	cc.Transport = apitest.File(t, "api/openapi.yaml").Transport(t, c.Transport)
	return &cc
}
