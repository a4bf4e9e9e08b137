package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/config"
)

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "api.sock")
	l, err := Listen(config.API{Listen: "unix:" + path})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != SocketMode {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") })}
	go srv.Serve(l)
	cl := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	resp, err := cl.Get("http://wgkeeper/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// A live socket is never taken over.
	if _, err := Listen(config.API{Listen: "unix:" + path}); err == nil || !strings.Contains(err.Error(), "another process is serving") {
		t.Fatalf("second listener: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("leftover files: %v", entries)
	}
	srv.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left after close: %v", err)
	}

	// A stale socket (its listener gone without removing it) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l, err = Listen(config.API{Listen: "unix:" + path})
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	l.Close()

	// Anything that is not a socket is left alone.
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(config.API{Listen: "unix:" + path}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatal("the regular file was changed")
	}
	if _, err := Listen(config.API{Listen: "unix:relative.sock"}); err == nil {
		t.Fatal("relative socket path accepted")
	}
}

func TestListenTCP(t *testing.T) {
	l, err := Listen(config.API{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		_, err := Listen(config.API{Listen: addr})
		if err == nil || !strings.Contains(err.Error(), "not a loopback address") || !strings.Contains(err.Error(), "api.insecure") {
			t.Fatalf("%s without TLS: %v", addr, err)
		}
		l, err := Listen(config.API{Listen: addr, Insecure: true})
		if err != nil {
			t.Fatalf("%s insecure: %v", addr, err)
		}
		l.Close()
	}
}

func TestListenTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	l, err := Listen(config.API{Listen: "0.0.0.0:0", TLSCert: certFile, TLSKey: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls") })}
	go srv.Serve(l)
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port
	pem, _ := os.ReadFile(certFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := cl.Get("https://127.0.0.1:" + itoa(port) + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "tls" || resp.TLS == nil {
		t.Fatalf("%q %v", b, resp.TLS)
	}
	if _, err := Listen(config.API{Listen: "127.0.0.1:0", TLSCert: keyFile, TLSKey: certFile}); err == nil || !strings.Contains(err.Error(), "api.tls_cert") {
		t.Fatalf("swapped cert and key: %v", err)
	}
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

func writeCert(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	// Missing: created 0600 with 64 hex digits; the path is logged, the
	// token never.
	path := filepath.Join(dir, "api.token")
	tok, err := LoadToken(path, log)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(tok) {
		t.Fatalf("token %q", tok)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if !strings.Contains(logs.String(), path) || strings.Contains(logs.String(), tok) {
		t.Fatalf("log: %s", logs.String())
	}
	again, err := LoadToken(path, log)
	if err != nil || again != tok {
		t.Fatalf("second load: %q %v", again, err)
	}

	// Surrounding white space is not part of the token.
	if err := os.WriteFile(path, []byte("  tok-123\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := LoadToken(path, nil); err != nil || tok != "tok-123" {
		t.Fatalf("%q %v", tok, err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o602, 0o644} {
		os.Chmod(path, mode)
		if _, err := LoadToken(path, nil); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("mode %04o: %v", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := LoadToken(path, nil); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
	for _, content := range []string{"", " \n\t\n", "two words"} {
		os.Chmod(path, 0o600)
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := LoadToken(path, nil); err == nil {
			t.Fatalf("content %q accepted", content)
		}
	}
	if _, err := LoadToken(filepath.Join(dir, "no", "such", "dir", "api.token"), nil); err == nil {
		t.Fatal("token in a missing directory accepted")
	}
}
