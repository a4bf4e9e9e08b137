// Package api is wgkeeper's HTTP API for VPN portals: creating, listing and
// removing configs, status, events, housekeeping and the dry-run plan under
// /v1, plus /healthz and Prometheus /metrics. Every request but /healthz
// (and /metrics when api.metrics_public is set) carries the bearer token
// from api.token_file. Bodies and answers are JSON; errors are
// {"error":{"code":...,"message":...}} with the codes in Codes. The
// endpoints, fields and errors are described in openapi.yaml: a test
// validates it as OpenAPI and keeps it in line with the routes served, and
// every test that talks to the API checks each request and answer against
// it (package apitest).
//
// It owns the HTTP side only: listener (TCP, TLS or unix socket), token,
// request decoding and validation, error mapping, and metrics. It depends
// on the Engine interface alone (*reconcile.Engine satisfies it): every
// change goes through it, and so does every read of the store and of the
// devices (one device read per interface and request).
package api
