package hooks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

const examples = "../examples/hooks"

var exampleScripts = []string{"log-event.sh", "remote-notify.sh", "nft-firewall.sh"}

// installExample copies an example script into a fresh directory with mode
// 0755, as an operator installs it, independent of the checkout's umask.
func installExample(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bin")
	mkdir(t, dir, 0o755)
	dst := filepath.Join(dir, name)
	copyFile(t, filepath.Join(examples, name), dst, 0o755)
	if err := CheckScript(dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestExampleScriptsSyntax(t *testing.T) {
	for _, name := range exampleScripts {
		path := filepath.Join(examples, name)
		if out, err := exec.Command("/bin/sh", "-n", path).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", name, err, out)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "#!/bin/sh\n") {
			t.Errorf("%s does not start with #!/bin/sh", name)
		}
	}
	cb, err := exec.LookPath("checkbashisms")
	if err != nil {
		t.Log("checkbashisms not installed (Debian package devscripts); skipping the bashism check")
		return
	}
	for _, name := range exampleScripts {
		if out, err := exec.Command(cb, "--posix", "--extra", filepath.Join(examples, name)).CombinedOutput(); err != nil {
			t.Errorf("checkbashisms %s: %v\n%s", name, err, out)
		}
	}
}

func TestExampleLogEvent(t *testing.T) {
	script := installExample(t, "log-event.sh")
	logFile := filepath.Join(t.TempDir(), "events.log")
	t.Setenv("WGKEEPER_EVENT_LOG", logFile)
	r := newRunner(t, Config{Script: script, PassEnv: []string{"WGKEEPER_EVENT_LOG"}})

	c := connectVars()
	c.UserID = `eve "the" \admin` + "\nsecond line"
	for _, v := range []Vars{c, disconnectVars()} {
		if res := r.Run(context.Background(), v); !res.OK() {
			t.Fatal(res.Failure())
		}
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ `)
	want := []string{
		`VPN_EVENT="C" VPN_EVENT_ID="41" VPN_REASON="created" VPN_USER_ID="eve \"the\" \\admin second line" VPN_PROFILE_ID="employees" VPN_PROTO="wireguard" VPN_CONNECTION_ID="` + testKey + `" VPN_IP_FOUR="10.42.0.2" VPN_IP_SIX="fd42::2" VPN_ORIGINATING_IP="192.0.2.10" VPN_INTERFACE="wg0" VPN_EXPIRES_AT="2027-02-26T15:04:05Z"`,
		`VPN_EVENT="D" VPN_EVENT_ID="42" VPN_REASON="expired" VPN_USER_ID="bob" VPN_PROFILE_ID="guests" VPN_PROTO="wireguard" VPN_CONNECTION_ID="` + testKey + `" VPN_IP_FOUR="10.42.0.3" VPN_IP_SIX="" VPN_BYTES_IN="123456789" VPN_BYTES_OUT="42" VPN_INTERFACE="wg1" VPN_EXPIRES_AT=""`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), b)
	}
	for i := range want {
		if !stamp.MatchString(lines[i]) || stamp.ReplaceAllString(lines[i], "") != want[i] {
			t.Errorf("line %d:\n got %s\nwant <time> %s", i, lines[i], want[i])
		}
	}

	// Without configuration it logs next to itself.
	os.Unsetenv("WGKEEPER_EVENT_LOG")
	if res := r.Run(context.Background(), connectVars()); !res.OK() {
		t.Fatal(res.Failure())
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(script), "events.log")); err != nil || !strings.Contains(string(b), `VPN_EVENT_ID="41"`) {
		t.Fatalf("default log: %q, %v", b, err)
	}
}

func TestExampleRemoteNotify(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	type request struct {
		auth string
		form url.Values
	}
	got := make(chan request, 4)
	var status atomic.Int32
	status.Store(http.StatusNoContent)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		got <- request{r.Header.Get("Authorization"), r.PostForm}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()

	script := installExample(t, "remote-notify.sh")
	t.Setenv("WGKEEPER_NOTIFY_URL", srv.URL+"/vpn-event")
	t.Setenv("WGKEEPER_NOTIFY_TOKEN", "s3cret-token")
	r := newRunner(t, Config{Script: script, PassEnv: []string{"WGKEEPER_NOTIFY_URL", "WGKEEPER_NOTIFY_TOKEN"}})

	v := disconnectVars()
	v.UserID = "a&b=c d+e%f\n$(id)"
	if res := r.Run(context.Background(), v); !res.OK() {
		t.Fatal(res.Failure())
	}
	req := <-got
	if req.auth != "Bearer s3cret-token" {
		t.Errorf("Authorization %q", req.auth)
	}
	env, _ := v.Env()
	want := url.Values{}
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		want.Set(name, value)
	}
	if req.form.Encode() != want.Encode() {
		t.Errorf("form:\n got %s\nwant %s", req.form.Encode(), want.Encode())
	}

	// An HTTP error fails the script.
	status.Store(http.StatusInternalServerError)
	res := r.Run(context.Background(), connectVars())
	<-got
	if res.OK() || res.ExitCode != 22 || !strings.Contains(res.Failure().Error(), "500") {
		t.Fatalf("got %+v (%v), want curl's exit 22 naming the HTTP 500", res, res.Failure())
	}

	// No URL configured: a clear message.
	os.Unsetenv("WGKEEPER_NOTIFY_URL")
	res = r.Run(context.Background(), connectVars())
	if res.ExitCode != 2 || !strings.Contains(string(res.Stderr), "WGKEEPER_NOTIFY_URL is not set") {
		t.Fatalf("got %+v, want exit 2 naming WGKEEPER_NOTIFY_URL", res)
	}
}

// TestExampleNftFirewall runs the firewall example through the Runner in a
// private network namespace, so the host's ruleset is never touched: the
// test binary re-runs itself in a new namespace (scripts are started from
// the runner's own thread, so only a whole process can be moved).
func TestExampleNftFirewall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace and nftables")
	}
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft not installed")
	}
	if os.Getenv(envNetnsChild) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExampleNftFirewall$", "-test.count=1")
		cmd.Env = append(os.Environ(), envNetnsChild+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("in a new network namespace: %v\n%s", err, out)
		}
		return
	}
	// Here, in the child: the whole process is in a fresh namespace.
	script := installExample(t, "nft-firewall.sh")
	r := newRunner(t, Config{Script: script})
	run := func(args ...string) string {
		out, err := exec.Command(nft, args...).CombinedOutput()
		if err != nil {
			t.Errorf("nft %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("add", "table", "inet", "wgkeeper")
	run("add", "set", "inet", "wgkeeper", "allowed4", "{ type ipv4_addr; }")
	run("add", "set", "inet", "wgkeeper", "allowed6", "{ type ipv6_addr; }")

	other := connectVars()
	other.IPFour, other.IPSix = disconnectVars().IPFour, disconnectVars().IPSix // v4 only
	steps := []Vars{connectVars(), connectVars(), other}
	d := connectVars()
	d.Event, d.BytesIn, d.BytesOut = EventDisconnect, 1, 2
	steps = append(steps, d, d) // the second delete is a repeated delivery
	for i, v := range steps {
		if res := r.Run(context.Background(), v); !res.OK() {
			t.Errorf("step %d: %v", i, res.Failure())
		}
	}
	set4 := run("list", "set", "inet", "wgkeeper", "allowed4")
	set6 := run("list", "set", "inet", "wgkeeper", "allowed6")
	if !strings.Contains(set4, "elements = { 10.42.0.3 }") || strings.Contains(set6, "elements") {
		t.Errorf("after connect, connect, connect other, disconnect twice:\n%s\n%s", set4, set6)
	}
}

// envNetnsChild marks the test binary re-run in a new network namespace.
const envNetnsChild = "WGKEEPER_TEST_NETNS_CHILD"
