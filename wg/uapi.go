package wg

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
)

// SocketDir is where userspace WireGuard implementations serve their UAPI
// sockets, NAME.sock; wgctrl and wg(8) look only there.
const SocketDir = "/var/run/wireguard"

// UAPIServer serves a wireguard-go device on the standard UAPI socket
// SocketDir/NAME.sock, so wg(8) and wgctrl see it as interface NAME.
type UAPIServer struct {
	name string
	l    net.Listener
	dev  *device.Device
	log  *slog.Logger

	mu     sync.Mutex            // guards conns and closed
	conns  map[net.Conn]struct{} // open client connections, closed by Close
	closed bool
	wg     sync.WaitGroup // connection handlers
	done   chan struct{}  // closed when the accept loop ends

	closeOnce sync.Once
}

// ServeUAPI creates the UAPI socket for name (root is needed for SocketDir)
// and serves dev on it until Close. It fails if a live socket of that name
// exists. log may be nil.
func ServeUAPI(name string, dev *device.Device, log *slog.Logger) (*UAPIServer, error) {
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("serve uapi: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, fmt.Errorf("serve uapi %s: open socket in %s (needs root): %w", name, SocketDir, err)
	}
	l, err := ipc.UAPIListen(name, f)
	f.Close()
	if err != nil {
		os.Remove(socketPath(name))
		return nil, fmt.Errorf("serve uapi %s: %w", name, err)
	}
	s := &UAPIServer{
		name:  name,
		l:     l,
		dev:   dev,
		log:   log,
		conns: make(map[net.Conn]struct{}),
		done:  make(chan struct{}),
	}
	go s.acceptLoop()
	return s, nil
}

func socketPath(name string) string { return filepath.Join(SocketDir, name+".sock") }

// acceptLoop hands connections to the device. wireguard-go's listener
// reports exactly two errors in its life, one from its accept goroutine and
// one from its socket-file watcher; both arrive at the latest on Close.
// Draining both lets those goroutines end.
func (s *UAPIServer) acceptLoop() {
	defer close(s.done)
	for errs := 0; errs < 2; {
		c, err := s.l.Accept()
		if err != nil {
			errs++
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if !closed {
				s.log.Error("uapi socket stopped; wg(8) and wgctrl no longer see this interface", "iface", s.name, "err", err)
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.dev.IpcHandle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops serving, closes open connections, waits for their handlers and
// removes the socket file. The device itself is not closed. Close is
// idempotent and always returns nil after the first call.
func (s *UAPIServer) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		err = s.l.Close() // unlinks the socket file
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.log.Error("uapi accept loop did not stop", "iface", s.name)
		}
		s.wg.Wait()
		if err != nil {
			err = fmt.Errorf("close uapi %s: %w", s.name, err)
		}
	})
	return err
}

// deviceLogger sends wireguard-go's log lines to log: verbose lines at debug
// level, errors at warn level (they are mostly about single packets).
func deviceLogger(log *slog.Logger, name string) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if !log.Enabled(context.Background(), slog.LevelDebug) {
				return
			}
			log.Debug(fmt.Sprintf(format, args...), "iface", name)
		},
		Errorf: func(format string, args ...any) {
			log.Warn(fmt.Sprintf(format, args...), "iface", name)
		},
	}
}
