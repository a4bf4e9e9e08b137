package wg

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ParsePrivateKey parses the contents of a key file as written by `wg genkey`:
// the standard base64 encoding of 32 bytes, surrounded by optional
// whitespace. The error never contains the file's contents.
func ParsePrivateKey(data []byte) (wgtypes.Key, error) {
	s := bytes.TrimSpace(data)
	if len(s) != base64.StdEncoding.EncodedLen(wgtypes.KeyLen) {
		return wgtypes.Key{}, fmt.Errorf("not a WireGuard private key: want 44 base64 characters as written by `wg genkey`, got %d bytes", len(s))
	}
	// Decode into a buffer of the full decoded length: 44 characters without
	// padding would decode to 33 bytes.
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Strict().Decode(buf, s)
	if err != nil || n != wgtypes.KeyLen {
		return wgtypes.Key{}, errors.New("not a WireGuard private key: invalid base64 (want the output of `wg genkey`)")
	}
	var k wgtypes.Key
	copy(k[:], buf[:n])
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, errors.New("not a WireGuard private key: all zero")
	}
	return k, nil
}

// LoadOrCreateKey returns the private key stored at path. If the file does
// not exist it generates a key and writes it there (mode 0600, parent
// directories 0700), atomically: two processes racing end up with the same
// key. It refuses a key file that is not a regular file or that group or
// others may read or write, and a file that does not hold a key; the errors
// name the file and what to do.
func LoadOrCreateKey(path string) (wgtypes.Key, error) {
	k, err := loadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := createKey(path); err != nil {
		return wgtypes.Key{}, fmt.Errorf("create key file %s: %w", path, err)
	}
	return loadKey(path)
}

// LoadKey returns the private key stored at path, with the checks of
// LoadOrCreateKey; a missing file is an error matching fs.ErrNotExist.
func LoadKey(path string) (wgtypes.Key, error) { return loadKey(path) }

func loadKey(path string) (wgtypes.Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return wgtypes.Key{}, fmt.Errorf("read key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return wgtypes.Key{}, fmt.Errorf("read key file %s: mode %04o lets group or others access the private key; run chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read key file %s: %w", path, err)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read key file %s: %w", path, err)
	}
	return k, nil
}

// createKey writes a new key to a temporary file next to path and links it
// into place, so no reader ever sees a partial file and an existing key is
// never replaced.
func createKey(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".wgkeeper-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(k.String() + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}
