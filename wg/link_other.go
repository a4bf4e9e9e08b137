//go:build !linux

package wg

import (
	"context"
	"errors"
	"log/slog"
)

var errNotLinux = errors.New("wgkeeper creates interfaces on Linux only; use mode \"existing\"")

func upKernel(Spec, *slog.Logger) (*Link, error)    { return nil, errNotLinux }
func upUserspace(Spec, *slog.Logger) (*Link, error) { return nil, errNotLinux }

func (l *Link) removeLocked() error             { return nil }
func (l *Link) ensureLocked() ([]string, error) { return nil, errNotLinux }
func inspectLink(string) (LinkState, error)     { return LinkState{}, nil }

type userInst struct{}

// WatchLinks is not available off Linux: owned interfaces do not exist there.
func WatchLinks(context.Context, []string, func(error)) (<-chan string, error) {
	return nil, errNotLinux
}
