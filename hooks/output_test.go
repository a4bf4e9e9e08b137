package hooks

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// longLine is 320 KB on one line of three-byte characters, so a cut at
// 1 KiB falls inside one.
func longLine() string { return strings.Repeat("€", 320_000/3) }

// A script that writes 320 KB on one line to stdout and stderr and fails:
// its log line stays small, and the failure message (an event's last error,
// the API's rejection) carries the line cut at 1 KiB, on a character
// boundary, marked as cut.
func TestLongOutputLineCut(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "line")
	if err := os.WriteFile(data, []byte("first line\n"+longLine()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := writeScript(t, dir, "hook.sh", "#!/bin/sh\ncat "+quote(data)+"\ncat "+quote(data)+" >&2\nexit 3\n")
	var buf syncBuffer
	r := newRunner(t, Config{Script: path, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	res := r.Run(context.Background(), disconnectVars())
	if res.OK() || res.ExitCode != 3 {
		t.Fatalf("result %+v", res)
	}

	msg := res.Failure().Error()
	const prefix = "hook script exited with status 3: "
	if !strings.HasPrefix(msg, prefix) || !utf8.ValidString(msg) || !strings.Contains(msg, "…[cut: ") {
		t.Fatalf("failure message %.200q…", msg)
	}
	line := strings.TrimPrefix(msg, prefix)
	line = line[:strings.Index(line, " …[cut: ")]
	if len(line) > MaxLineLen || len(line) < MaxLineLen-3 || strings.Trim(line, "€") != "" {
		t.Errorf("cut line is %d bytes (%q…), want the line's first %d bytes or up to 3 fewer", len(line), line[:20], MaxLineLen)
	}
	if len(msg) > MaxLineLen+100 {
		t.Errorf("failure message is %d bytes", len(msg))
	}

	logged := strings.TrimSpace(buf.String())
	if strings.Count(logged, "\n") != 0 {
		t.Fatalf("want one log line, got %d", strings.Count(logged, "\n")+1)
	}
	if len(logged) > 4*MaxLineLen {
		t.Errorf("log line is %d bytes, want at most %d", len(logged), 4*MaxLineLen)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(logged), &rec); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"stdout", "stderr"} {
		v, _ := rec[k].(string)
		if !strings.HasPrefix(v, "first line\n€") || !strings.Contains(v, " …[cut: ") || len(v) > MaxLineLen+40 {
			t.Errorf("%s logged as %d bytes: %.60q…", k, len(v), v)
		}
	}
	if rec["stderr_dropped"] == nil {
		t.Error("bytes beyond the capture not reported")
	}
	t.Logf("log line %d bytes; failure message %d bytes", len(logged), len(msg))
}

func TestCutText(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int
		want  string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"eleven char", 10, "eleven cha …[cut: 11 bytes]"},
		{"ab€", 4, "ab …[cut: 5 bytes]"},
		{"a\xffb", 10, "a\uFFFDb"},
		{"", 10, ""},
	} {
		if got := CutText([]byte(tc.in), tc.limit); got != tc.want {
			t.Errorf("CutText(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
		}
	}
	if got := LastLine([]byte("one\ntwo  \n\n  ")); got != "two" {
		t.Errorf("LastLine = %q", got)
	}
}

func FuzzCutText(f *testing.F) {
	f.Add([]byte("ab€cd"), 4)
	f.Add([]byte("\xff\xfe"), 1)
	f.Fuzz(func(t *testing.T, b []byte, limit int) {
		if limit < 0 || limit > 1<<16 {
			return
		}
		s := CutText(b, limit)
		if !utf8.ValidString(s) {
			t.Fatalf("invalid UTF-8 %q", s)
		}
		if body, _, cut := strings.Cut(s, " …[cut: "); cut && len(body) > limit || !cut && len(s) > limit {
			t.Fatalf("%q cut to %d: %q", b, limit, s)
		}
	})
}
