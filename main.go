// Command wgkeeper keeps the peers of WireGuard interfaces in line with a
// SQLite database and runs the operator's connect/disconnect script at every
// lifecycle change of a peer configuration.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/wgkeeper/wgkeeper/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
