package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Port is the TCP port of the control server on a node's management address.
const Port = 9464

// Client talks to one node's control server.
type Client struct {
	// Addr is host:port of the server.
	Addr  string
	Token string
}

// Do sends req, copies stdin to the server when req.Stdin (then half-closes)
// and stdout/stderr frames to their writers, and returns the result. An
// error means the exchange failed; a failed command is a Result.
func (c Client) Do(ctx context.Context, req Request, stdin io.Reader, stdout, stderr io.Writer) (Result, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := d.DialContext(dctx, "tcp", c.Addr)
	cancel()
	if err != nil {
		return Result{}, fmt.Errorf("guest %s: %w", c.Addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	req.Token = c.Token
	b, err := json.Marshal(req)
	if err != nil {
		return Result{}, err
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return Result{}, fmt.Errorf("guest %s: send %s: %w", c.Addr, req.Op, err)
	}
	if req.Stdin {
		go func() {
			if stdin != nil {
				io.Copy(conn, stdin)
			}
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}()
	}
	res, err := readFrames(conn, stdout, stderr)
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return Result{}, fmt.Errorf("guest %s: %s: %w", c.Addr, req.Op, err)
	}
	if res.Error != "" && req.Op != OpExec {
		return res, fmt.Errorf("guest %s: %s: %s", c.Addr, req.Op, res.Error)
	}
	return res, nil
}

// Ping checks that the server answers and accepts the token.
func (c Client) Ping(ctx context.Context) error {
	_, err := c.Do(ctx, Request{Op: OpPing}, nil, nil, nil)
	return err
}

// Exec runs args in the guest with environment env and returns its exit
// code; stdin is nil for none.
func (c Client) Exec(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	res, err := c.Do(ctx, Request{Op: OpExec, Args: args, Env: env, Stdin: stdin != nil}, stdin, stdout, stderr)
	if err != nil {
		return -1, err
	}
	if res.Error != "" {
		return res.ExitCode, fmt.Errorf("run %s in guest %s: %s", args[0], c.Addr, res.Error)
	}
	return res.ExitCode, nil
}

// Start starts a daemon detached, first killing any of the same key, and
// returns its guest PID.
func (c Client) Start(ctx context.Context, key string, args, env []string, log string) (int, error) {
	res, err := c.Do(ctx, Request{Op: OpStart, Key: key, Args: args, Env: env, Log: log}, nil, nil, nil)
	return res.PID, err
}

// Running reports whether a daemon of key runs, and its guest PID.
func (c Client) Running(ctx context.Context, key string) (bool, int, error) {
	res, err := c.Do(ctx, Request{Op: OpRunning, Key: key}, nil, nil, nil)
	return res.Running, res.PID, err
}

// Kill kills every daemon of key with SIGKILL and waits until they are gone.
func (c Client) Kill(ctx context.Context, key string) error {
	_, err := c.Do(ctx, Request{Op: OpKill, Key: key}, nil, nil, nil)
	return err
}
