package hooks

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckScript(t *testing.T) {
	good := "#!/bin/sh\nexit 0\n"
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the path to check
		want  string                                // "" = accepted; else the exact message with DIR for dir
	}{
		{"good", func(t *testing.T, dir string) string { return writeScript(t, dir, "hook.sh", good) }, ""},
		{"owner only", func(t *testing.T, dir string) string {
			p := writeScript(t, dir, "hook.sh", good)
			chmod(t, p, 0o700)
			return p
		}, ""},
		{"elf binary", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "true")
			copyFile(t, "/bin/true", p, 0o755)
			return p
		}, ""},
		{"symlink to good script", func(t *testing.T, dir string) string {
			p := writeScript(t, dir, "hook.sh", good)
			link := filepath.Join(dir, "link")
			if err := os.Symlink(p, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, ""},
		{"empty path", func(t *testing.T, dir string) string { return "" }, "hook script path is empty"},
		{"relative path", func(t *testing.T, dir string) string { return "hooks/hook.sh" },
			`hook script "hooks/hook.sh" is not an absolute path; give the full path, e.g. /usr/local/bin/vpn-hook`},
		{"missing", func(t *testing.T, dir string) string { return filepath.Join(dir, "nope.sh") },
			"hook script DIR/nope.sh does not exist"},
		{"directory", func(t *testing.T, dir string) string { return dir },
			"hook script DIR is not a regular file (it is a directory)"},
		{"world-writable", func(t *testing.T, dir string) string {
			p := writeScript(t, dir, "hook.sh", good)
			chmod(t, p, 0o757)
			return p
		}, "hook script DIR/hook.sh is writable by others (mode 0757); run chmod go-w DIR/hook.sh"},
		{"group-writable", func(t *testing.T, dir string) string {
			p := writeScript(t, dir, "hook.sh", good)
			chmod(t, p, 0o775)
			return p
		}, "hook script DIR/hook.sh is writable by group (mode 0775); run chmod g-w DIR/hook.sh"},
		{"writable by all", func(t *testing.T, dir string) string {
			p := writeScript(t, dir, "hook.sh", good)
			chmod(t, p, 0o777)
			return p
		}, "hook script DIR/hook.sh is writable by group and others (mode 0777); run chmod go-w DIR/hook.sh"},
		{"not executable", func(t *testing.T, dir string) string {
			p := writeScript(t, dir, "hook.sh", good)
			chmod(t, p, 0o644)
			return p
		}, "hook script DIR/hook.sh is not executable by its owner (mode 0644); run chmod u+x DIR/hook.sh"},
		{"wrong owner", func(t *testing.T, dir string) string {
			requireRoot(t)
			p := writeScript(t, dir, "hook.sh", good)
			if err := os.Chown(p, 12345, 12345); err != nil {
				t.Fatal(err)
			}
			return p
		}, "hook script DIR/hook.sh is owned by uid 12345; it must be owned by root or by the user wgkeeper runs as (uid 0); run chown root DIR/hook.sh"},
		{"directory writable by others", func(t *testing.T, dir string) string {
			p := writeScript(t, dir, "hook.sh", good)
			chmod(t, dir, 0o757)
			return p
		}, "hook script DIR/hook.sh is in directory DIR, which is writable by others (mode 0757); move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper"},
		{"directory writable by group", func(t *testing.T, dir string) string {
			p := writeScript(t, dir, "hook.sh", good)
			chmod(t, dir, 0o775)
			return p
		}, "hook script DIR/hook.sh is in directory DIR, which is writable by group (mode 0775); move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper"},
		// A sticky directory such as /tmp: nobody else may rename or remove
		// an entry owned by root or by wgkeeper's user.
		{"sticky directory", func(t *testing.T, dir string) string {
			p := writeScript(t, dir, "hook.sh", good)
			chmod(t, dir, 0o777|os.ModeSticky)
			return p
		}, ""},
		{"sticky directory, entry owned by another user", func(t *testing.T, dir string) string {
			requireRoot(t)
			sub := filepath.Join(dir, "sub")
			mkdir(t, sub, 0o755)
			p := writeScript(t, sub, "hook.sh", good)
			chmod(t, dir, 0o777|os.ModeSticky)
			if err := os.Chown(sub, 12345, 12345); err != nil {
				t.Fatal(err)
			}
			return p
		}, "hook script DIR/sub/hook.sh is below directory DIR, which is writable by group and others (mode 1777) and sticky, but its entry DIR/sub is owned by uid 12345, who may replace it; it must be owned by root or by the user wgkeeper runs as (uid 0)"},
		{"grandparent writable by others", func(t *testing.T, dir string) string {
			sub := filepath.Join(dir, "sub")
			mkdir(t, sub, 0o755)
			p := writeScript(t, sub, "hook.sh", good)
			chmod(t, dir, 0o777)
			return p
		}, "hook script DIR/sub/hook.sh is below directory DIR, which is writable by group and others (mode 0777), so they could replace the script; run chmod go-w DIR, or move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper"},
		{"directory owned by another user", func(t *testing.T, dir string) string {
			requireRoot(t)
			sub := filepath.Join(dir, "sub")
			mkdir(t, sub, 0o755)
			p := writeScript(t, sub, "hook.sh", good)
			if err := os.Chown(sub, 12345, 12345); err != nil {
				t.Fatal(err)
			}
			return p
		}, "hook script DIR/sub/hook.sh is in directory DIR/sub, which is owned by uid 12345 (mode 0755); every directory above the script must be owned by root or by the user wgkeeper runs as (uid 0); run chown root DIR/sub or move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper"},
		{"symlink in a directory writable by others", func(t *testing.T, dir string) string {
			safe := filepath.Join(dir, "safe")
			open := filepath.Join(dir, "open")
			mkdir(t, safe, 0o755)
			mkdir(t, open, 0o777)
			p := writeScript(t, safe, "hook.sh", good)
			link := filepath.Join(open, "hook")
			if err := os.Symlink(p, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "hook script DIR/open/hook (resolved to DIR/safe/hook.sh) is in directory DIR/open, which is writable by group and others (mode 0777); move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper"},
		{"symlink in a sticky directory", func(t *testing.T, dir string) string {
			safe := filepath.Join(dir, "safe")
			open := filepath.Join(dir, "open")
			mkdir(t, safe, 0o755)
			mkdir(t, open, 0o1777)
			p := writeScript(t, safe, "hook.sh", good)
			link := filepath.Join(open, "hook")
			if err := os.Symlink(p, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, ""},
		{"symlink to a script in a directory writable by others", func(t *testing.T, dir string) string {
			safe := filepath.Join(dir, "safe")
			open := filepath.Join(dir, "open")
			mkdir(t, safe, 0o755)
			mkdir(t, open, 0o777)
			p := writeScript(t, open, "hook.sh", good)
			link := filepath.Join(safe, "hook")
			if err := os.Symlink("../open/hook.sh", link); err != nil {
				t.Fatal(err)
			}
			_ = p
			return link
		}, "hook script DIR/safe/hook (resolved to DIR/open/hook.sh) is in directory DIR/open, which is writable by group and others (mode 0777); move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper"},
		{"symlink loop", func(t *testing.T, dir string) string {
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			if err := os.Symlink(b, a); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(a, b); err != nil {
				t.Fatal(err)
			}
			return a
		}, "hook script DIR/a: resolve DIR/a: too many levels of symbolic links"},
		{"no #! line", func(t *testing.T, dir string) string { return writeScript(t, dir, "hook.sh", "exit 0\n") },
			"hook script DIR/hook.sh has no #! line and is not a binary, so it cannot be executed directly; add a first line such as #!/bin/sh"},
		{"missing interpreter", func(t *testing.T, dir string) string {
			return writeScript(t, dir, "hook.sh", "#!/nonexistent/sh -e\nexit 0\n")
		}, "hook script DIR/hook.sh names interpreter /nonexistent/sh on its #! line, which does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := filepath.EvalSymlinks(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			path := tt.setup(t, dir)
			err = CheckScript(path)
			want := strings.ReplaceAll(tt.want, "DIR", dir)
			switch {
			case want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case want != "" && err == nil:
				t.Fatalf("accepted, want %q", want)
			case want != "" && err.Error() != want:
				t.Fatalf("got  %q\nwant %q", err, want)
			}
			// Ownership and write rules are trust violations, which a
			// run reports as such.
			var ue *UnsafeError
			trust := strings.Contains(want, "writable by") || strings.Contains(want, "owned by uid")
			if want != "" && errors.As(err, &ue) != trust {
				t.Fatalf("%v: UnsafeError %v, want %v", err, errors.As(err, &ue), trust)
			}
			// New refuses exactly what CheckScript refuses.
			if path != "" {
				_, nerr := New(Config{Script: path})
				if (nerr == nil) != (err == nil) {
					t.Fatalf("New: %v, CheckScript: %v", nerr, err)
				}
			}
		})
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown a file to another user")
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if mode&0o1000 != 0 {
		mode = mode&0o777 | os.ModeSticky
	}
	chmod(t, path, mode)
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	chmod(t, to, mode)
}
