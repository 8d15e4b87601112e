// Command underlay runs containers on the networks people already have.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/underlay/underlay/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Run(ctx, os.Args[1:], app.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	stop()
	os.Exit(code)
}
