package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const hooksTestConfig = `
database = "wgkeeper.db"
[hooks]
script = %q
timeout = "5s"
[api]
listen = ""
[[interface]]
name = "wgk-hooktest"
[[profile]]
id = "staff"
interface = "wgk-hooktest"
ipv4_range = "10.99.0.0/24"
ipv6_range = "fd00:99::/120"
expiry = "30d"
[[profile]]
id = "guests"
interface = "wgk-hooktest"
ipv4_range = "10.98.0.0/30"
`

// hooksTestEnv writes script (mode 0755) and a config naming it, and
// returns the config path and the directory.
func hooksTestEnv(t *testing.T, script string) (cfg, dir string) {
	t.Helper()
	dir = t.TempDir()
	path := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "wgkeeper.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(hooksTestConfig, path)), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

func readEnvFile(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// The script runs through the real runner and records the environment it
// was given: a complete, realistic event, marked VPN_TEST=1.
func TestHooksTestEnvironment(t *testing.T) {
	cfg, dir := hooksTestEnv(t, "#!/bin/sh\n/bin/cat /proc/$$/environ > \"$(dirname \"$(readlink -f \"$0\")\")/env.$VPN_EVENT\"\necho \"got $VPN_EVENT for $VPN_USER_ID\"\n")

	code, out, errOut := runCLI(t, "-config", cfg, "hooks", "test", "-user", "alice")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	env := readEnvFile(t, filepath.Join(dir, "env.C"))
	for _, want := range []string{"VPN_EVENT=C", "VPN_USER_ID=alice", "VPN_PROFILE_ID=staff", "VPN_PROTO=wireguard",
		"VPN_IP_FOUR=10.99.0.254", "VPN_IP_SIX=fd00:99::fe", "VPN_ORIGINATING_IP=192.0.2.10", "VPN_REASON=created",
		"VPN_INTERFACE=wgk-hooktest", "VPN_EVENT_ID=0", "VPN_TEST=1"} {
		if !slices.Contains(env, want) {
			t.Errorf("environment lacks %s: %q", want, env)
		}
	}
	var key, expires string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "VPN_CONNECTION_ID="); ok {
			key = v
		}
		if v, ok := strings.CutPrefix(kv, "VPN_EXPIRES_AT="); ok {
			expires = v
		}
		if strings.HasPrefix(kv, "VPN_BYTES_") {
			t.Errorf("a C event carries %s", kv)
		}
	}
	if len(key) != 44 || !strings.HasSuffix(key, "=") {
		t.Errorf("VPN_CONNECTION_ID %q is not a base64 WireGuard key", key)
	}
	if expires == "" {
		t.Error("VPN_EXPIRES_AT empty for a profile with expiry 30d")
	}
	for _, want := range []string{"VPN_TEST=1", "exit status 0 in ", "stdout:\n  | got C for alice\n", "stderr: (empty)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "wgkeeper.db")); err == nil {
		t.Error("hooks test created the database; it must touch neither store nor device")
	}

	code, out, errOut = runCLI(t, "-config", cfg, "hooks", "test", "-event", "D", "-profile", "guests")
	if code != 0 {
		t.Fatalf("-event D: exit %d\n%s%s", code, out, errOut)
	}
	env = readEnvFile(t, filepath.Join(dir, "env.D"))
	for _, want := range []string{"VPN_EVENT=D", "VPN_USER_ID=test-user", "VPN_PROFILE_ID=guests", "VPN_IP_FOUR=10.98.0.2",
		"VPN_IP_SIX=", "VPN_REASON=deleted", "VPN_BYTES_IN=1234567", "VPN_BYTES_OUT=7654321", "VPN_TEST=1"} {
		if !slices.Contains(env, want) {
			t.Errorf("D environment lacks %s: %q", want, env)
		}
	}
}

// eduVPN's example tests with bash's ==; under dash every test errs on
// stderr, the else branch runs and the script still exits 0. hooks test
// shows that stderr and warns.
func TestHooksTestDashDoubleEquals(t *testing.T) {
	if _, err := os.Stat("/bin/dash"); err != nil {
		t.Skip("needs /bin/dash (Debian's /bin/sh)")
	}
	cfg, _ := hooksTestEnv(t, "#!/bin/dash\nif [ \"$VPN_EVENT\" == \"C\" ]; then echo posting connect; else echo posting disconnect; fi\n")
	code, out, errOut := runCLI(t, "-config", cfg, "hooks", "test", "-event", "C")
	if code != 0 {
		t.Fatalf("exit %d, want the script's 0\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"exit status 0", "  | posting disconnect", "stderr:\n  | ", "unexpected operator", "warning: the script exited 0 but wrote to stderr"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestHooksTestExitStatus(t *testing.T) {
	for _, tt := range []struct {
		name, script string
		code         int
		want         string
	}{
		{"status 7", "#!/bin/sh\necho refusing >&2\nexit 7\n", 7, "exit status 7 in "},
		{"status 1", "#!/bin/sh\nexit 1\n", 1, "exit status 1 in "},
		{"signal", "#!/bin/sh\nkill -TERM $$\n", 128 + 15, "killed by signal 15"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := hooksTestEnv(t, tt.script)
			code, out, _ := runCLI(t, "-config", cfg, "hooks", "test")
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want %d; output lacks %q?\n%s", code, tt.code, tt.want, out)
			}
		})
	}

	// A script that cannot run: exit 1 with the reason.
	cfg, dir := hooksTestEnv(t, "#!/bin/sh\nexit 0\n")
	if err := os.Chmod(filepath.Join(dir, "hook.sh"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "-config", cfg, "hooks", "test")
	if code != 1 || !strings.Contains(errOut, "hooks.script") {
		t.Errorf("non-executable script: exit %d, want 1 naming hooks.script\n%s%s", code, out, errOut)
	}
	// An interpreter that does not exist: exit 1 naming it.
	cfg, _ = hooksTestEnv(t, "#!/nonexistent/interpreter\n")
	code, out, errOut = runCLI(t, "-config", cfg, "hooks", "test")
	if code != 1 || !strings.Contains(errOut, "/nonexistent/interpreter") {
		t.Errorf("missing interpreter: exit %d, want 1 naming it\n%s%s", code, out, errOut)
	}

	for _, args := range [][]string{{"-event", "X"}, {"-profile", "nope"}, {"-user", ""}, {"extra"}} {
		code, _, errOut := runCLI(t, append([]string{"-config", cfg, "hooks", "test"}, args...)...)
		if code != 2 {
			t.Errorf("hooks test %q: exit %d, want 2 (usage)\n%s", args, code, errOut)
		}
	}
	if code, _, _ := runCLI(t, "-config", cfg, "hooks", "frobnicate"); code != 2 {
		t.Errorf("hooks frobnicate: exit %d, want 2", code)
	}
}
