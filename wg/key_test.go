package wg_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wgkeeper/wgkeeper/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "wg0.key")
	k, err := wg.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("created key file mode %04o, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if string(data) != k.String()+"\n" {
		t.Fatalf("file holds %q, want the key in wg genkey format", data)
	}
	again, err := wg.LoadOrCreateKey(path)
	if err != nil || again != k {
		t.Fatalf("second load = %v, %v; want the same key", again, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("%d files next to the key, want only the key (no temporary left)", len(entries))
	}
}

func TestLoadOrCreateKeyRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wg0.key")
	keys := make([]wgtypes.Key, 8)
	var wg8 sync.WaitGroup
	for i := range keys {
		wg8.Add(1)
		go func() {
			defer wg8.Done()
			k, err := wg.LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg8.Wait()
	for _, k := range keys[1:] {
		if k != keys[0] {
			t.Fatal("concurrent LoadOrCreateKey returned different keys")
		}
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	k, _ := wgtypes.GeneratePrivateKey()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := wg.LoadOrCreateKey(write("spaces.key", "  \n"+k.String()+" \r\n\n", 0o600))
	if err != nil || got != k {
		t.Fatalf("key with surrounding whitespace = %v, %v", got, err)
	}
	if got, err := wg.LoadOrCreateKey(write("ro.key", k.String(), 0o400)); err != nil || got != k {
		t.Fatalf("0400 key = %v, %v", got, err)
	}
	tests := []struct {
		path    string
		wantErr []string
	}{
		{write("world.key", k.String(), 0o644), []string{"world.key", "mode 0644", "chmod 600"}},
		{write("group.key", k.String(), 0o640), []string{"mode 0640"}},
		{write("short.key", "abc", 0o600), []string{"short.key", "not a WireGuard private key", "wg genkey"}},
		{write("bad64.key", strings.Repeat("!", 43)+"=", 0o600), []string{"invalid base64"}},
		{write("zero.key", base64.StdEncoding.EncodeToString(make([]byte, 32)), 0o600), []string{"all zero"}},
		{write("empty.key", "", 0o600), []string{"empty.key", "not a WireGuard private key"}},
		{dir, []string{"not a regular file"}},
	}
	for _, tt := range tests {
		_, err := wg.LoadOrCreateKey(tt.path)
		for _, want := range tt.wantErr {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("LoadOrCreateKey(%s) = %v, want an error containing %q", filepath.Base(tt.path), err, want)
			}
		}
		if err != nil && strings.Contains(err.Error(), k.String()) {
			t.Errorf("error reveals the key: %v", err)
		}
	}
	// A refused file is left alone.
	data, _ := os.ReadFile(filepath.Join(dir, "world.key"))
	if string(data) != k.String() {
		t.Fatal("a refused key file was modified")
	}
}

func FuzzParsePrivateKey(f *testing.F) {
	k, _ := wgtypes.GeneratePrivateKey()
	f.Add([]byte(k.String()))
	f.Add([]byte(k.String() + "\n"))
	f.Add([]byte(" " + k.String() + "\t\r\n"))
	f.Add([]byte(""))
	f.Add([]byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))
	f.Add([]byte(strings.Repeat("A", 43) + "B"))
	f.Add([]byte(base64.URLEncoding.EncodeToString(k[:])))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := wg.ParsePrivateKey(data)
		if err != nil {
			if got != (wgtypes.Key{}) {
				t.Fatal("error with a non-zero key")
			}
			return
		}
		if got == (wgtypes.Key{}) {
			t.Fatal("accepted an all-zero key")
		}
		// Whatever is accepted is exactly a key's canonical encoding.
		if strings.TrimSpace(string(data)) != got.String() {
			t.Fatalf("accepted %q, which is not the canonical encoding %q", data, got.String())
		}
	})
}
