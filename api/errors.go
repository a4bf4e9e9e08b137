package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
)

// Error codes of the JSON error body {"error":{"code":...,"message":...}}.
// They are stable: portals switch on them. openapi.yaml lists every one.
const (
	CodeInvalidRequest       = "invalid_request"        // 400
	CodeUnauthorized         = "unauthorized"           // 401
	CodeRejectedByScript     = "rejected_by_script"     // 403
	CodeForbidden            = "forbidden"              // 403, a write with the read-only token
	CodeNotFound             = "not_found"              // 404
	CodeMethodNotAllowed     = "method_not_allowed"     // 405
	CodeConflict             = "conflict"               // 409
	CodeLimitReached         = "limit_reached"          // 409
	CodePoolExhausted        = "pool_exhausted"         // 409
	CodeInProgress           = "in_progress"            // 409
	CodeBodyTooLarge         = "body_too_large"         // 413
	CodeUnsupportedMediaType = "unsupported_media_type" // 415
	CodeInternal             = "internal"               // 500
	CodeDeviceUnavailable    = "device_unavailable"     // 503
	CodeBlocked              = "blocked"                // 503, /healthz only
	CodeUnavailable          = "unavailable"            // 503: the database (full, read-only, damaged, replaced)
	CodeBusy                 = "busy"                   // 503, with Retry-After
	CodeScriptUnsafe         = "script_unsafe"          // 503
	CodeWrongNode            = "wrong_node"             // 421: the profile is another node's
)

// Codes lists every error code with its HTTP status.
var Codes = map[string]int{
	CodeInvalidRequest:       http.StatusBadRequest,
	CodeUnauthorized:         http.StatusUnauthorized,
	CodeRejectedByScript:     http.StatusForbidden,
	CodeForbidden:            http.StatusForbidden,
	CodeNotFound:             http.StatusNotFound,
	CodeMethodNotAllowed:     http.StatusMethodNotAllowed,
	CodeConflict:             http.StatusConflict,
	CodeLimitReached:         http.StatusConflict,
	CodePoolExhausted:        http.StatusConflict,
	CodeInProgress:           http.StatusConflict,
	CodeBodyTooLarge:         http.StatusRequestEntityTooLarge,
	CodeUnsupportedMediaType: http.StatusUnsupportedMediaType,
	CodeInternal:             http.StatusInternalServerError,
	CodeDeviceUnavailable:    http.StatusServiceUnavailable,
	CodeBlocked:              http.StatusServiceUnavailable,
	CodeUnavailable:          http.StatusServiceUnavailable,
	CodeBusy:                 http.StatusServiceUnavailable,
	CodeScriptUnsafe:         http.StatusServiceUnavailable,
	CodeWrongNode:            http.StatusMisdirectedRequest,
}

// Error is an API error: what the client gets as the JSON body
// {"error":{...}} with the status of its Code.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the request field that was wrong (invalid_request).
	Field string `json:"field,omitempty"`
	// ExitStatus is the connect script's exit status (rejected_by_script;
	// absent when it timed out or could not be run).
	ExitStatus *int `json:"exit_status,omitempty"`
	// TimedOut is set when the connect script ran out of time.
	TimedOut bool `json:"timed_out,omitempty"`
	// Blocked lists the interfaces whose orphan removal is blocked
	// (blocked, from /healthz).
	Blocked []BlockedInterface `json:"blocked,omitempty"`

	// retryAfter, when positive, is sent as the Retry-After header
	// (whole seconds, rounded up).
	retryAfter time.Duration
}

// BlockedInterface is an interface whose orphan removal is blocked.
type BlockedInterface struct {
	Interface          string `json:"interface"`
	Orphans            int    `json:"orphans"`
	OrphanRemovalLimit int    `json:"orphan_removal_limit"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Status is the HTTP status of the error's code.
func (e *Error) Status() int {
	if s, ok := Codes[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

func apiErr(code, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

// badField is a 400 naming the field.
func badField(field, format string, a ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Field: field, Message: field + ": " + fmt.Sprintf(format, a...)}
}

type errorBody struct {
	Error *Error `json:"error"`
}

// writeError sends e as the JSON error body.
func writeError(w http.ResponseWriter, e *Error) {
	if e.Code == CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="wgkeeper"`)
	}
	if e.retryAfter > 0 {
		secs := int64((e.retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	writeJSON(w, e.Status(), errorBody{Error: e})
}

// writeJSON sends v with the status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Every response type marshals; reaching this is a bug.
		b = []byte(`{"error":{"code":"internal","message":"internal error: response could not be encoded"}}`)
		status = http.StatusInternalServerError
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// fromEngine maps an error of the engine or the store to an API error. The
// internal case returns nil: the caller logs the error and answers 500.
func fromEngine(err error) *Error {
	var ae *Error
	var inv *reconcile.InvalidError
	var rej *reconcile.RejectedError
	var busy *reconcile.BusyError
	var wrong *reconcile.WrongNodeError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &inv):
		return &Error{Code: CodeInvalidRequest, Field: inv.Field, Message: inv.Error()}
	case errors.As(err, &rej):
		// The message is the CLI's too.
		e := &Error{Code: CodeRejectedByScript, TimedOut: rej.TimedOut, Message: rej.Error()}
		if !rej.TimedOut && (rej.Err == nil || rej.ExitCode >= 0) {
			code := rej.ExitCode
			e.ExitStatus = &code
		}
		return e
	case errors.Is(err, store.ErrUnavailable):
		// Not a bug (500 internal): the environment broke the database.
		return unavailable(err)
	case errors.As(err, &wrong):
		return apiErr(CodeWrongNode, "%v; nothing was stored", wrong)
	case errors.As(err, &busy):
		return &Error{Code: CodeBusy, Message: busy.Error(), retryAfter: max(busy.RetryAfter, time.Second)}
	case errors.Is(err, reconcile.ErrScriptUnsafe):
		return apiErr(CodeScriptUnsafe, "%v; nothing was kept", err)
	case errors.Is(err, reconcile.ErrDeviceUnavailable):
		return apiErr(CodeDeviceUnavailable, "WireGuard device unavailable: %v", err)
	case errors.Is(err, reconcile.ErrInProgress):
		return apiErr(CodeInProgress, "%v; try again when it has finished", err)
	case errors.Is(err, reconcile.ErrRemoved):
		return apiErr(CodeConflict, "%v", err)
	case errors.Is(err, reconcile.ErrBusy):
		return apiErr(CodeInProgress, "another housekeeping run is in progress; try again later or ask with \"wait\": true")
	case errors.Is(err, store.ErrNotFound):
		return apiErr(CodeNotFound, "%v", err)
	case errors.Is(err, store.ErrLimitReached):
		return apiErr(CodeLimitReached, "%v", err)
	case errors.Is(err, store.ErrPoolExhausted):
		return apiErr(CodePoolExhausted, "%v", err)
	case errors.Is(err, store.ErrConflict):
		return apiErr(CodeConflict, "%v", err)
	}
	return nil
}

// unavailable is the 503 for a database the environment made unusable; the
// message names the cause (disk full, read-only database, the database
// file was deleted or replaced, …).
func unavailable(err error) *Error {
	var ue *store.UnavailableError
	if errors.As(err, &ue) {
		msg := ue.Error()
		if !ue.Fatal {
			msg += "; try again later"
		}
		return apiErr(CodeUnavailable, "%s", msg)
	}
	return apiErr(CodeUnavailable, "%v", err)
}

// asAPI returns the API error for err, or err itself when it has none.
func asAPI(err error) error {
	if e := fromEngine(err); e != nil {
		return e
	}
	return err
}
